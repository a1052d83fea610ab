"""Tests of logserver.core.canonical_json: RFC 8785 examples, strict decoding, and properties."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logserver.core import canonical_json
from logserver.core.canonical_json import MAX_SAFE_INTEGER, decode, decode_object, encode
from logserver.core.errors import FormatError

# RFC 8785 §3.2.3: members sorted by UTF-16 code units (the emoji, a surrogate pair, sorts
# before U+FB33 although its code point is larger).
RFC8785_SORTING_INPUT = {
    "\u20ac": "Euro Sign",
    "\r": "Carriage Return",
    "\ufb33": "Hebrew Letter Dalet With Dagesh",
    "1": "One",
    "\U0001f600": "Emoji: Grinning Face",
    "\u0080": "Control",
    "\u00f6": "Latin Small Letter O With Diaeresis",
}
RFC8785_SORTED_KEYS = ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def test_rfc8785_sorting_example() -> None:
    data = encode(RFC8785_SORTING_INPUT)
    assert list(json.loads(data)) == RFC8785_SORTED_KEYS
    assert data.startswith(b'{"\\r":"Carriage Return","1":"One","\xc2\x80":"Control"')
    assert decode(data) == RFC8785_SORTING_INPUT


def test_rfc8785_example_without_numbers() -> None:
    # RFC 8785 §3.2.2 example, minus its "numbers" member (floats are outside our subset).
    source = (
        '{\n  "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",\n'
        '  "literals": [null, true, false]\n}'
    )
    expected = '{"literals":[null,true,false],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    assert encode(json.loads(source)) == expected.encode()
    assert decode(expected.encode()) == json.loads(source)
    with pytest.raises(FormatError, match="canonical"):
        decode(source.encode())


@pytest.mark.parametrize("code", range(0x20))
def test_control_characters_escaped_like_ecmascript(code: int) -> None:
    short = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}
    expected = short.get(code, f"\\u{code:04x}")
    assert encode(chr(code)) == f'"{expected}"'.encode()
    assert decode(f'"{expected}"'.encode()) == chr(code)


def test_non_control_characters_are_literal() -> None:
    text = "\x7f\u2028\u2029é/<>&'"
    assert encode(text) == ('"' + text + '"').encode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, b"0"),
        (-1, b"-1"),
        (MAX_SAFE_INTEGER, b"9007199254740991"),
        (-MAX_SAFE_INTEGER, b"-9007199254740991"),
        (True, b"true"),
        (None, b"null"),
        ([], b"[]"),
        ({}, b"{}"),
        ({"b": [1, {"a": None}], "a": ""}, b'{"a":"","b":[1,{"a":null}]}'),
        (("tuple", 1), b'["tuple",1]'),
    ],
)
def test_known_encodings(value: object, expected: bytes) -> None:
    assert encode(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        1.0,
        float("nan"),
        MAX_SAFE_INTEGER + 1,
        -MAX_SAFE_INTEGER - 1,
        {1: "a"},
        b"x",
        {1, 2},
        "\ud800",
    ],
)
def test_encode_rejects_unsupported_values(value: object) -> None:
    with pytest.raises(FormatError):
        encode(value)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b" 1",
        b"1 ",
        b'{"a":1,"a":1}',
        b'{"b":1,"a":2}',
        b'{"a": 1}',
        b"[1,2,]",
        b"1.0",
        b"1e2",
        b"-0",
        b"01",
        b"9007199254740992",
        b"-9007199254740992",
        b"1" * 5000,
        b"NaN",
        b"Infinity",
        b'"\\u0041"',
        b'"\\/"',
        b'"\\u001F"',
        b'"\x01"',
        b'"\\ud800"',
        b'"\\udc00\\ud800"',
        b'"\xff"',
        b'"\xed\xa0\x80"',
        b'"unterminated',
        b"tru",
        b"[" * 33 + b"]" * 33,
    ],
)
def test_decode_rejects_non_canonical_input(data: bytes) -> None:
    with pytest.raises(FormatError):
        decode(data)


def test_depth_and_size_bounds() -> None:
    nested: Any = []
    for _ in range(31):
        nested = [nested]
    assert decode(encode(nested)) == nested
    with pytest.raises(FormatError, match="nesting"):
        encode([nested])
    assert decode(b'"[[[[["', max_depth=1) == "[[[[["
    assert decode(b'"\\"[["', max_depth=1) == '"[['
    with pytest.raises(FormatError, match="exceeds"):
        decode(b'"abcd"', max_bytes=5)
    assert decode(b'"abc"', max_bytes=5) == "abc"


def test_decode_object_requires_an_object() -> None:
    assert decode_object(b'{"a":[]}') == {"a": []}
    with pytest.raises(FormatError, match="not an object"):
        decode_object(b"[]")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"])), children, max_size=5)
    ),
    max_leaves=20,
)


@given(json_values)
def test_round_trip(value: Any) -> None:
    data = encode(value)
    assert decode(data) == value
    assert json.loads(data) == value  # any JSON parser reads our output


@given(st.dictionaries(st.text(), st.integers(0, 9), max_size=8))
def test_encoding_ignores_insertion_order(value: dict[str, int]) -> None:
    reversed_value = dict(reversed(list(value.items())))
    try:
        expected = encode(value)
    except FormatError:  # lone surrogates in generated keys
        return
    assert encode(reversed_value) == expected


@given(json_values)
def test_only_the_canonical_form_is_accepted(value: Any) -> None:
    pretty = json.dumps(value, indent=1, ensure_ascii=True).encode()
    if pretty == encode(value):
        assert decode(pretty) == value
    else:
        with pytest.raises(FormatError):
            decode(pretty)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_format_error(data: bytes) -> None:
    try:
        value = decode(data)
    except FormatError:
        return
    assert encode(value) == data


@pytest.mark.parametrize(
    "data",
    [
        b'"' + b'\\"' * 500_000,  # an unterminated string full of escaped quotes
        b'["' + b'\\\\\\"' * 300_000,
        b"[" * 1_000_000,
        b'{"a":' * 200_000,
        b"[" * 900 + b"]" * 900,
    ],
    ids=["escaped-quotes", "escaped-backslashes", "brackets", "objects", "deep"],
)
def test_adversarial_megabyte_inputs_fail_fast(data: bytes) -> None:
    # Decoding is linear: a quadratic scan would hang the suite on these 1 MiB inputs.
    with pytest.raises(FormatError):
        decode(data[: canonical_json.DEFAULT_MAX_BYTES])
