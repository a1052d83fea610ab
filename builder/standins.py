"""Manifest-only stand-ins for locked packages that cannot be fetched (pure).

``cargo build --locked`` reads the manifest of every package of ``Cargo.lock`` — the crate's
dev-dependencies and the optional or other-platform dependencies it does not compile included
— but compiles only some. A package that cannot be fetched (gone from a mirror, too large for
the download limit) must not fail a job that never compiles it. Such a package is vendored as
a stand-in: its locked name and version, every feature that a fetched manifest asks of it, its
locked dependencies pinned to their exact versions, without default features but with the
features that switch on the optional dependencies the lockfile shows switched on in them
(``activating_features``), an empty library, and the lockfile's checksum. That is what cargo's
resolver needs to find the lockfile again (a best effort: when it does not, cargo refuses to
change the lockfile and the build fails saying so). The sandbox then checks with ``cargo tree``
that the build compiles no stand-in (see ``builder.sandbox``). A stand-in that is not compiled
changes nothing that is compiled with feature resolver 2; with resolver 1, which unifies the
features of dev-dependencies and other platforms' dependencies into ``cargo build``, what the
real package asked may differ, and the build log lists the stand-ins.
"""

from __future__ import annotations

import json
import re
from typing import Any

from builder.lockfile import LockedPackage, dependency_of
from logserver.core.errors import FormatError

_DEPENDENCY_SECTIONS = (
    "dependencies",
    "build-dependencies",
    "build_dependencies",
    "dev-dependencies",
    "dev_dependencies",
)
_FEATURE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_+.-]{0,63}")


def _dependency_tables(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every dependency table of a manifest, at top level and under every target."""
    tables = [manifest.get(name) for name in _DEPENDENCY_SECTIONS]
    targets = manifest.get("target", {})
    if isinstance(targets, dict):
        for target in targets.values():
            if isinstance(target, dict):
                tables += [target.get(name) for name in _DEPENDENCY_SECTIONS]
    return [table for table in tables if isinstance(table, dict)]


def _package_name(key: str, value: object) -> str:
    if isinstance(value, dict) and isinstance(value.get("package"), str):
        return str(value["package"])
    return key


def requested_features(manifest: dict[str, Any], package: str) -> set[str]:
    """The features that ``manifest`` may ask of ``package``: in its dependency declarations,
    and as ``key/feature`` or ``key?/feature`` in its ``[features]``."""
    features: set[str] = set()
    keys: set[str] = set()
    for table in _dependency_tables(manifest):
        for key, value in table.items():
            if _package_name(key, value) != package:
                continue
            keys.add(key)
            asked = value.get("features", []) if isinstance(value, dict) else []
            if isinstance(asked, list):
                features |= {f for f in asked if isinstance(f, str)}
    own = manifest.get("features", {})
    if isinstance(own, dict):
        for values in own.values():
            for item in values if isinstance(values, list) else []:
                key, slash, feature = str(item).partition("/")
                if slash and key.removesuffix("?") in keys:
                    features.add(feature)
    return {feature for feature in features if _FEATURE.fullmatch(feature)}


def _optional_dependencies(manifest: dict[str, Any]) -> dict[str, str]:
    """Dependency key → package name of the optional dependencies of a manifest."""
    optional = {}
    for table in _dependency_tables(manifest):
        for key, value in table.items():
            if isinstance(value, dict) and value.get("optional") is True:
                optional[key] = _package_name(key, value)
    return optional


def activating_features(manifest: dict[str, Any], locked: set[str]) -> set[str]:
    """Features of a package that switch on those of its optional dependencies that the
    lockfile shows switched on (``locked``: the package names of its locked dependencies).

    A stand-in asks these of a fetched package it depends on, in place of whatever the real
    package asked, so that cargo resolves the lockfile's dependencies again. For each such
    dependency the smallest feature that names it is taken (``dep:key``, ``key/…`` or, when
    no feature says ``dep:key``, the implicit feature ``key``).
    """
    table = manifest.get("features", {})
    features = {
        str(name): [str(item) for item in items]
        for name, items in (table.items() if isinstance(table, dict) else [])
        if isinstance(items, list)
    }
    explicit = {item[4:] for items in features.values() for item in items if item[:4] == "dep:"}
    asked = set()
    for key, package in sorted(_optional_dependencies(manifest).items()):
        if package not in locked:
            continue
        if key not in explicit and key not in features:
            asked.add(key)  # the implicit feature of an optional dependency
            continue
        candidates = [
            name
            for name, items in features.items()
            if f"dep:{key}" in items
            or any(item.split("/", 1)[0] == key and "/" in item for item in items)
            or (key not in explicit and key in items)
        ]
        if candidates:
            asked.add(min(candidates, key=lambda name: (len(features[name]), name)))
    return {feature for feature in asked if _FEATURE.fullmatch(feature)}


def stub_manifest(
    package: LockedPackage,
    packages: list[LockedPackage],
    features: set[str],
    asks: dict[LockedPackage, set[str]] | None = None,
) -> str:
    """The ``Cargo.toml`` of the stand-in of ``package``; ``asks`` maps some of its
    dependencies to the features to ask of them (``activating_features``)."""
    asks = asks or {}
    dependencies = [dependency_of(packages, edge) for edge in package.dependencies]
    names = [dependency.name for dependency in dependencies]
    lines = [
        "# A stand-in written by synchronicity for a locked package that could not be fetched",
        "# and that the build does not compile: its locked dependencies and asked-for features.",
        "[package]",
        f"name = {json.dumps(package.name)}",
        f"version = {json.dumps(package.version)}",
        'edition = "2015"',
        "",
        "[lib]",
        'path = "lib.rs"',
        "",
        "[features]",
    ]
    lines += [f"{json.dumps(feature)} = []" for feature in sorted(features)]
    lines += ["", "[dependencies]"]
    for dependency in sorted(dependencies, key=lambda d: (d.name, d.version)):
        if dependency.name == package.name:
            raise FormatError("Cargo.lock", f"{package.spec} depends on itself")
        key = dependency.name
        if names.count(key) > 1:  # two versions of one package need two keys
            key = f"{key}-{re.sub(r'[^A-Za-z0-9]', '_', dependency.version)}"
        wanted = ", ".join(json.dumps(f) for f in sorted(asks.get(dependency, set())))
        lines.append(
            f"{json.dumps(key)} = {{ package = {json.dumps(dependency.name)}, "
            f"version = {json.dumps('=' + dependency.version)}, default-features = false, "
            f"features = [{wanted}] }}"
        )
    return "\n".join(lines) + "\n"


def tree_line(package: LockedPackage) -> str:
    """How ``cargo tree -f '{p}'`` names a registry package: ``name vVERSION``."""
    return f"{package.name} v{package.version}"
