"""Canonical JSON (RFC 8785 for the value types we use) and its strict decoder.

Recipes and output manifests are hashed, so their bytes must be unique for a value. The value
types allowed are objects with string keys, arrays, strings, integers within the I-JSON range
(|n| <= 2**53 - 1), booleans and null; floats are refused. Encoding: UTF-8, members sorted by
the UTF-16 code units of their keys, no insignificant whitespace, and the JSON string escapes
of RFC 8785 (``\\b \\f \\n \\r \\t \\" \\\\``, other controls as ``\\u00xx``, everything else
literal). The decoder accepts only bytes that are already canonical.
"""

from __future__ import annotations

import json
from typing import Any

from logserver.errors import FormatError

JsonValue = Any  # dict[str, JsonValue] | list[JsonValue] | str | int | bool | None

MAX_SAFE_INTEGER = 2**53 - 1


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", errors="surrogatepass")


def _normalise(value: JsonValue, what: str) -> JsonValue:
    """Check the value's types and return it with every object's members in canonical order."""
    if value is None or isinstance(value, bool | str):
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise FormatError(what, "string is not valid Unicode (lone surrogate)") from exc
        return value
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise FormatError(what, f"integer {value} is outside the I-JSON range")
        return value
    if isinstance(value, list | tuple):
        return [_normalise(item, what) for item in value]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise FormatError(what, f"object key {key!r} is not a string")
        ordered = sorted(value, key=_utf16_key)
        return {key: _normalise(value[key], what) for key in ordered}
    raise FormatError(what, f"value of type {type(value).__name__} is not allowed")


def encode(value: JsonValue, what: str = "canonical JSON") -> bytes:
    """Return the canonical encoding of ``value``."""
    normalised = _normalise(value, what)
    text = json.dumps(normalised, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8")


def _reject_float(text: str) -> float:
    raise ValueError(f"number {text} is not an integer")


def _reject_constant(text: str) -> float:
    raise ValueError(f"{text} is not JSON")


def _unique_members(pairs: list[tuple[str, JsonValue]]) -> dict[str, JsonValue]:
    result: dict[str, JsonValue] = {}
    for key, item in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = item
    return result


def decode(data: bytes, what: str = "canonical JSON") -> JsonValue:
    """Parse ``data`` and insist that it is exactly the canonical encoding of its value."""
    try:
        text = data.decode("utf-8")
        value = json.loads(
            text,
            parse_float=_reject_float,
            parse_constant=_reject_constant,
            object_pairs_hook=_unique_members,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FormatError(what, str(exc)) from exc
    if encode(value, what) != data:
        raise FormatError(what, "not in canonical form (RFC 8785)")
    return value
