"""The build recipe: everything that pins one reproducible crate build, and its job id.

A recipe is a value: ``to_json`` gives its canonical JSON bytes
(:mod:`logserver.core.canonical_json`), ``from_json`` parses them strictly, and ``job_id`` is
the hex SHA-256 of those bytes. Two builders that hold the same recipe run the same build;
``spec/builds.md`` documents the fields.
This module is pure: no I/O.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from logserver.core import canonical_json
from logserver.core.errors import FormatError

RECIPE_SCHEMA = "synchronicity/recipe/v1"
ECOSYSTEM_CRATES = "crates"
SOURCE_CRATES_IO = "crates.io"
SOURCE_LOCAL = "local"
ARTIFACT_KINDS = ("bin", "cdylib", "rlib", "staticlib")
DEFAULT_TARGET = "x86_64-unknown-linux-gnu"
MAX_CARGO_LOCK_BYTES = 1 << 20
MAX_RECIPE_BYTES = 2 * MAX_CARGO_LOCK_BYTES

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_GIT_COMMIT = re.compile(r"[0-9a-f]{40}")
_CRATE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_SEMVER = re.compile(
    r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?"
)
_TARGET = re.compile(r"[a-z0-9_]+(-[a-z0-9_.]+){1,4}")
_FEATURE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_+./-]{0,63}")
_RUSTC_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?")
_DIST_URL = re.compile(r"https://[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]{1,500}")
MAX_DIST_COMPONENTS = 32
_PROFILE = re.compile(r"[a-z][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class DistComponent:
    """A component of the toolchain as the Rust project publishes it: the ``xz_url`` and
    ``xz_hash`` of its channel manifest (kept by rustup in the toolchain)."""

    url: str
    sha256: str

    def to_value(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "url": self.url}


@dataclass(frozen=True)
class Toolchain:
    """The Rust toolchain: ``rustc -vV`` release and commit, and the digest of its files.

    ``archive_sha256`` (the archive digest of its canonical archive, where to find it by
    digest) and ``dist`` (its components on the Rust project's dist server) are optional: a
    recipe made before they existed has neither and keeps its bytes and job id.
    """

    rustc_version: str
    commit_hash: str
    files_sha256: str
    archive_sha256: str | None = None
    dist: tuple[DistComponent, ...] = ()

    def to_value(self) -> dict[str, Any]:
        value: dict[str, Any] = {
            "commit_hash": self.commit_hash,
            "files_sha256": self.files_sha256,
            "rustc_version": self.rustc_version,
        }
        if self.archive_sha256 is not None:
            value["archive_sha256"] = self.archive_sha256
        if self.dist:
            value["dist"] = [component.to_value() for component in self.dist]
        return value


@dataclass(frozen=True)
class Features:
    """Which features a build enables: cargo's ``--features``, ``--no-default-features`` and
    ``--all-features``. ``all_features`` implies default features and no feature list."""

    features: tuple[str, ...] = ()
    default_features: bool = True
    all_features: bool = False

    def normalized(self) -> Features:
        """Sorted, unique features; ``all_features`` absorbs the other two."""
        if self.all_features:
            return Features((), True, True)
        return Features(tuple(sorted(set(self.features))), self.default_features, False)

    def describe(self) -> str:
        if self.all_features:
            return "all features"
        words = [] if self.default_features else ["no default features"]
        if self.features:
            words.append("features " + ",".join(self.features))
        return ", ".join(words) or "default features"


@dataclass(frozen=True)
class Recipe:
    """One pinned build of one crate version."""

    name: str
    version: str
    crate_sha256: str
    cargo_lock: str
    toolchain: Toolchain
    rootfs_sha256: str
    source: str = SOURCE_CRATES_IO
    target: str = DEFAULT_TARGET
    profile: str = "release"
    features: tuple[str, ...] = ()
    default_features: bool = True
    artifacts: tuple[str, ...] = ARTIFACT_KINDS
    ecosystem: str = field(default=ECOSYSTEM_CRATES)
    all_features: bool = False
    rootfs_archive_sha256: str | None = None  # the archive digest of the root file system

    def __post_init__(self) -> None:
        validate(self)

    @property
    def selection(self) -> Features:
        return Features(self.features, self.default_features, self.all_features)

    def to_value(self) -> dict[str, Any]:
        # all_features is a member only when true, so that recipes made before it existed
        # keep their bytes and job id, and every recipe still has one encoding.
        extra: dict[str, Any] = {"all_features": True} if self.all_features else {}
        build_env = {"rootfs_sha256": self.rootfs_sha256}
        if self.rootfs_archive_sha256 is not None:  # likewise present only when known
            build_env["rootfs_archive_sha256"] = self.rootfs_archive_sha256
        return extra | {
            "artifacts": list(self.artifacts),
            "build_env": build_env,
            "cargo_lock": self.cargo_lock,
            "crate_sha256": self.crate_sha256,
            "default_features": self.default_features,
            "ecosystem": self.ecosystem,
            "features": list(self.features),
            "name": self.name,
            "profile": self.profile,
            "schema": RECIPE_SCHEMA,
            "source": self.source,
            "target": self.target,
            "toolchain": self.toolchain.to_value(),
            "version": self.version,
        }

    def to_json(self) -> bytes:
        """The canonical encoding: the bytes that are signed, logged and hashed."""
        return canonical_json.encode(self.to_value(), "recipe")

    @property
    def job_id(self) -> str:
        """Hex SHA-256 of the canonical recipe."""
        return hashlib.sha256(self.to_json()).hexdigest()

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"


def _bad(reason: str) -> FormatError:
    return FormatError("recipe", reason)


def _check(pattern: re.Pattern[str], value: object, name: str) -> None:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise _bad(f"{name} {value!r} is not valid")


def _check_sorted_unique(items: tuple[str, ...], name: str) -> None:
    if list(items) != sorted(set(items)):
        raise _bad(f"{name} must be sorted and free of duplicates")


def validate(recipe: Recipe) -> None:
    """Raise FormatError unless every field of ``recipe`` is well formed."""
    if recipe.ecosystem != ECOSYSTEM_CRATES:
        raise _bad(f"ecosystem {recipe.ecosystem!r} is not supported")
    if recipe.source not in (SOURCE_CRATES_IO, SOURCE_LOCAL):
        raise _bad(f"source {recipe.source!r} is not supported")
    _check(_CRATE_NAME, recipe.name, "name")
    _check(_SEMVER, recipe.version, "version")
    _check(_SHA256_HEX, recipe.crate_sha256, "crate_sha256")
    _check(_SHA256_HEX, recipe.rootfs_sha256, "rootfs_sha256")
    _check(_TARGET, recipe.target, "target")
    _check(_PROFILE, recipe.profile, "profile")
    if not isinstance(recipe.cargo_lock, str) or not recipe.cargo_lock:
        raise _bad("cargo_lock must be a non-empty string")
    if len(recipe.cargo_lock.encode("utf-8", errors="surrogatepass")) > MAX_CARGO_LOCK_BYTES:
        raise _bad("cargo_lock is too large")
    if not isinstance(recipe.default_features, bool):
        raise _bad("default_features must be a boolean")
    if not isinstance(recipe.all_features, bool):
        raise _bad("all_features must be a boolean")
    if recipe.all_features and (recipe.features or not recipe.default_features):
        raise _bad("all_features excludes features and default_features = false")
    if not isinstance(recipe.features, tuple) or not isinstance(recipe.artifacts, tuple):
        raise _bad("features and artifacts must be tuples")
    for feature in recipe.features:
        _check(_FEATURE, feature, "feature")
    _check_sorted_unique(recipe.features, "features")
    if not recipe.artifacts:
        raise _bad("artifacts must name at least one kind")
    for kind in recipe.artifacts:
        if kind not in ARTIFACT_KINDS:
            raise _bad(f"artifact kind {kind!r} is not one of {', '.join(ARTIFACT_KINDS)}")
    _check_sorted_unique(recipe.artifacts, "artifacts")
    toolchain = recipe.toolchain
    if not isinstance(toolchain, Toolchain):
        raise _bad("toolchain must be a Toolchain")
    _check(_RUSTC_VERSION, toolchain.rustc_version, "toolchain.rustc_version")
    _check(_GIT_COMMIT, toolchain.commit_hash, "toolchain.commit_hash")
    _check(_SHA256_HEX, toolchain.files_sha256, "toolchain.files_sha256")
    if recipe.rootfs_archive_sha256 is not None:
        _check(_SHA256_HEX, recipe.rootfs_archive_sha256, "build_env.rootfs_archive_sha256")
    if toolchain.archive_sha256 is not None:
        _check(_SHA256_HEX, toolchain.archive_sha256, "toolchain.archive_sha256")
    _check_dist(toolchain.dist)


def _check_dist(dist: tuple[DistComponent, ...]) -> None:
    if not isinstance(dist, tuple) or len(dist) > MAX_DIST_COMPONENTS:
        raise _bad(f"toolchain.dist must be a tuple of at most {MAX_DIST_COMPONENTS} components")
    for component in dist:
        if not isinstance(component, DistComponent):
            raise _bad("toolchain.dist must hold DistComponents")
        _check(_DIST_URL, component.url, "toolchain.dist url")
        _check(_SHA256_HEX, component.sha256, "toolchain.dist sha256")
    urls = [component.url for component in dist]
    if urls != sorted(set(urls)):
        raise _bad("toolchain.dist must be sorted by url and free of duplicates")


def _members(
    value: object, keys: set[str], what: str, optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(f"{what} must be an object")
    if not keys <= set(value) <= keys | optional:
        missing = sorted(keys - set(value))
        extra = sorted(set(value) - keys - optional)
        raise _bad(f"{what} has missing members {missing} or unknown members {extra}")
    return value


def _string_list(value: object, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _bad(f"{name} must be an array of strings")
    return tuple(value)


_MEMBERS = {
    "artifacts",
    "build_env",
    "cargo_lock",
    "crate_sha256",
    "default_features",
    "ecosystem",
    "features",
    "name",
    "profile",
    "schema",
    "source",
    "target",
    "toolchain",
    "version",
}


def from_value(value: object) -> Recipe:
    """Build a Recipe from its JSON value, refusing unknown or missing members."""
    all_features = isinstance(value, dict) and "all_features" in value
    if isinstance(value, dict) and all_features and value["all_features"] is not True:
        raise _bad("all_features is present only when true")
    top = _members(value, _MEMBERS | ({"all_features"} if all_features else set()), "recipe")
    if top["schema"] != RECIPE_SCHEMA:
        raise _bad(f"schema {top['schema']!r} is not {RECIPE_SCHEMA}")
    env = _members(
        top["build_env"], {"rootfs_sha256"}, "build_env", frozenset({"rootfs_archive_sha256"})
    )
    tool = _members(
        top["toolchain"],
        {"commit_hash", "files_sha256", "rustc_version"},
        "toolchain",
        frozenset({"archive_sha256", "dist"}),
    )
    for name in ("name", "version", "crate_sha256", "cargo_lock", "ecosystem", "source"):
        if not isinstance(top[name], str):
            raise _bad(f"{name} must be a string")
    return Recipe(
        name=top["name"],
        version=top["version"],
        crate_sha256=top["crate_sha256"],
        cargo_lock=top["cargo_lock"],
        toolchain=Toolchain(
            rustc_version=tool["rustc_version"],
            commit_hash=tool["commit_hash"],
            files_sha256=tool["files_sha256"],
            archive_sha256=_optional_text(tool, "archive_sha256"),
            dist=_dist(tool),
        ),
        rootfs_sha256=env["rootfs_sha256"],
        rootfs_archive_sha256=_optional_text(env, "rootfs_archive_sha256"),
        source=top["source"],
        target=top["target"],
        profile=top["profile"],
        features=_string_list(top["features"], "features"),
        default_features=top["default_features"],
        artifacts=_string_list(top["artifacts"], "artifacts"),
        ecosystem=top["ecosystem"],
        all_features=all_features,
    )


def _optional_text(value: dict[str, Any], key: str) -> str | None:
    """An optional member: absent is None; present, it must be a string (no null)."""
    if key not in value:
        return None
    if not isinstance(value[key], str):
        raise _bad(f"{key} must be a string")
    return str(value[key])


def _dist(tool: dict[str, Any]) -> tuple[DistComponent, ...]:
    if "dist" not in tool:
        return ()
    items = tool["dist"]
    if not isinstance(items, list) or not items:
        raise _bad("toolchain.dist, when present, is a non-empty array")
    components = []
    for item in items:
        member = _members(item, {"sha256", "url"}, "toolchain.dist component")
        components.append(DistComponent(url=member["url"], sha256=member["sha256"]))
    return tuple(components)


def from_json(data: bytes) -> Recipe:
    """Parse canonical recipe bytes strictly (non-canonical bytes are a FormatError)."""
    return from_value(canonical_json.decode(data, "recipe", max_bytes=MAX_RECIPE_BYTES))
