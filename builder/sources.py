"""Fetching and vendoring a recipe's sources, outside the sandbox (the I/O edge).

Every ``.crate`` is checked against the crates.io sparse index ``cksum`` and, for
dependencies, against the ``Cargo.lock`` checksum too; any mismatch is a VerificationError
naming the crate, raised before anything is unpacked or built. Downloads are cached on disk by
content (``<cache>/crates/<sha256>.crate``), re-verified on every use. The result is a source
tree (the crate with the pinned ``Cargo.lock``) and a ``deps`` tree: ``vendor/`` with one
unpacked directory per dependency (each with ``.cargo-checksum.json``) and ``config.toml``
that replaces crates.io with that directory at its fixed sandbox path.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from builder.archive import safe_extract
from builder.image import cache_dir
from builder.lockfile import LockedPackage, parse_cargo_lock, root_package
from builder.recipe import SOURCE_LOCAL, Recipe
from logserver.core import canonical_json
from logserver.core.errors import FormatError, OperationalError, UsageError, VerificationError

INDEX_URL = "https://index.crates.io/"
DOWNLOAD_URL = "https://static.crates.io/crates/{name}/{name}-{version}.crate"
MAX_CRATE_BYTES = 64 << 20
MAX_INDEX_BYTES = 16 << 20
# Where the sandbox mounts the deps tree; config.toml points cargo there.
SANDBOX_DEPS_DIR = "/build/deps"


def index_path(name: str) -> str:
    """The sparse-index path of a crate name (``it/oa/itoa``, ``3/s/syn``, ...)."""
    lower = name.lower()
    if len(lower) <= 2:
        return f"{len(lower)}/{lower}"
    if len(lower) == 3:
        return f"3/{lower[0]}/{lower}"
    return f"{lower[0:2]}/{lower[2:4]}/{lower}"


def _http_get(url: str, limit: int) -> bytes:
    if not url.startswith("https://"):
        raise UsageError(f"refusing to fetch {url}: only https URLs")
    request = urllib.request.Request(url, headers={"User-Agent": "synchronicity-builder"})  # noqa: S310
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


class CrateStore:
    """Content-addressed on-disk cache of ``.crate`` files, with crates.io as the fallback."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or cache_dir() / "crates"
        self._index: dict[str, str] = {}

    def path_for(self, sha256: str) -> Path:
        return self.root / f"{sha256}.crate"

    def put(self, data: bytes) -> str:
        """Store bytes; return their SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path_for(digest)
        if not target.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            temporary = target.with_suffix(f".tmp{os.getpid()}")
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

    def index_cksum(self, name: str, version: str) -> str:
        """The crates.io index ``cksum`` of ``name@version`` (fetched once per process)."""
        key = f"{name}@{version}"
        if key not in self._index:
            text = _http_get(INDEX_URL + index_path(name), MAX_INDEX_BYTES).decode("utf-8")
            self._index[key] = index_cksum_from_entries(text, name, version)
        return self._index[key]

    def fetch(self, name: str, version: str, sha256: str) -> bytes:
        """The ``.crate`` of ``name@version`` with the given SHA-256, from cache or crates.io."""
        spec = f"{name}@{version}"
        data = self.cached(sha256, spec)
        if data is not None:
            return data
        data = _http_get(DOWNLOAD_URL.format(name=name, version=version), MAX_CRATE_BYTES)
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise VerificationError(
                f"crate {spec}: downloaded file has SHA-256 {actual}, expected {sha256}"
            )
        self.put(data)
        return data


@dataclass(frozen=True)
class PreparedSources:
    """Host directories ready to be mounted into the sandbox."""

    src_dir: Path
    deps_dir: Path
    vendored: tuple[LockedPackage, ...]


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
    cksum = store.index_cksum(recipe.name, recipe.version)
    if cksum != recipe.crate_sha256:
        raise VerificationError(
            f"crate {spec}: crates.io index cksum {cksum} differs from the recipe's "
            f"{recipe.crate_sha256}"
        )
    return store.fetch(recipe.name, recipe.version, cksum)


def fetch_dependencies(
    packages: list[LockedPackage], store: CrateStore
) -> list[tuple[LockedPackage, bytes]]:
    """Download and verify every crates.io package of a lockfile (lockfile AND index)."""
    fetched = []
    for package in packages:
        if not package.from_crates_io:
            continue
        assert package.checksum is not None
        cksum = store.index_cksum(package.name, package.version)
        if cksum != package.checksum:
            raise VerificationError(
                f"crate {package.spec}: Cargo.lock checksum {package.checksum} differs from "
                f"the crates.io index cksum {cksum}"
            )
        fetched.append((package, store.fetch(package.name, package.version, cksum)))
    return fetched


def cargo_config_text() -> str:
    return (
        "[source.crates-io]\n"
        'replace-with = "vendored-sources"\n\n'
        "[source.vendored-sources]\n"
        f'directory = "{SANDBOX_DEPS_DIR}/vendor"\n'
    )


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
    dependencies = fetch_dependencies(packages, store)

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
        checksum: dict[str, object] = {"files": {}, "package": package.checksum}
        (package_dir / ".cargo-checksum.json").write_text(json.dumps(checksum))
    (deps_dir / "config.toml").write_text(cargo_config_text())
    for directory in (work_dir, src_dir, deps_dir):
        directory.chmod(0o755)
    return PreparedSources(
        src_dir=src_dir, deps_dir=deps_dir, vendored=tuple(package for package, _ in dependencies)
    )
