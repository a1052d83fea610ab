"""Signed envelopes for messages between witnesses (spec/network.md, "Envelopes").

Every consensus message travels in an envelope that names its sender, carries the sender's
clock, and is signed by the sender's key, so that a node accepts bytes only from the replicas of
its network, only fresh, and only once. Layout, all integers big-endian::

    u16 sender index | u64 sent at (unix ms) | u32 length | message | 64-byte Ed25519 signature

The signature covers ``synchronicity/envelope/v1\\n`` || u8 len(network id) || network id ||
everything before the signature. Pure: the clock and the replay memory are passed in.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions

from logserver.core.errors import FormatError, VerificationError

DOMAIN = b"synchronicity/envelope/v1\n"
MAX_MESSAGE = 4 << 20
MAX_CLOCK_SKEW_MS = 30_000
_HEAD = struct.Struct(">HQI")
_SIG = 64


@dataclass(frozen=True)
class Envelope:
    """An opened envelope: the sender's replica index, its clock and the message bytes."""

    sender: int
    sent_ms: int
    message: bytes


def _signed_part(network_id: bytes, head_and_message: bytes) -> bytes:
    return DOMAIN + bytes([len(network_id)]) + network_id + head_and_message


def seal(network_id: bytes, sender: int, sent_ms: int, message: bytes, secret: bytes) -> bytes:
    """Envelope ``message`` from replica ``sender``; ``secret`` is its 64-byte NaCl secret."""
    if len(message) > MAX_MESSAGE:
        raise ValueError(f"message larger than {MAX_MESSAGE} bytes")
    body = _HEAD.pack(sender, sent_ms, len(message)) + message
    signature = nacl.bindings.crypto_sign(_signed_part(network_id, body), secret)[:_SIG]
    return body + signature


def open_envelope(
    network_id: bytes, data: bytes, public_keys: tuple[bytes, ...], now_ms: int
) -> Envelope:
    """Check an envelope's structure, sender, freshness and signature."""
    if len(data) < _HEAD.size + _SIG or len(data) > _HEAD.size + MAX_MESSAGE + _SIG:
        raise FormatError("envelope", f"size {len(data)} out of bounds")
    sender, sent_ms, length = _HEAD.unpack_from(data)
    if len(data) != _HEAD.size + length + _SIG:
        raise FormatError("envelope", "length does not match")
    if sender >= len(public_keys):
        raise VerificationError(f"envelope from unknown replica {sender}")
    if abs(now_ms - sent_ms) > MAX_CLOCK_SKEW_MS:
        raise VerificationError(f"stale envelope from replica {sender}")
    body, signature = data[:-_SIG], data[-_SIG:]
    try:
        nacl.bindings.crypto_sign_open(
            signature + _signed_part(network_id, body), public_keys[sender]
        )
    except nacl.exceptions.BadSignatureError:
        raise VerificationError(f"bad envelope signature from replica {sender}") from None
    return Envelope(sender, sent_ms, body[_HEAD.size :])


class ReplayGuard:
    """Remembers recently accepted envelopes, so a replayed one is refused."""

    def __init__(self, capacity: int = 65536) -> None:
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._capacity = capacity

    def first_time(self, data: bytes) -> bool:
        digest = hashlib.sha256(data).digest()
        if digest in self._seen:
            return False
        self._seen[digest] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True
