"""Fetching and vendoring a recipe's sources, outside the sandbox (the I/O edge).

Every ``.crate`` is checked before anything is built: the crate's own against the recipe's
``crate_sha256``, each dependency against its ``Cargo.lock`` checksum (as cargo does); any
mismatch is a VerificationError naming the crate. The sparse index is read once, when a recipe
is made (``resolve_recipe``); a later, possibly stale copy of it never decides: the crate's own
``cksum`` in it may only contradict the recipe (a VerificationError), a version missing from
it is no error. Downloads are cached on disk by content (``<cache>/crates/<sha256>.crate``),
re-verified on every use. The result is a source tree (the crate with the pinned
``Cargo.lock``) and a ``deps`` tree: ``vendor/`` with one directory per locked package (each
with ``.cargo-checksum.json``) and ``config.toml`` that replaces crates.io with that directory
at its fixed sandbox path. A locked package that cannot be fetched (a checksum mismatch can
never be excused) is vendored as a manifest-only stand-in (:mod:`builder.standins`) and named
in ``stand-ins.txt`` beside ``config.toml``; the sandbox refuses to build if the build compiles
one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.archive import safe_extract
from builder.choice import newest_version
from builder.image import cache_dir
from builder.lockfile import LockedPackage, dependency_of, parse_cargo_lock, root_package
from builder.recipe import SOURCE_LOCAL, Recipe
from builder.standins import activating_features, requested_features, stub_manifest, tree_line
from logserver.core import canonical_json
from logserver.core.errors import FormatError, OperationalError, UsageError, VerificationError

INDEX_URL = "https://index.crates.io/"
DOWNLOAD_URL = "https://static.crates.io/crates/{name}/{name}-{version}.crate"
MAX_CRATE_BYTES = 64 << 20
MAX_INDEX_BYTES = 16 << 20
# Where the sandbox mounts the deps tree; config.toml points cargo there.
SANDBOX_DEPS_DIR = "/build/deps"
# Beside config.toml: the stand-ins, one `name vVERSION` line each (cargo tree's naming).
STAND_INS_FILE = "stand-ins.txt"


def index_path(name: str) -> str:
    """The sparse-index path of a crate name (``it/oa/itoa``, ``3/s/syn``, ...)."""
    lower = name.lower()
    if len(lower) <= 2:
        return f"{len(lower)}/{lower}"
    if len(lower) == 3:
        return f"3/{lower[0]}/{lower}"
    return f"{lower[0:2]}/{lower[2:4]}/{lower}"


def _http_get(url: str, limit: int, *, fresh: bool = False) -> bytes:
    if not url.startswith("https://"):
        raise UsageError(f"refusing to fetch {url}: only https URLs")
    headers = {"User-Agent": "synchronicity-builder"}
    if fresh:  # ask caches on the way to revalidate (index files change; crates never do)
        headers["Cache-Control"] = "no-cache"
    request = urllib.request.Request(url, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (https only)
            data: bytes = response.read(limit + 1)
    except (urllib.error.URLError, OSError) as exc:
        raise OperationalError(f"cannot fetch {url}: {exc}") from exc
    if len(data) > limit:
        raise OperationalError(f"{url} is larger than {limit} bytes")
    return data


def index_cksum_from_entries(text: str, name: str, version: str) -> str:
    """Find the ``cksum`` of ``name@version`` in the text of a sparse-index file (pure)."""
    for line in text.splitlines():
        if not line.strip():
            continue
        entry = canonical_json.parse(line.encode(), "crates.io index entry")
        if not isinstance(entry, dict):
            raise FormatError("crates.io index entry", "not an object")
        if entry.get("name", "").lower() == name.lower() and entry.get("vers") == version:
            cksum = entry.get("cksum")
            if not isinstance(cksum, str) or len(cksum) != 64:
                raise FormatError("crates.io index entry", f"bad cksum for {name}@{version}")
            return cksum
    raise UsageError(f"{name}@{version} is not in the crates.io index")


def index_versions(text: str) -> list[tuple[str, bool]]:
    """``(version, yanked)`` of every entry of a sparse-index file (pure)."""
    versions = []
    for line in text.splitlines():
        if not line.strip():
            continue
        entry = canonical_json.parse(line.encode(), "crates.io index entry")
        if not isinstance(entry, dict) or not isinstance(entry.get("vers"), str):
            raise FormatError("crates.io index entry", "not an object with a version")
        versions.append((entry["vers"], entry.get("yanked") is True))
    return versions


class CrateStore:
    """Content-addressed on-disk cache of ``.crate`` files, with crates.io as the fallback."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or cache_dir() / "crates"
        self._index: dict[str, str] = {}
        self._index_files: dict[str, str] = {}

    def path_for(self, sha256: str) -> Path:
        return self.root / f"{sha256}.crate"

    def put(self, data: bytes) -> str:
        """Store bytes; return their SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path_for(digest)
        if not target.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            # a name of this thread's own: a witness builds several jobs at once
            temporary = target.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
            temporary.write_bytes(data)
            os.replace(temporary, target)
        return digest

    def cached(self, sha256: str, spec: str) -> bytes | None:
        """The cached bytes for ``sha256``, re-verified; None if not cached."""
        path = self.path_for(sha256)
        if not path.exists():
            return None
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise VerificationError(
                f"crate {spec}: cached file {path} has SHA-256 {actual}, expected {sha256}"
            )
        return data

    def index_file(self, name: str) -> str:
        """The text of the sparse-index file of ``name`` (fetched once per store)."""
        key = name.lower()
        if key not in self._index_files:
            data = _http_get(INDEX_URL + index_path(name), MAX_INDEX_BYTES, fresh=True)
            try:
                self._index_files[key] = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FormatError("crates.io index file", f"{name}: {exc}") from exc
        return self._index_files[key]

    def index_cksum(self, name: str, version: str) -> str:
        """The crates.io index ``cksum`` of ``name@version`` (fetched once per store)."""
        key = f"{name}@{version}"
        if key not in self._index:
            self._index[key] = index_cksum_from_entries(self.index_file(name), name, version)
        return self._index[key]

    def newest_version(self, name: str, *, pre: bool = False) -> str:
        """The newest version of ``name`` on crates.io that is not yanked."""
        try:
            text = self.index_file(name)
        except OperationalError as exc:
            if "404" in str(exc):
                raise UsageError(f"there is no crate {name} on crates.io") from exc
            raise
        return newest_version(name, index_versions(text), pre=pre)

    def fetch(self, name: str, version: str, sha256: str, pinned_by: str = "expected") -> bytes:
        """The ``.crate`` of ``name@version`` with the given SHA-256, from cache or crates.io."""
        spec = f"{name}@{version}"
        data = self.cached(sha256, spec)
        if data is not None:
            return data
        data = _http_get(DOWNLOAD_URL.format(name=name, version=version), MAX_CRATE_BYTES)
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise VerificationError(
                f"crate {spec}: downloaded file has SHA-256 {actual}, {pinned_by} {sha256}"
            )
        self.put(data)
        return data


@dataclass(frozen=True)
class PreparedSources:
    """Host directories ready to be mounted into the sandbox.

    ``vendored``: the locked packages downloaded and verified; ``stand_ins``: those that could
    not be fetched (with the reason), vendored as manifest-only stand-ins.
    """

    src_dir: Path
    deps_dir: Path
    vendored: tuple[LockedPackage, ...]
    stand_ins: tuple[tuple[LockedPackage, str], ...] = ()


def verified_crate(recipe: Recipe, store: CrateStore, local_crate: Path | None) -> bytes:
    """The recipe's own ``.crate`` bytes, verified against the recipe (and the index)."""
    spec = recipe.spec
    if recipe.source == SOURCE_LOCAL:
        if local_crate is not None:
            data = local_crate.read_bytes()
            actual = hashlib.sha256(data).hexdigest()
            if actual != recipe.crate_sha256:
                raise VerificationError(
                    f"crate {spec}: local file {local_crate} has SHA-256 {actual}, "
                    f"recipe pins {recipe.crate_sha256}"
                )
            store.put(data)
            return data
        cached = store.cached(recipe.crate_sha256, spec)
        if cached is None:
            raise UsageError(f"local crate {spec} ({recipe.crate_sha256}) is not in the cache")
        return cached
    try:
        cksum: str | None = store.index_cksum(recipe.name, recipe.version)
    except UsageError:  # not in this copy of the index (a stale cache): it decides nothing
        cksum = None
    if cksum is not None and cksum != recipe.crate_sha256:
        raise VerificationError(
            f"crate {spec}: crates.io index cksum {cksum} differs from the recipe's "
            f"{recipe.crate_sha256}"
        )
    return store.fetch(recipe.name, recipe.version, recipe.crate_sha256, "the recipe pins")


