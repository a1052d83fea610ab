"""Strict, bounded, canonical binary encoding used by every consensus message.

Integers are unsigned big-endian of fixed width; byte strings carry a length prefix and an
upper bound. A :class:`Reader` rejects truncated input, oversized fields and trailing bytes
with :class:`~logserver.core.errors.FormatError`, so that one value has exactly one encoding.
"""

from __future__ import annotations

import struct

from logserver.core.errors import FormatError

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class Writer:
    """Accumulates an encoding; ``getvalue()`` returns the bytes."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> None:
        self._parts.append(_U8.pack(value))

    def u16(self, value: int) -> None:
        self._parts.append(_U16.pack(value))

    def u32(self, value: int) -> None:
        self._parts.append(_U32.pack(value))

    def u64(self, value: int) -> None:
        self._parts.append(_U64.pack(value))

    def fixed(self, data: bytes) -> None:
        self._parts.append(data)

    def var16(self, data: bytes) -> None:
        self._parts.append(_U16.pack(len(data)))
        self._parts.append(data)

    def var32(self, data: bytes) -> None:
        self._parts.append(_U32.pack(len(data)))
        self._parts.append(data)

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads an encoding strictly; ``what`` names the format in error messages."""

    __slots__ = ("_data", "_pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self.what = what

    def _take(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise FormatError(self.what, "truncated")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self) -> int:
        value: int = _U8.unpack(self._take(1))[0]
        return value

    def u16(self) -> int:
        value: int = _U16.unpack(self._take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self._take(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack(self._take(8))[0]
        return value

    def fixed(self, size: int) -> bytes:
        return self._take(size)

    def var16(self, limit: int) -> bytes:
        size = self.u16()
        if size > limit:
            raise FormatError(self.what, f"field of {size} bytes exceeds {limit}")
        return self._take(size)

    def var32(self, limit: int) -> bytes:
        size = self.u32()
        if size > limit:
            raise FormatError(self.what, f"field of {size} bytes exceeds {limit}")
        return self._take(size)

    def flag(self) -> bool:
        value = self.u8()
        if value > 1:
            raise FormatError(self.what, f"flag byte {value} is neither 0 nor 1")
        return value == 1

    def end(self) -> None:
        if self._pos != len(self._data):
            raise FormatError(self.what, f"{len(self._data) - self._pos} trailing bytes")
