"""RFC 8785 (JCS) canonical JSON for the value types of Synchronicity's log entries.

Log entries are signed over their canonical JSON, so every party must produce, and accept,
exactly one byte string per value. We support the subset of JSON our formats use:

* objects with string keys (``dict[str, ...]``), arrays (``list``), strings, booleans, null;
* integers in the I-JSON safe range ``[-(2**53 - 1), 2**53 - 1]``; floats are rejected, so the
  number serialisation of RFC 8785 §3.2.2.3 reduces to plain decimal integers.

``encode`` writes RFC 8785 output: no whitespace, object members sorted by the UTF-16 code units
of their names, strings escaped as ECMAScript's ``JSON.stringify`` does (only ``"``, ``\\`` and
control characters; ``\\b \\t \\n \\f \\r`` short forms, other controls as lowercase ``\\u00xx``),
UTF-8 output. ``decode`` is strict: it accepts an input only if it is exactly the canonical
encoding of the value it denotes, so duplicate keys, whitespace, wrong member order, needless
escapes, ``-0``, exponents, floats, lone surrogates, invalid UTF-8, excessive nesting and
oversized input all raise :class:`~logserver.core.errors.FormatError`.

``parse`` is the one reader of JSON that is not canonical (a server's answer, a config file,
an index line), with the same limits: the size is checked before parsing, nesting is bounded
(Python's recursive parser raises ``RecursionError`` on deep input, which must never escape a
request handler or kill a thread), duplicate keys and ``NaN``/``Infinity`` are refused.
``decode`` is ``parse`` plus the canonical-form check. Every JSON that comes from the network
goes through one of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from logserver.core.errors import FormatError

# A JSON value as this module produces it. (Recursive aliases are checked loosely by mypy,
# hence ``Any`` inside the containers.)
JsonValue = dict[str, Any] | list[Any] | str | int | bool | None
JsonObject = dict[str, Any]

MAX_SAFE_INTEGER = 2**53 - 1
DEFAULT_MAX_BYTES = 1 << 20
DEFAULT_MAX_DEPTH = 32

_WHAT = "canonical JSON"
_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')


def _escape_char(match: re.Match[str]) -> str:
    char = match.group(0)
    return _SHORT_ESCAPES.get(char) or f"\\u{ord(char):04x}"


def _encode_string(text: str, what: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FormatError(what, "string contains a lone surrogate") from exc
    return '"' + _NEEDS_ESCAPE.sub(_escape_char, text) + '"'


def _utf16_order(key: str) -> bytes:
    # Big-endian UTF-16 bytes compare exactly like sequences of UTF-16 code units.
    return key.encode("utf-16-be", errors="surrogatepass")


def _encode_value(value: object, depth: int, max_depth: int, out: list[str], what: str) -> None:
    if depth > max_depth:
        raise FormatError(what, f"nesting deeper than {max_depth}")
    # bool before int: bool is a subclass of int.
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise FormatError(what, f"integer {value} outside the safe range ±(2**53 - 1)")
        out.append(str(int(value)))
    elif isinstance(value, str):
        out.append(_encode_string(value, what))
    elif isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise FormatError(what, f"object key {key!r} is not a string")
        out.append("{")
        for position, key in enumerate(sorted(value, key=_utf16_order)):
            if position:
                out.append(",")
            out.append(_encode_string(key, what))
            out.append(":")
            _encode_value(value[key], depth + 1, max_depth, out, what)
        out.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        out.append("[")
        for position, item in enumerate(value):
            if position:
                out.append(",")
            _encode_value(item, depth + 1, max_depth, out, what)
        out.append("]")
    elif isinstance(value, float):
        raise FormatError(what, "floating-point numbers are not allowed")
    else:
        raise FormatError(what, f"unsupported value type {type(value).__name__}")


def encode(value: object, what: str = _WHAT, *, max_depth: int = DEFAULT_MAX_DEPTH) -> bytes:
    """Return the RFC 8785 canonical encoding of ``value`` (UTF-8 bytes).

    Raises FormatError for values outside the supported subset (floats, big integers,
    non-string keys, lone surrogates, nesting deeper than ``max_depth``).
    """
    out: list[str] = []
    _encode_value(value, 1, max_depth, out, what)
    return "".join(out).encode("utf-8")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, item in pairs:
        if key in result:
            raise FormatError(_WHAT, f"duplicate object key {key!r}")
        result[key] = item
    return result


def _reject_float(text: str) -> float:
    raise FormatError(_WHAT, f"number {text!r} is not an integer")


def _reject_constant(text: str) -> float:
    raise FormatError(_WHAT, f"{text} is not JSON")


def _check_depth(value: object, max_depth: int, what: str) -> None:
    """Refuse ``value`` if a member lies deeper than ``max_depth`` (the top level is 1)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise FormatError(what, f"nesting deeper than {max_depth}")
        if isinstance(item, dict):
            stack.extend((member, depth + 1) for member in item.values())
        elif isinstance(item, list):
            stack.extend((member, depth + 1) for member in item)


def _parse(data: bytes, what: str, max_bytes: int, max_depth: int, floats: bool) -> Any:
    if len(data) > max_bytes:
        raise FormatError(what, f"{len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(what, "not valid UTF-8") from exc
    try:
        value = json.loads(
            text,
            object_pairs_hook=_reject_duplicates,
            parse_float=float if floats else _reject_float,
            parse_constant=_reject_constant,
        )
    except FormatError as exc:  # from the hooks below, which do not know ``what``
        raise FormatError(what, exc.reason) from exc
    except json.JSONDecodeError as exc:
        raise FormatError(what, f"not JSON: {exc.msg} at offset {exc.pos}") from exc
    except ValueError as exc:  # e.g. an integer literal with thousands of digits
        raise FormatError(what, str(exc)) from exc
    except RecursionError as exc:  # the parser's own bound, far above max_depth
        raise FormatError(what, f"nesting deeper than {max_depth}") from exc
    _check_depth(value, max_depth, what)
    return value


def parse(
    data: bytes,
    what: str = "JSON",
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """Parse JSON that need not be canonical (floats allowed), within the limits.

    Raises FormatError for more than ``max_bytes``, invalid UTF-8, anything that is not JSON,
    duplicate keys, ``NaN``/``Infinity`` and nesting deeper than ``max_depth``.
    """
    return _parse(data, what, max_bytes, max_depth, floats=True)


def decode(
    data: bytes,
    what: str = _WHAT,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> JsonValue:
    """Parse ``data``, accepting it only if it is the canonical encoding of its value.

    Raises FormatError for anything else (see the module docstring).
    """
    value: JsonValue = _parse(data, what, max_bytes, max_depth, floats=False)
    # Re-encoding enforces every canonical-form rule.
    if encode(value, what, max_depth=max_depth) != data:
        raise FormatError(what, "not in canonical form (RFC 8785)")
    return value


def decode_object(
    data: bytes,
    what: str = _WHAT,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> JsonObject:
    """Like :func:`decode`, but the top-level value must be an object."""
    value = decode(data, what, max_bytes=max_bytes, max_depth=max_depth)
    if not isinstance(value, dict):
        raise FormatError(what, "top-level value is not an object")
    return value