def fetch_dependencies(
    packages: list[LockedPackage], store: CrateStore
) -> tuple[list[tuple[LockedPackage, bytes]], list[tuple[LockedPackage, str]]]:
    """Download the crates.io packages, each verified against its lockfile checksum.

    Returns the fetched ones and, with the reason, those that could not be fetched. A
    download whose SHA-256 differs from the lockfile is a VerificationError, never excused.
    """
    fetched, unavailable = [], []
    for package in sorted(packages, key=lambda p: (p.name, p.version)):
        if not package.from_crates_io:
            continue
        assert package.checksum is not None
        try:
            data = store.fetch(
                package.name, package.version, package.checksum, "Cargo.lock checksum"
            )
        except OperationalError as exc:
            unavailable.append((package, str(exc)))
            continue
        fetched.append((package, data))
    return fetched, unavailable


def cargo_config_text() -> str:
    return (
        "[source.crates-io]\n"
        'replace-with = "vendored-sources"\n\n'
        "[source.vendored-sources]\n"
        f'directory = "{SANDBOX_DEPS_DIR}/vendor"\n'
    )


def _manifest(package_dir: Path, spec: str) -> dict[str, Any]:
    try:
        return tomllib.loads((package_dir / "Cargo.toml").read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise FormatError(f"crate {spec}", f"Cargo.toml is not readable TOML: {exc}") from exc


def _write_checksum(package_dir: Path, package: LockedPackage) -> None:
    checksum: dict[str, object] = {"files": {}, "package": package.checksum}
    (package_dir / ".cargo-checksum.json").write_text(json.dumps(checksum))


def prepare_sources(
    recipe: Recipe,
    work_dir: Path,
    store: CrateStore | None = None,
    *,
    local_crate: Path | None = None,
) -> PreparedSources:
    """Verify and fetch everything, then unpack into ``work_dir``/src and ``work_dir``/deps."""
    store = store or CrateStore()
    crate = verified_crate(recipe, store, local_crate)
    packages = parse_cargo_lock(recipe.cargo_lock)
    root_package(packages, recipe.name, recipe.version)
    dependencies, unavailable = fetch_dependencies(packages, store)

    src_dir = work_dir / "src"
    src_dir.mkdir(parents=True)
    safe_extract(
        io.BytesIO(crate),
        src_dir,
        what=f"crate {recipe.spec}",
        strip_prefix=f"{recipe.name}-{recipe.version}",
        compressed=True,
    )
    if not (src_dir / "Cargo.toml").is_file():
        raise FormatError(f"crate {recipe.spec}", "has no Cargo.toml")
    (src_dir / "Cargo.lock").unlink(missing_ok=True)
    (src_dir / "Cargo.lock").write_text(recipe.cargo_lock)

    deps_dir = work_dir / "deps"
    vendor_dir = deps_dir / "vendor"
    vendor_dir.mkdir(parents=True)
    for package, data in dependencies:
        package_dir = vendor_dir / f"{package.name}-{package.version}"
        package_dir.mkdir()
        safe_extract(
            io.BytesIO(data),
            package_dir,
            what=f"crate {package.spec}",
            strip_prefix=f"{package.name}-{package.version}",
            compressed=True,
        )
        _write_checksum(package_dir, package)
    if unavailable:
        fetched = {
            p: _manifest(vendor_dir / f"{p.name}-{p.version}", p.spec) for p, _ in dependencies
        }
        manifests = [_manifest(src_dir, recipe.spec), *fetched.values()]
        for package, _ in unavailable:
            package_dir = vendor_dir / f"{package.name}-{package.version}"
            package_dir.mkdir()
            features = set().union(*(requested_features(m, package.name) for m in manifests))
            asks = {}
            for dependency in (dependency_of(packages, edge) for edge in package.dependencies):
                if dependency in fetched:
                    locked = {dependency_of(packages, e).name for e in dependency.dependencies}
                    asks[dependency] = activating_features(fetched[dependency], locked)
            stub = stub_manifest(package, packages, features, asks)
            (package_dir / "Cargo.toml").write_text(stub)
            (package_dir / "lib.rs").write_text("")
            _write_checksum(package_dir, package)
    (deps_dir / STAND_INS_FILE).write_text("".join(f"{tree_line(p)}\n" for p, _ in unavailable))
    (deps_dir / "config.toml").write_text(cargo_config_text())
    for directory in (work_dir, src_dir, deps_dir):
        directory.chmod(0o755)
    return PreparedSources(
        src_dir=src_dir,
        deps_dir=deps_dir,
        vendored=tuple(package for package, _ in dependencies),
        stand_ins=tuple(unavailable),
    )
