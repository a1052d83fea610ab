"""Output manifests: the compared artifacts of a build and the output digest.

A manifest is the canonical JSON object
``{"artifacts": [{"path": ..., "sha256": ..., "size": ...}, ...], "schema": MANIFEST_SCHEMA}``
with artifacts sorted by path (UTF-8 bytes); the output digest is the hex SHA-256 of those
bytes. Paths are file names in cargo's profile directory (``target/<triple>/<profile>/``),
where cargo places only the crate's own final artifacts. ``artifact_kind`` decides from a name
and its executable bit which of them are compared. ``collect_manifest`` is the one I/O edge.
"""

from __future__ import annotations

import hashlib
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from builder.fstree import file_sha256
from builder.recipe import ARTIFACT_KINDS
from logserver.core import canonical_json
from logserver.core.errors import FormatError

MANIFEST_SCHEMA = "synchronicity/manifest/v1"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PATH = re.compile(r"[A-Za-z0-9_.+-]{1,255}")


@dataclass(frozen=True, order=True)
class Artifact:
    """One compared output file."""

    path: str
    size: int
    sha256: str

    def to_value(self) -> dict[str, str | int]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


def artifact_kind(name: str, executable: bool) -> str | None:
    """The kind of a top-level profile-directory file, or None when it is not compared."""
    if name.startswith(".") or name.endswith((".d", ".rmeta", ".pdb", ".dwp")):
        return None
    if name.startswith("lib") and name.endswith(".rlib"):
        return "rlib"
    if name.startswith("lib") and name.endswith(".a"):
        return "staticlib"
    if name.startswith("lib") and name.endswith(".so"):
        return "cdylib"
    if executable and "." not in name:
        return "bin"
    return None


@dataclass(frozen=True)
class Manifest:
    """The sorted compared artifacts of one build."""

    artifacts: tuple[Artifact, ...]

    def __post_init__(self) -> None:
        paths = [artifact.path.encode() for artifact in self.artifacts]
        if paths != sorted(set(paths)):
            raise FormatError("manifest", "artifacts must be sorted by path and unique")
        for artifact in self.artifacts:
            if _PATH.fullmatch(artifact.path) is None or artifact.path in (".", ".."):
                raise FormatError("manifest", f"artifact path {artifact.path!r} is not valid")
            if _SHA256.fullmatch(artifact.sha256) is None:
                raise FormatError("manifest", f"sha256 of {artifact.path} is not valid")
            if not isinstance(artifact.size, int) or isinstance(artifact.size, bool):
                raise FormatError("manifest", f"size of {artifact.path} is not an integer")
            if artifact.size < 0:
                raise FormatError("manifest", f"size of {artifact.path} is negative")

    @classmethod
    def of(cls, artifacts: list[Artifact]) -> Manifest:
        return cls(tuple(sorted(artifacts, key=lambda artifact: artifact.path.encode())))

    def to_json(self) -> bytes:
        value = {
            "artifacts": [artifact.to_value() for artifact in self.artifacts],
            "schema": MANIFEST_SCHEMA,
        }
        return canonical_json.encode(value, "manifest")

    @property
    def output_digest(self) -> str:
        return hashlib.sha256(self.to_json()).hexdigest()

    def find(self, sha256: str) -> Artifact | None:
        """The artifact with the given content hash, if any (for verifying a file)."""
        for artifact in self.artifacts:
            if artifact.sha256 == sha256:
                return artifact
        return None


def manifest_from_json(data: bytes) -> Manifest:
    """Parse canonical manifest bytes strictly."""
    value = canonical_json.decode(data, "manifest")
    if not isinstance(value, dict) or set(value) != {"artifacts", "schema"}:
        raise FormatError("manifest", "must have exactly the members artifacts and schema")
    if value["schema"] != MANIFEST_SCHEMA:
        raise FormatError("manifest", f"schema {value['schema']!r} is not {MANIFEST_SCHEMA}")
    if not isinstance(value["artifacts"], list):
        raise FormatError("manifest", "artifacts must be an array")
    artifacts = []
    for item in value["artifacts"]:
        if not isinstance(item, dict) or set(item) != {"path", "sha256", "size"}:
            raise FormatError("manifest", "an artifact must have exactly path, sha256, size")
        if not isinstance(item["path"], str) or not isinstance(item["sha256"], str):
            raise FormatError("manifest", "artifact path and sha256 must be strings")
        artifacts.append(Artifact(path=item["path"], size=item["size"], sha256=item["sha256"]))
    return Manifest(tuple(artifacts))


def collect_manifest(artifacts_dir: Path, kinds: tuple[str, ...] = ARTIFACT_KINDS) -> Manifest:
    """Hash the compared files directly inside ``artifacts_dir`` (symlinks are ignored)."""
    found = []
    for path in sorted(artifacts_dir.iterdir()):
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode):
            continue
        kind = artifact_kind(path.name, bool(info.st_mode & stat.S_IXUSR))
        if kind is None or kind not in kinds:
            continue
        found.append(Artifact(path=path.name, size=info.st_size, sha256=file_sha256(path)))
    return Manifest.of(found)
