"""Versions and features as users say them: the newest version, docs.rs features (pure)."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from builder.choice import docs_rs_features, newest_version, nightly_features, semver_key
from builder.recipe import Features, Toolchain, from_json, from_value
from builder.recipe import Recipe as RecipeValue
from builder.sources import index_versions
from logserver.core.errors import FormatError, UsageError
from synchronicity import cli
from synchronicity.cmd_build import feature_choice

PRECEDENCE = [
    "0.9.9",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1+build.5",
    "1.2.0",
    "1.10.0",
    "10.0.0",
]


def test_semver_precedence() -> None:
    assert sorted(reversed(PRECEDENCE), key=semver_key) == PRECEDENCE
    assert semver_key("0.25.19+spec-1.1.0") == semver_key("0.25.19")
    for bad in ("1.0", "01.0.0", "1.0.0-", "v1.0.0", "1.0.0-a..b"):
        with pytest.raises(FormatError):
            semver_key(bad)


def test_newest_version_skips_yanked_and_prereleases_unless_asked() -> None:
    versions = [
        ("1.0.9", False),
        ("1.0.10", False),
        ("1.0.11", True),  # yanked
        ("1.1.0-rc.1", False),
        ("1.0.2", False),
    ]
    assert newest_version("itoa", versions) == "1.0.10"
    assert newest_version("itoa", versions, pre=True) == "1.1.0-rc.1"
    assert newest_version("itoa", [*versions, ("1.1.0", False)], pre=True) == "1.1.0"
    with pytest.raises(UsageError, match="pre-releases need --pre"):
        newest_version("only-pre", [("0.1.0-alpha", False)])
    assert newest_version("only-pre", [("0.1.0-alpha", False)], pre=True) == "0.1.0-alpha"
    with pytest.raises(UsageError, match="no version"):
        newest_version("all-yanked", [("0.1.0", True)], pre=True)


def test_index_versions_reads_yanked_flags() -> None:
    lines = [
        {
            "name": "x",
            "vers": "0.1.0",
            "deps": [],
            "cksum": "0" * 64,
            "features": {},
            "yanked": True,
        },
        {
            "name": "x",
            "vers": "0.2.0",
            "deps": [],
            "cksum": "1" * 64,
            "features": {},
            "yanked": False,
        },
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n\n"
    assert index_versions(text) == [("0.1.0", True), ("0.2.0", False)]
    with pytest.raises(FormatError):
        index_versions('{"name": "x"}\n')


def _docs(table: object) -> dict[str, object]:
    return {"package": {"name": "x", "metadata": {"docs": {"rs": table}}}}


def test_docs_rs_metadata_selects_features() -> None:
    assert docs_rs_features({"package": {"name": "x"}}) is None
    assert docs_rs_features(_docs({"rustdoc-args": ["--cfg", "docsrs"]})) is None
    assert docs_rs_features(_docs({"features": ["rc", "derive", "rc"]})) == Features(
        ("derive", "rc"), True, False
    )
    assert docs_rs_features(_docs({"all-features": True, "features": ["x"]})) == Features(
        (), True, True
    )
    assert docs_rs_features(_docs({"no-default-features": True, "features": ["alloc"]})) == (
        Features(("alloc",), False, False)
    )
    for bad in ({"features": "derive"}, {"all-features": "yes"}, {"features": [1]}):
        with pytest.raises(FormatError):
            docs_rs_features(_docs(bad))
    assert Features(("b", "a")).normalized().describe() == "features a,b"
    assert Features((), False).describe() == "no default features"
    assert Features().describe() == "default features"


def test_docs_rs_selection_is_what_a_stable_toolchain_can_build() -> None:
    """docs.rs builds with nightly and its rustc-args: serde asks for "unstable", which turns
    on compiler features; tokio asks for all features with --cfg tokio_unstable."""
    serde_sources = [
        '#![cfg_attr(feature = "unstable", feature(never_type))]\n',
        '#![cfg_attr(all(feature = "std", feature = "x"), feature(y))]\n#![no_std]\n',
        '#![cfg_attr(not(feature = "alloc"), feature(z))]\n',
        '#[cfg(feature = "derive")]\npub use serde_derive::*;\n',
    ]
    nightly = nightly_features(serde_sources)
    assert nightly == {"unstable", "std", "x"}
    serde = _docs({"features": ["derive", "rc", "unstable"]})
    assert docs_rs_features(serde, frozenset({"unstable"})) == Features(("derive", "rc"))
    tokio = _docs({"all-features": True, "rustc-args": ["--cfg", "tokio_unstable"]})
    assert docs_rs_features(tokio) is None  # the crate's defaults, not a build that fails
    everything = {**_docs({"all-features": True}), "features": {"a": [], "nightly": []}}
    assert docs_rs_features(everything, frozenset({"nightly"})) == Features(("a",))
    assert docs_rs_features(everything) == Features((), True, True)


def test_a_feature_that_turns_on_a_nightly_one_is_left_out_too() -> None:
    """regex 1.13.2 asks docs.rs for all features; ``pattern`` needs nightly, and ``unstable``
    turns it on: building ``unstable`` failed on every builder of the top-100 campaign."""
    regex = {
        **_docs({"all-features": True}),
        "features": {
            "default": ["std", "perf"],
            "std": ["aho-corasick?/std", "dep:memchr"],
            "perf": [],
            "pattern": [],
            "unstable": ["pattern"],
            "everything": ["unstable", "std"],
        },
    }
    chosen = docs_rs_features(regex, frozenset({"pattern"}))
    assert chosen == Features(("default", "perf", "std"))
    named = {**_docs({"features": ["std", "unstable"]}), "features": regex["features"]}
    assert docs_rs_features(named, frozenset({"pattern"})) == Features(("std",))


def test_a_selection_that_needs_rustdoc_cfgs_is_not_followed() -> None:
    """hyper 1.12.0 asks docs.rs for ffi, full, tracing with rustdoc-args --cfg
    hyper_unstable_ffi: without that cfg, ffi is a compile_error! (it failed on every builder of
    the top-100 campaign). ``--cfg docsrs`` alone changes only the documentation."""
    hyper = _docs(
        {
            "features": ["ffi", "full", "tracing"],
            "rustdoc-args": ["--cfg", "hyper_unstable_ffi", "--cfg", "hyper_unstable_tracing"],
        }
    )
    assert docs_rs_features(hyper) is None
    tokio_like = _docs({"features": ["full"], "rustdoc-args": ["--cfg", "docsrs"]})
    assert docs_rs_features(tokio_like) == Features(("full",))
    assert (
        docs_rs_features(_docs({"features": ["a"], "rustdoc-args": ["--cfg=x_unstable"]})) is None
    )


def _recipe(**changes: object) -> RecipeValue:
    base = RecipeValue(
        name="x",
        version="1.0.0",
        crate_sha256="0" * 64,
        cargo_lock="version = 4\n",
        toolchain=Toolchain("1.95.0", "a" * 40, "b" * 64),
        rootfs_sha256="c" * 64,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_all_features_is_a_recipe_member_only_when_true() -> None:
    plain = _recipe()
    assert b"all_features" not in plain.to_json()
    everything = _recipe(all_features=True)
    assert b'"all_features":true' in everything.to_json()
    assert from_json(everything.to_json()) == everything
    assert everything.job_id != plain.job_id
    value = json.loads(plain.to_json())
    with pytest.raises(FormatError, match="only when true"):
        from_value(value | {"all_features": False})
    for conflicting in ({"features": ("a",)}, {"default_features": False}):
        with pytest.raises(FormatError, match="all_features excludes"):
            _recipe(all_features=True, **conflicting)


def _args(*argv: str) -> argparse.Namespace:
    return cli._parser().parse_args(["build", "serde", *argv])


def test_command_line_features() -> None:
    assert feature_choice(_args()) is None  # the crate says (docs.rs), else its defaults
    assert feature_choice(_args("--features", "rc, derive derive")) == Features(
        ("derive", "rc"), True, False
    )
    assert feature_choice(_args("--no-default-features")) == Features((), False, False)
    assert feature_choice(_args("--all-features")) == Features((), True, True)
    with pytest.raises(UsageError):
        feature_choice(_args("--all-features", "--features", "x"))
    rebuild = cli._parser().parse_args(["rebuild", "serde", "--features", "derive", "--pre"])
    assert feature_choice(rebuild) == Features(("derive",), True, False) and rebuild.pre
