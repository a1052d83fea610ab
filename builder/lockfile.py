"""Strict parsing of ``Cargo.lock`` (format versions 1 to 4) into the packages to vendor.

Pure: text in, ``LockedPackage`` values out. Only crates.io and path (the crate itself)
sources are accepted; git and other registries are refused, since a builder could not verify
them against the crates.io index. Every crates.io package must carry a SHA-256 checksum.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from typing import Any

from logserver.core.errors import FormatError

CRATES_IO_SOURCES = (
    "registry+https://github.com/rust-lang/crates.io-index",
    "sparse+https://index.crates.io/",
)
_PACKAGE_KEYS = {"name", "version", "source", "checksum", "dependencies"}
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]+)?")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_EDGE = re.compile(
    r"(?P<name>[A-Za-z0-9_-]{1,64})( (?P<version>[^ ()]+))?( \((?P<source>[^)]+)\))?"
)
_METADATA_KEY = re.compile(r"checksum (?P<name>\S+) (?P<version>\S+) \((?P<source>[^)]+)\)")


@dataclass(frozen=True)
class LockedPackage:
    """One ``[[package]]`` of a lockfile."""

    name: str
    version: str
    from_crates_io: bool
    checksum: str | None
    # The locked dependency edges as written: "name", "name version" or "name version (source)".
    dependencies: tuple[str, ...] = ()

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"


def _bad(reason: str) -> FormatError:
    return FormatError("Cargo.lock", reason)


def _package(raw: Any, metadata_checksums: dict[tuple[str, str, str], str]) -> LockedPackage:
    if not isinstance(raw, dict):
        raise _bad("[[package]] must be a table")
    unknown = set(raw) - _PACKAGE_KEYS
    if unknown:
        raise _bad(f"unknown package keys {sorted(unknown)}")
    name, version = raw.get("name"), raw.get("version")
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise _bad(f"package name {name!r} is not valid")
    if not isinstance(version, str) or _VERSION.fullmatch(version) is None:
        raise _bad(f"version {version!r} of {name} is not valid")
    dependencies = raw.get("dependencies", [])
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise _bad(f"dependencies of {name}@{version} must be an array of strings")
    source = raw.get("source")
    checksum = raw.get("checksum")
    if source is None:
        if checksum is not None:
            raise _bad(f"path package {name}@{version} must not carry a checksum")
        return LockedPackage(
            name, version, from_crates_io=False, checksum=None, dependencies=tuple(dependencies)
        )
    if source not in CRATES_IO_SOURCES:
        raise _bad(f"{name}@{version} comes from unsupported source {source!r}")
    if metadata_checksums:
        if checksum is not None:
            raise _bad(f"{name}@{version} has a checksum in both [[package]] and [metadata]")
        checksum = metadata_checksums.get((name, version, source))
    if not isinstance(checksum, str) or _SHA256.fullmatch(checksum) is None:
        raise _bad(f"{name}@{version} lacks a valid SHA-256 checksum")
    return LockedPackage(
        name, version, from_crates_io=True, checksum=checksum, dependencies=tuple(dependencies)
    )


def _metadata_checksums(metadata: Any) -> dict[tuple[str, str, str], str]:
    """The ``[metadata]`` checksums of format version 1: ``"checksum N V (S)" = "hex"``."""
    if not isinstance(metadata, dict):
        raise _bad("[metadata] must be a table")
    checksums = {}
    for key, value in metadata.items():
        match = _METADATA_KEY.fullmatch(key)
        if match is None or not isinstance(value, str):
            raise _bad(f"[metadata] entry {key!r} is not a checksum")
        checksums[(match["name"], match["version"], match["source"])] = value
    return checksums


def parse_cargo_lock(text: str) -> list[LockedPackage]:
    """Parse a lockfile; return its packages sorted by (name, version).

    Format versions 3 and 4 carry checksums in the packages; version 2 (no ``version`` key)
    too; version 1 (no ``version`` key) keeps them in ``[metadata]``.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _bad(f"not TOML: {exc}") from exc
    unknown = set(document) - {"version", "package", "metadata"}
    if unknown:
        raise _bad(f"unknown top-level keys {sorted(unknown)}")
    if "version" in document:
        if document["version"] not in (3, 4):
            raise _bad(f"format version {document['version']!r} is not 1, 2, 3 or 4")
        if "metadata" in document:
            raise _bad("[metadata] is only allowed in format version 1")
    metadata_checksums = _metadata_checksums(document.get("metadata", {}))
    raw_packages = document.get("package", [])
    if not isinstance(raw_packages, list) or not raw_packages:
        raise _bad("no [[package]] entries")
    packages = [_package(raw, metadata_checksums) for raw in raw_packages]
    keys = [(package.name, package.version, package.from_crates_io) for package in packages]
    if len(set(keys)) != len(keys):
        raise _bad("a package appears twice")
    return sorted(packages, key=lambda package: (package.name, package.version))


def dependency_of(packages: list[LockedPackage], edge: str) -> LockedPackage:
    """The package a dependency edge (``name``, ``name version``, ``name version (source)``)
    names, or FormatError if it names none or several."""
    match = _EDGE.fullmatch(edge)
    if match is None:
        raise _bad(f"dependency {edge!r} is not valid")
    found = [
        package
        for package in packages
        if package.name == match["name"]
        and (match["version"] is None or package.version == match["version"])
    ]
    if len(found) != 1:
        raise _bad(f"dependency {edge!r} names {len(found)} packages")
    return found[0]


def root_package(packages: list[LockedPackage], name: str, version: str) -> LockedPackage:
    """The lockfile entry of the crate being built (a path package), or FormatError."""
    for package in packages:
        if package.name == name and package.version == version and not package.from_crates_io:
            return package
    raise _bad(f"does not lock the crate itself, {name}@{version}")
