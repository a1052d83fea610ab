"""Witness cosignatures (c2sp.org/tlog-cosignature, cosignature/v1 with Ed25519, type 0x04).

A cosignature is a note signature line on a checkpoint whose signature bytes are
``u64 big-endian timestamp || Ed25519 signature`` (72 bytes), the Ed25519 signature being over::

    cosignature/v1\\n
    time <timestamp in decimal>\\n
    <the whole checkpoint body, with its final newline>

The key ID is SHA-256(name || 0x0A || 0x04 || public key)[:4]. Keys travel as the signed-note
texts with type byte 0x04: vkey ``<name>+<hex id>+<base64(0x04 || public key)>`` and private key
``PRIVATE+KEY+<name>+<hex id>+<base64(0x04 || seed)>`` (the private form is our own convention,
mirroring signed-note's). CosignatureSigner and CosignatureVerifier satisfy the note module's
signer and verifier protocols, so ``open_note`` checks log signatures and cosignatures together.
The clock is injected; everything else is pure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import ClassVar, Self

from logserver.core.checkpoint import Checkpoint
from logserver.core.errors import FormatError, UsageError
from logserver.core.note import (
    ED25519_KEY_TYPE,
    KeyText,
    NoteSignature,
    Signer,
    Verifier,
    parse_private_key,
    parse_vkey,
)

COSIGNATURE_V1_KEY_TYPE = 0x04
COSIGNATURE_SIZE = 8 + 64
MAX_TIMESTAMP = (1 << 63) - 1


def cosigned_message(body: bytes, timestamp: int) -> bytes:
    """The bytes an Ed25519 cosignature/v1 signs for a checkpoint body at ``timestamp``."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise UsageError(f"cosignature timestamp {timestamp} out of range")
    return b"cosignature/v1\ntime %d\n" % timestamp + body


def cosignature_timestamp(signature: bytes) -> int:
    """The timestamp carried by a cosignature/v1 signature (the bytes after the key ID)."""
    if len(signature) != COSIGNATURE_SIZE:
        raise FormatError("cosignature", f"{len(signature)} bytes, want {COSIGNATURE_SIZE}")
    timestamp = int.from_bytes(signature[:8], "big")
    if timestamp > MAX_TIMESTAMP:
        raise FormatError("cosignature", "timestamp exceeds 2^63 - 1")
    return timestamp


class CosignatureVerifier(Verifier):
    """Checks a witness's cosignature/v1 signatures; ``verify`` takes the checkpoint body."""

    KEY_TYPE: ClassVar[int] = COSIGNATURE_V1_KEY_TYPE

    def verify_with_timestamp(self, msg: bytes, sig: bytes) -> tuple[bool, int | None]:
        """(ok, timestamp) for a cosignature over checkpoint body ``msg``; never raises."""
        try:
            timestamp = cosignature_timestamp(sig)
        except FormatError:
            return False, None
        ok = self._ed25519_ok(cosigned_message(msg, timestamp), sig[8:])
        return ok, timestamp if ok else None

    def verify(self, msg: bytes, sig: bytes) -> bool:
        return self.verify_with_timestamp(msg, sig)[0]


class CosignatureSigner(Signer):
    """A witness key producing cosignature/v1 signatures at the clock's current time."""

    KEY_TYPE: ClassVar[int] = COSIGNATURE_V1_KEY_TYPE
    VERIFIER: ClassVar[type[Verifier]] = CosignatureVerifier

    def __init__(self, name: str, seed: bytes, clock: Callable[[], float] = time.time) -> None:
        super().__init__(name, seed)
        self._clock = clock

    @classmethod
    def from_private_key(cls, text: str, clock: Callable[[], float] = time.time) -> Self:
        name, seed = cls._seed_from_private_key(text)
        return cls(name, seed, clock)

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, self.public_key)

    def sign_at(self, msg: bytes, timestamp: int) -> bytes:
        """Cosign checkpoint body ``msg`` at ``timestamp``: u64 BE timestamp || signature."""
        try:
            Checkpoint.parse(msg)
        except FormatError as exc:
            raise UsageError(f"a cosignature covers a checkpoint: {exc}") from exc
        signature = self._signing_key.sign(cosigned_message(msg, timestamp)).signature
        return timestamp.to_bytes(8, "big") + signature

    def sign(self, msg: bytes) -> bytes:
        return self.sign_at(msg, int(self._clock()))


def generate_cosignature_key(name: str) -> tuple[str, str]:
    """A fresh witness key: (private key text, vkey text), both with type 0x04."""
    signer = CosignatureSigner(name, os.urandom(32))
    return signer.private_key, signer.vkey


def signature_timestamp(sig: NoteSignature) -> int | None:
    """The timestamp of a verified cosignature, None for other signatures."""
    if isinstance(sig.verifier, CosignatureVerifier):
        return cosignature_timestamp(sig.signature)
    return None


def _key_type(parsed: KeyText, what: str) -> int:
    if parsed.key_type not in (ED25519_KEY_TYPE, COSIGNATURE_V1_KEY_TYPE):
        raise FormatError(what, f"unsupported key type 0x{parsed.key_type:02x}")
    return parsed.key_type


def load_verifier(vkey: str) -> Verifier:
    """A note verifier (0x01) or cosignature verifier (0x04), chosen by the vkey's type."""
    if _key_type(parse_vkey(vkey), "verifier key") == COSIGNATURE_V1_KEY_TYPE:
        return CosignatureVerifier.from_vkey(vkey)
    return Verifier.from_vkey(vkey)


def load_signer(private_key: str, clock: Callable[[], float] = time.time) -> Signer:
    """A note signer (0x01) or cosignature signer (0x04), chosen by the key's type."""
    if _key_type(parse_private_key(private_key), "private key") == COSIGNATURE_V1_KEY_TYPE:
        return CosignatureSigner.from_private_key(private_key, clock)
    return Signer.from_private_key(private_key)
