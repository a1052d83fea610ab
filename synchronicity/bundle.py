"""Bundles: a crate's reproduced artifacts and their verdict proof in one tar file.

``synchronicity fetch --bundle`` writes one; ``synchronicity verify --artifact FILE.tar`` checks
one offline (spec/proof-file.md). A bundle is a plain POSIX tar (pax format) of exactly

    NAME-VERSION/                          a directory
    NAME-VERSION/NAME-VERSION.tlog-proof   the verdict proof file
    NAME-VERSION/<artifact>                each artifact, named as in the output manifest

written deterministically: members sorted by name, mtime 0, owner and group 0 with no names,
mode 0755 for the directory and the binaries, 0644 for the rest. So two fetches of one verdict
give the same bytes, whatever the machine.

Reading is bounded and never touches the disk: members are read from a stream and hashed, not
extracted. Refused: links, devices and any member other than the above; names that are
absolute, have ``.`` or ``..`` components, or leave the one top directory; repeated names; more
than ``MAX_MEMBERS`` members, a file over ``MAX_FILE_BYTES``, a total over ``MAX_TOTAL_BYTES``.
Standard library and ``logserver.core``/``logserver.protocol`` only: ``verify`` runs on the base
install (PyNaCl).
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from logserver.core.errors import FormatError, VerificationError
from logserver.core.policy import Policy
from logserver.core.proof import MAX_PROOF_FILE_BYTES
from logserver.fsutil import atomic_write
from logserver.protocol.verdict_proof import Reproduced, verify_verdict_proof

PROOF_SUFFIX = ".tlog-proof"
MAX_MEMBERS = 1024
MAX_FILE_BYTES = 256 << 20
MAX_TOTAL_BYTES = 1 << 30
_FILE = re.compile(r"[A-Za-z0-9_.+-]{1,255}")  # a manifest path (spec/builds.md, section 8)
_CHUNK = 1 << 16
PUBLIC = 0o644
EXECUTABLE = 0o755


def artifact_kind(path: str) -> str:
    """The kind of a manifest artifact by its name (spec/builds.md, section 8): ``bin`` (no dot
    in its name), ``rlib``, ``staticlib`` or ``cdylib``."""
    if "." not in path:
        return "bin"
    if path.endswith(".rlib"):
        return "rlib"
    if path.endswith(".a"):
        return "staticlib"
    return "cdylib" if path.endswith(".so") else "other"


def _info(name: str, size: int, mode: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.type, info.mtime = size, mode, kind, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def bundle_bytes(stem: str, artifacts: Sequence[tuple[str, bytes]], proof: bytes) -> bytes:
    """The deterministic tar of ``artifacts`` ((manifest path, bytes)) and ``proof``."""
    members = [(f"{stem}{PROOF_SUFFIX}", proof), *artifacts]
    for name, _ in members:
        if _FILE.fullmatch(name) is None or name in (".", ".."):
            raise FormatError("bundle", f"member name {name!r} is not a file name")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_info(f"{stem}/", 0, EXECUTABLE, tarfile.DIRTYPE))
        for name, data in sorted(members, key=lambda member: member[0].encode()):
            mode = EXECUTABLE if artifact_kind(name) == "bin" else PUBLIC
            tar.addfile(_info(f"{stem}/{name}", len(data), mode), io.BytesIO(data))
    return out.getvalue()


def write_bundle(
    path: Path, stem: str, artifacts: Sequence[tuple[str, bytes]], proof: bytes
) -> None:
    """Write the bundle of ``artifacts`` and ``proof`` to ``path`` atomically (mode 0644)."""
    atomic_write(path, bundle_bytes(stem, artifacts, proof), PUBLIC)


@dataclass(frozen=True)
class BundledFile:
    """An artifact in a bundle: its name, SHA-256 and size (its bytes are not kept)."""

    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Bundle:
    """What a bundle holds: the proof file's bytes and the artifacts' digests."""

    top: str
    proof: bytes
    files: tuple[BundledFile, ...]


def _member_name(name: str, top: str | None, what: str) -> tuple[str, str | None]:
    """(top directory, file name or None for the directory itself) of a member name."""
    parts = name.split("/")
    if name.endswith("/"):
        parts = parts[:-1]
    if len(parts) not in (1, 2) or any(p in ("", ".", "..") for p in parts) or "\\" in name:
        raise FormatError(what, f"member {name[:300]!r} is not TOP/FILE")
    if top is not None and parts[0] != top:
        raise FormatError(what, f"member {name[:300]!r} is not under {top}/")
    if len(parts) == 2 and _FILE.fullmatch(parts[1]) is None:
        raise FormatError(what, f"member {name[:300]!r} is not a manifest file name")
    return parts[0], parts[1] if len(parts) == 2 else None


def read_bundle(path: Path) -> Bundle:
    """Read and hash a bundle's members within the bounds; ``FormatError`` for anything else."""
    what = f"bundle {path}"
    top: str | None = None
    seen: set[str] = set()
    files: list[BundledFile] = []
    proofs: list[bytes] = []
    total = 0
    try:
        with path.open("rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    raise FormatError(what, f"more than {MAX_MEMBERS} members")
                top, name = _member_name(member.name, top, what)
                if name is None:
                    if not member.isdir():
                        raise FormatError(what, f"{member.name!r} must be a directory")
                    continue
                if name in seen:
                    raise FormatError(what, f"member {member.name!r} appears twice")
                seen.add(name)
                if not member.isreg():
                    raise FormatError(what, f"member {member.name!r} is a link or special file")
                total += member.size
                if member.size > MAX_FILE_BYTES or total > MAX_TOTAL_BYTES:
                    raise FormatError(what, f"member {member.name!r} is too large")
                handle = tar.extractfile(member)
                if handle is None:
                    raise FormatError(what, f"member {member.name!r} has no data")
                if name.endswith(PROOF_SUFFIX):
                    if member.size > MAX_PROOF_FILE_BYTES:
                        raise FormatError(what, f"the proof {member.name!r} is too large")
                    proofs.append(handle.read())
                    continue
                digest, size = hashlib.sha256(), 0
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                files.append(BundledFile(name, digest.hexdigest(), size))
    except (tarfile.TarError, EOFError) as e:
        raise FormatError(what, f"not a valid tar archive: {e}") from e
    if top is None or len(proofs) != 1:
        raise FormatError(what, f"it must hold exactly one {PROOF_SUFFIX} file")
    return Bundle(top, proofs[0], tuple(files))


def is_bundle(path: Path) -> bool:
    """Whether ``path`` looks like a tar file (a bundle, then, or nothing valid)."""
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def check_bundle(reproduced: Reproduced, bundle: Bundle) -> list[tuple[str, int]]:
    """Each artifact of ``bundle`` must be the reproduced artifact of its name: (name, size)
    of each, or ``VerificationError`` naming the first that is not."""
    if not bundle.files:
        raise VerificationError(f"the bundle {bundle.top}/ holds no artifact")
    checked = []
    for item in bundle.files:
        found = reproduced.artifacts.get(item.sha256)
        if found is None or found != (item.name, item.size):
            raise VerificationError(
                f"{bundle.top}/{item.name} (sha256 {item.sha256}) is not the reproduced "
                f"{item.name} of {reproduced.name}"
            )
        checked.append((item.name, item.size))
    return checked


def verify_bundle(
    path: Path, policy: Policy, proof_file: bytes | None = None
) -> tuple[Reproduced, list[tuple[str, int]]]:
    """Verify a bundle offline: its proof (or ``proof_file``) against ``policy``, then every
    artifact in it against the proven digests."""
    bundle = read_bundle(path)
    reproduced = verify_verdict_proof(proof_file or bundle.proof, policy)
    return reproduced, check_bundle(reproduced, bundle)


def check_artifact_file(reproduced: Reproduced, path: Path) -> list[tuple[str, str, int]]:
    """(file, manifest path, size) for ``path`` if it is a reproduced artifact, or for each
    artifact in it if it is a bundle (its own proof is not used: ``reproduced`` is what the
    caller verified); ``VerificationError`` otherwise."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    found = reproduced.artifacts.get(digest.hexdigest())
    if found is not None and found[1] == size:
        return [(str(path), found[0], size)]
    if is_bundle(path):
        bundle = read_bundle(path)
        return [(f"{path}:{name}", name, n) for name, n in check_bundle(reproduced, bundle)]
    raise VerificationError(
        f"the artifact {path} (sha256 {digest.hexdigest()}) is not in the reproduced outputs"
    )
