"""Helpers for the builder tests: pack fixture crate directories into ``.crate`` files."""

from __future__ import annotations

import gzip
import io
import tarfile
import tomllib
from pathlib import Path

from tests.support.paths import CRATE_FIXTURES

FIXTURES = CRATE_FIXTURES


def pack_crate(source: Path, destination_dir: Path) -> Path:
    """Pack a crate directory as ``<name>-<version>.crate`` (a gzipped tar, sorted, fixed times)."""
    package = tomllib.loads((source / "Cargo.toml").read_text())["package"]
    prefix = f"{package['name']}-{package['version']}"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source).as_posix()
            if relative.startswith("target"):
                continue
            info = tarfile.TarInfo(f"{prefix}/{relative}")
            info.mtime = 0
            if path.is_dir():
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                archive.addfile(info)
            else:
                data = path.read_bytes()
                info.size = len(data)
                info.mode = 0o644
                archive.addfile(info, io.BytesIO(data))
    destination = destination_dir / f"{prefix}.crate"
    destination.write_bytes(gzip.compress(buffer.getvalue(), mtime=0))
    return destination


def pack_fixture(name: str, destination_dir: Path) -> Path:
    return pack_crate(FIXTURES / name, destination_dir)
