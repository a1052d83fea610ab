"""Offline proof files (c2sp.org/tlog-proof@v1): an entry's inclusion proof and the cosigned
checkpoint it is checked against, verified against a trust policy.

::

    c2sp.org/tlog-proof@v1
    [extra <base64 opaque data>]
    index <decimal index, no leading zeros>
    <base64 proof hash>            (0 to 64 lines, leaf sibling first)

    <the signed checkpoint note, verbatim>

Parsing is strict (canonical base64, 32-byte hashes, at most 64 of them, bounded sizes, the
checkpoint must be a well-formed note whose text is a checkpoint) and raises FormatError.
``verify_proof`` raises PolicyError or VerificationError when the proof does not hold.
Pure logic, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from logserver.core import tlog
from logserver.core.checkpoint import MAX_TREE_SIZE, Checkpoint
from logserver.core.errors import FormatError, UsageError, VerificationError
from logserver.core.note import (
    MAX_NOTE_BYTES,
    b64decode_strict,
    b64encode,
    parse_decimal,
    split_note,
)
from logserver.core.policy import Policy

HEADER = b"c2sp.org/tlog-proof@v1"
MAX_PROOF_HASHES = 64
MAX_EXTRA_BYTES = 1 << 20  # a verdict bundle (leaf, manifest, a recipe as large as a leaf) fits
MAX_PROOF_FILE_BYTES = MAX_NOTE_BYTES + 2 * MAX_EXTRA_BYTES
HASH_SIZE = 32


@dataclass(frozen=True)
class TlogProof:
    """A tlog-proof file: entry index, inclusion proof, signed checkpoint note, extra data."""

    index: int
    hashes: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.index < MAX_TREE_SIZE:
            raise UsageError(f"proof index {self.index} out of range")
        if len(self.hashes) > MAX_PROOF_HASHES:
            raise UsageError(f"at most {MAX_PROOF_HASHES} proof hashes")
        if any(len(h) != HASH_SIZE for h in self.hashes):
            raise UsageError("proof hashes are 32 bytes")
        if self.extra is not None and len(self.extra) > MAX_EXTRA_BYTES:
            raise UsageError(f"extra data is at most {MAX_EXTRA_BYTES} bytes")

    @classmethod
    def parse(cls, data: bytes) -> TlogProof:
        if len(data) > MAX_PROOF_FILE_BYTES:
            raise FormatError("proof file", f"larger than {MAX_PROOF_FILE_BYTES} bytes")
        head, separator, note = data.partition(b"\n\n")
        if not separator:
            raise FormatError("proof file", "no blank line before the checkpoint")
        try:
            lines = head.decode("ascii").split("\n")
        except UnicodeDecodeError as exc:
            raise FormatError("proof file", "non-ASCII proof header") from exc
        if lines[0] != HEADER.decode():
            raise FormatError("proof file", "first line is not c2sp.org/tlog-proof@v1")
        rest = lines[1:]
        extra = None
        if rest and rest[0].startswith("extra "):
            extra64 = rest.pop(0)[len("extra ") :]
            if len(extra64) > (MAX_EXTRA_BYTES + 2) // 3 * 4:
                raise FormatError("proof file", "extra data too long")
            extra = b64decode_strict(extra64, "proof extra data")
        if not rest or not rest[0].startswith("index "):
            raise FormatError("proof file", "missing index line")
        index = parse_decimal(rest.pop(0)[len("index ") :], "proof index", MAX_TREE_SIZE)
        if len(rest) > MAX_PROOF_HASHES:
            raise FormatError("proof file", f"more than {MAX_PROOF_HASHES} proof hashes")
        hashes = tuple(b64decode_strict(line, "proof hash") for line in rest)
        if any(len(h) != HASH_SIZE for h in hashes):
            raise FormatError("proof file", "proof hash is not 32 bytes")
        text, _ = split_note(note)
        Checkpoint.parse(text)
        return cls(index, hashes, note, extra)

    def to_bytes(self) -> bytes:
        lines = [HEADER.decode()]
        if self.extra is not None:
            lines.append(f"extra {b64encode(self.extra)}")
        lines.append(f"index {self.index}")
        lines.extend(b64encode(h) for h in self.hashes)
        return "".join(line + "\n" for line in lines).encode("ascii") + b"\n" + self.checkpoint


@dataclass(frozen=True)
class VerifiedProof:
    """What a valid proof file established."""

    checkpoint: Checkpoint
    index: int
    cosigners: frozenset[str]
    extra: bytes | None


def verify_proof(
    proof_file: bytes, entry: bytes, policy: Policy, *, origin: str | None = None
) -> VerifiedProof:
    """Check that ``entry`` is at the proof's index in a checkpoint the policy accepts.

    ``origin``, if given, is the log the caller expects. Raises FormatError for a malformed
    file, PolicyError for missing signatures, VerificationError for a wrong origin, index or
    inclusion proof.
    """
    proof = TlogProof.parse(proof_file)
    verified = policy.verify(proof.checkpoint)
    checkpoint = verified.checkpoint
    if origin is not None and checkpoint.origin != origin:
        raise VerificationError(f"proof is from log {checkpoint.origin!r}, expected {origin!r}")
    if proof.index >= checkpoint.size:
        raise VerificationError(
            f"entry index {proof.index} is not below the checkpoint size {checkpoint.size}"
        )
    tlog.check_record(
        proof.hashes, checkpoint.size, checkpoint.root_hash, proof.index, tlog.record_hash(entry)
    )
    return VerifiedProof(checkpoint, proof.index, verified.cosigners, proof.extra)
