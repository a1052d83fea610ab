"""Checkpoints (c2sp.org/tlog-checkpoint): the note text that commits to a log's Merkle tree.

::

    <origin>
    <tree size in decimal, no leading zeros>
    <base64 of the 32-byte RFC 6962 root hash>
    [<extension line>]...

Parsing is strict: every line ends in a newline, the origin and extension lines are non-empty,
the size has no sign and no leading zeros and is below 2^63, the root is canonical base64 of
exactly 32 bytes, and the text has no control characters but newlines. Pure logic, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from logserver.core.errors import FormatError, UsageError
from logserver.core.note import b64decode_strict, b64encode, parse_decimal

MAX_CHECKPOINT_BYTES = 64 * 1024
MAX_EXTENSION_LINES = 64
MAX_TREE_SIZE = 1 << 63
HASH_SIZE = 32


def _bad_line(line: str) -> str | None:
    if not line:
        return "empty line"
    if not line.isprintable() and any(0xD800 <= ord(c) <= 0xDFFF for c in line):
        return "unpaired surrogate"
    for char in line:
        if char < " ":
            return f"control character U+{ord(char):04X}"
    return None


@dataclass(frozen=True)
class Checkpoint:
    """A log's signed tree head: origin, tree size, root hash and opaque extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problem = _bad_line(self.origin)
        if problem:
            raise UsageError(f"checkpoint origin: {problem}")
        if not 0 <= self.size < MAX_TREE_SIZE:
            raise UsageError(f"checkpoint size {self.size} out of range")
        if len(self.root_hash) != HASH_SIZE:
            raise UsageError("checkpoint root hash must be 32 bytes")
        if len(self.extensions) > MAX_EXTENSION_LINES:
            raise UsageError(f"at most {MAX_EXTENSION_LINES} extension lines")
        for line in self.extensions:
            problem = _bad_line(line)
            if problem:
                raise UsageError(f"checkpoint extension line: {problem}")

    @classmethod
    def parse(cls, text: bytes) -> Checkpoint:
        """Parse a checkpoint body (the note text, without the signatures)."""
        if len(text) > MAX_CHECKPOINT_BYTES:
            raise FormatError("checkpoint", f"larger than {MAX_CHECKPOINT_BYTES} bytes")
        try:
            decoded = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError("checkpoint", "not valid UTF-8") from exc
        if not decoded.endswith("\n"):
            raise FormatError("checkpoint", "must end in a newline")
        lines = decoded[:-1].split("\n")
        if len(lines) < 3:
            raise FormatError("checkpoint", "needs origin, size and root hash lines")
        if len(lines) > 3 + MAX_EXTENSION_LINES:
            raise FormatError("checkpoint", f"more than {MAX_EXTENSION_LINES} extension lines")
        for number, line in enumerate(lines, start=1):
            problem = _bad_line(line)
            if problem:
                raise FormatError("checkpoint", f"line {number}: {problem}")
        origin, size_text, root_text, *extensions = lines
        size = parse_decimal(size_text, "checkpoint size", MAX_TREE_SIZE)
        root_hash = b64decode_strict(root_text, "checkpoint root hash")
        if len(root_hash) != HASH_SIZE:
            raise FormatError("checkpoint", f"root hash is {len(root_hash)} bytes, want 32")
        return cls(origin, size, root_hash, tuple(extensions))

    def to_bytes(self) -> bytes:
        lines = [self.origin, str(self.size), b64encode(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines).encode("utf-8")
