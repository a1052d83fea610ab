"""Recipes: canonical JSON encoding, strict decoding, job ids (pure, exhaustive and fuzzed)."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from builder.recipe import ARTIFACT_KINDS, SOURCE_LOCAL, Recipe, Toolchain, from_json, from_value
from logserver.core import canonical_json
from logserver.core.errors import FormatError

LOCK = 'version = 4\n\n[[package]]\nname = "itoa"\nversion = "1.0.11"\n'
TOOLCHAIN = Toolchain(rustc_version="1.95.0", commit_hash="5" * 40, files_sha256="a" * 64)


def make_recipe(**changes: object) -> Recipe:
    fields: dict[str, object] = {
        "name": "itoa",
        "version": "1.0.11",
        "crate_sha256": "49f1f14873335454500d59611f1cf4a4b0f786f9ac11f4312a78e4cf2566695b",
        "cargo_lock": LOCK,
        "toolchain": TOOLCHAIN,
        "rootfs_sha256": "b" * 64,
    }
    fields.update(changes)
    return Recipe(**fields)  # type: ignore[arg-type]


def test_canonical_encoding_is_sorted_compact_utf8() -> None:
    data = make_recipe().to_json()
    value = json.loads(data)
    assert (
        data
        == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert data.startswith(b'{"artifacts":["bin","cdylib","rlib","staticlib"],"build_env":')
    assert b'"cargo_lock":"version = 4\\n\\n[[package]]\\nname = \\"itoa\\"' in data


def test_job_id_is_sha256_of_canonical_bytes() -> None:
    recipe = make_recipe()
    assert recipe.job_id == hashlib.sha256(recipe.to_json()).hexdigest()
    assert make_recipe(features=("std",)).job_id != recipe.job_id
    assert make_recipe(source=SOURCE_LOCAL).job_id != recipe.job_id


def test_round_trip() -> None:
    recipe = make_recipe(features=("a", "b"), default_features=False, artifacts=("bin",))
    assert from_json(recipe.to_json()) == recipe


@pytest.mark.parametrize(
    "mutation",
    [
        lambda v: v.update(extra=1),
        lambda v: v.pop("name"),
        lambda v: v.update(schema="synchronicity/recipe/v2"),
        lambda v: v.update(ecosystem="npm"),
        lambda v: v.update(name="bad name"),
        lambda v: v.update(version="1.0"),
        lambda v: v.update(version="01.0.0"),
        lambda v: v.update(crate_sha256="A" * 64),
        lambda v: v.update(crate_sha256="a" * 63),
        lambda v: v.update(features=["b", "a"]),
        lambda v: v.update(features=["a", "a"]),
        lambda v: v.update(features="a"),
        lambda v: v.update(artifacts=[]),
        lambda v: v.update(artifacts=["dylib"]),
        lambda v: v.update(default_features=1),
        lambda v: v.update(cargo_lock=""),
        lambda v: v.update(source="github"),
        lambda v: v["toolchain"].update(commit_hash="zz"),
        lambda v: v["toolchain"].update(extra="x"),
        lambda v: v["build_env"].pop("rootfs_sha256"),
        lambda v: v.update(toolchain=[]),
    ],
)
def test_invalid_recipes_are_refused(mutation: object) -> None:
    value = make_recipe().to_value()
    mutation(value)  # type: ignore[operator]
    with pytest.raises(FormatError):
        from_value(value)
    with pytest.raises(FormatError):
        from_json(canonical_json.encode(value))


@pytest.mark.parametrize(
    "transform",
    [
        lambda data: data.replace(b'{"artifacts"', b'{ "artifacts"', 1),
        lambda data: data + b"\n",
        lambda data: (
            json.dumps(json.loads(data), ensure_ascii=True, separators=(",", ":"), sort_keys=True)
            .encode()
            .replace(b"itoa", b"\\u0069toa")
        ),
        lambda data: data.replace(b'"artifacts":["bin","cdylib","rlib","staticlib"],', b"") + b"",
        lambda data: data[:-1] + b',"name":"itoa"}',
        lambda data: b"\xef\xbb\xbf" + data,
    ],
)
def test_non_canonical_bytes_are_refused(transform: object) -> None:
    data = make_recipe().to_json()
    with pytest.raises(FormatError):
        from_json(transform(data))  # type: ignore[operator]


def test_canonjson_rfc8785_details() -> None:
    assert canonical_json.encode({"b": 1, "a": [True, None, "x"]}) == b'{"a":[true,null,"x"],"b":1}'
    assert canonical_json.encode('\u0001\n"\\é€') == '"\\u0001\\n\\"\\\\é€"'.encode()
    # Keys sort by UTF-16 code units: U+1F600 (D83D DE00) sorts before U+FB33.
    assert (
        canonical_json.encode({"\ufb33": 1, "\U0001f600": 2})
        == '{"\U0001f600":2,"\ufb33":1}'.encode()
    )
    for bad in (1.5, float("nan"), 2**53, -(2**53), {1: 2}, "\ud800", b"x"):
        with pytest.raises(FormatError):
            canonical_json.encode(bad)
    for bad_bytes in (
        b"1.0",
        b"1e3",
        b"-0",
        b'{"a":1,"a":1}',
        b"NaN",
        b"\xff",
        b'"\\u00e9"',
        b"[1, 2]",
    ):
        with pytest.raises(FormatError):
            canonical_json.decode(bad_bytes)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_canonjson_round_trip_fuzz(value: object) -> None:
    encoded = canonical_json.encode(value)
    assert canonical_json.decode(encoded) == value
    assert canonical_json.encode(json.loads(encoded)) == encoded


@given(st.binary(max_size=200))
def test_canonjson_decode_never_crashes(data: bytes) -> None:
    try:
        value = canonical_json.decode(data)
    except FormatError:
        return
    assert canonical_json.encode(value) == data


feature_names = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)


@given(
    features=st.lists(feature_names, unique=True, max_size=4).map(lambda f: tuple(sorted(f))),
    artifacts=st.lists(st.sampled_from(ARTIFACT_KINDS), unique=True, min_size=1).map(
        lambda a: tuple(sorted(a))
    ),
    default_features=st.booleans(),
    lock=st.text(min_size=1, max_size=50),
)
def test_recipe_round_trip_fuzz(
    features: tuple[str, ...], artifacts: tuple[str, ...], default_features: bool, lock: str
) -> None:
    try:
        lock.encode("utf-8")
    except UnicodeEncodeError:
        return
    recipe = make_recipe(
        features=features, artifacts=artifacts, default_features=default_features, cargo_lock=lock
    )
    data = recipe.to_json()
    assert from_json(data) == recipe
    assert from_json(data).job_id == recipe.job_id
    assert dataclasses.replace(recipe, profile="dev").job_id != recipe.job_id
