"""What to build when the user does not say: the newest version, the docs.rs features (pure).

``newest_version`` picks, from a crate's sparse-index entries, the highest SemVer 2.0 version
that is not yanked, and a pre-release only when asked. ``docs_rs_features`` reads the feature
selection a crate asks docs.rs to build with (``[package.metadata.docs.rs]``: ``features``,
``all-features``, ``no-default-features``), or None when it names none, as far as a stable
toolchain can build it: docs.rs builds with a nightly compiler and the metadata's
``rustc-args`` and ``rustdoc-args``, so a selection that passes compiler arguments, or a
``--cfg`` other than ``docsrs`` to rustdoc, is not followed (the crate's defaults are built);
features the crate itself marks as needing nightly (a
``#![cfg_attr(feature = "F", feature(...))]`` in its sources, see ``nightly_features``), and
the features that turn those on (``needing``), are left out of it.
"""

from __future__ import annotations

import re
from typing import Any

from builder.recipe import Features
from logserver.core.errors import FormatError, UsageError

_SEMVER = re.compile(
    r"(?P<major>0|[1-9][0-9]*)\.(?P<minor>0|[1-9][0-9]*)\.(?P<patch>0|[1-9][0-9]*)"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?"
)

SemverKey = tuple[int, int, int, tuple[tuple[int, int | str], ...]]


def semver_key(version: str) -> SemverKey:
    """A sort key giving SemVer 2.0 precedence (build metadata ignored).

    A release sorts after its pre-releases; pre-release identifiers compare numerically when
    numeric, else as ASCII, numeric ones first; a shorter list of equal identifiers first.
    """
    match = _SEMVER.fullmatch(version)
    if match is None:
        raise FormatError("version", f"{version!r} is not a SemVer 2.0 version")
    pre: tuple[tuple[int, int | str], ...] = ((2, 0),)  # a release: after every pre-release
    if match["pre"] is not None:
        pre = tuple(
            (0, int(part)) if part.isdigit() else (1, part) for part in match["pre"].split(".")
        )
    return int(match["major"]), int(match["minor"]), int(match["patch"]), pre


def is_prerelease(version: str) -> bool:
    match = _SEMVER.fullmatch(version)
    return match is not None and match["pre"] is not None


def newest_version(name: str, versions: list[tuple[str, bool]], *, pre: bool = False) -> str:
    """The newest of ``(version, yanked)`` that is not yanked (a pre-release only if ``pre``)."""
    candidates = [
        version
        for version, yanked in versions
        if not yanked and _SEMVER.fullmatch(version) and (pre or not is_prerelease(version))
    ]
    if not candidates:
        kind = "version" if pre else "release (pre-releases need --pre)"
        raise UsageError(f"{name} has no {kind} on crates.io that is not yanked")
    return max(candidates, key=semver_key)


_CFG_ATTR = re.compile(r"cfg_attr\s*\((?P<condition>[^;]*?),\s*feature\s*\(")
_FEATURE_NAME = re.compile(r'feature\s*=\s*"(?P<name>[^"]+)"')
_NEGATED = re.compile(r"not\s*\([^()]*\)")  # a feature that must be OFF turns nothing on


def nightly_features(sources: list[str]) -> frozenset[str]:
    """Features that turn on unstable compiler features: ``cfg_attr(<cond>, feature(...))``
    whose condition names ``feature = "F"`` (serde's ``unstable``, for example)."""
    found: set[str] = set()
    for text in sources:
        for match in _CFG_ATTR.finditer(text):
            condition = _NEGATED.sub("", match["condition"])
            found.update(m["name"] for m in _FEATURE_NAME.finditer(condition))
    return frozenset(found)


def docs_rs_features(
    manifest: dict[str, Any], nightly: frozenset[str] = frozenset()
) -> Features | None:
    """The features selected by ``[package.metadata.docs.rs]`` that a stable toolchain can
    build (without ``nightly`` ones), or None if it selects none or needs compiler arguments."""
    package = manifest.get("package", {})
    metadata = package.get("metadata", {}) if isinstance(package, dict) else {}
    docs = metadata.get("docs") if isinstance(metadata, dict) else None
    docs = docs.get("rs") if isinstance(docs, dict) else None
    if not isinstance(docs, dict):
        return None
    features = docs.get("features", [])
    all_features = docs.get("all-features", False)
    no_default = docs.get("no-default-features", False)
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise FormatError("[package.metadata.docs.rs]", "features is not a list of strings")
    if not isinstance(all_features, bool) or not isinstance(no_default, bool):
        raise FormatError("[package.metadata.docs.rs]", "all-features and no-default-features")
    if not features and not all_features and not no_default:
        return None
    if docs.get("rustc-args") or _unstable_cfgs(docs.get("rustdoc-args")):
        return None  # docs.rs passes compiler flags (often --cfg ..._unstable) we do not
    declared = manifest.get("features", {})
    declared = declared if isinstance(declared, dict) else {}
    nightly = needing(declared, nightly)
    if all_features and nightly:  # all of them but those that need nightly
        features = list(declared)
        all_features = False
    features = [f for f in features if f not in nightly]
    return Features(tuple(features), not no_default, all_features).normalized()


def _unstable_cfgs(args: object) -> list[str]:
    """The ``--cfg`` names of docs.rs ``rustdoc-args`` other than ``docsrs...``: a selection
    that needs them fails without them (hyper's ``ffi`` is a compile_error! unless
    ``--cfg hyper_unstable_ffi``), while ``--cfg docsrs`` only changes documentation.

    >>> _unstable_cfgs(["--cfg", "docsrs", "--cfg=hyper_unstable_ffi", "--html-in-header", "x"])
    ['hyper_unstable_ffi']
    """
    if not isinstance(args, list):
        return []
    names = []
    for i, arg in enumerate(args):
        if arg == "--cfg" and i + 1 < len(args):
            names.append(str(args[i + 1]))
        elif isinstance(arg, str) and arg.startswith("--cfg="):
            names.append(arg[len("--cfg=") :])
    return [name for name in names if not name.startswith("docsrs")]


def needing(declared: dict[str, Any], nightly: frozenset[str]) -> frozenset[str]:
    """``nightly`` and every declared feature that turns one of them on, directly or through
    other features (regex's ``unstable = ["pattern"]``). Entries ``dep:x`` and ``x/y`` turn
    on dependencies, not features of this crate.

    >>> sorted(needing({"unstable": ["pattern"], "all": ["unstable", "std"], "std": []},
    ...                frozenset({"pattern"})))
    ['all', 'pattern', 'unstable']
    """
    found = set(nightly)
    changed = True
    while changed:
        changed = False
        for name, enables in declared.items():
            if name in found or not isinstance(enables, list):
                continue
            if any(isinstance(e, str) and e in found for e in enables):
                found.add(name)
                changed = True
    return frozenset(found)
