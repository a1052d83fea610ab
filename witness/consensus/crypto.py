"""Ed25519 for the consensus core, behind a tiny interface, and the exact signed byte strings.

Every signed string starts with a distinct domain tag and the network id, so a signature made
for one purpose or one network can never be replayed for another. Verification of identical
(public key, message, signature) triples is memoised in a bounded LRU: a replica sees each
vote inside many certificates, and the simulator verifies the same bytes on every replica.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from functools import lru_cache

import nacl.bindings
import nacl.exceptions

from logserver.core.errors import UsageError

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
SEED_SIZE = 32
HASH_SIZE = 32

BLOCK_ID_TAG = b"synchronicity/consensus/v1 block-id\x00"
PROPOSAL_TAG = b"synchronicity/consensus/v1 proposal\x00"
VOTE_TAG = b"synchronicity/consensus/v1 vote\x00"
TIMEOUT_TAG = b"synchronicity/consensus/v1 timeout\x00"

_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_VERIFY_CACHE_SIZE = 1 << 16
_SIGN_CACHE_SIZE = 1 << 12


def _network_prefix(tag: bytes, network_id: bytes) -> bytes:
    return tag + _U16.pack(len(network_id)) + network_id


def block_id_preimage(
    network_id: bytes,
    round_: int,
    author: int,
    parent_id: bytes,
    parent_round: int,
    *,
    payload: bytes,
) -> bytes:
    """The bytes hashed into a block id (SHA-256)."""
    return b"".join(
        (
            _network_prefix(BLOCK_ID_TAG, network_id),
            _U64.pack(round_),
            _U16.pack(author),
            parent_id,
            _U64.pack(parent_round),
            struct.pack(">I", len(payload)),
            payload,
        )
    )


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def proposal_message(network_id: bytes, block_id: bytes) -> bytes:
    """What a leader signs to author a block."""
    return _network_prefix(PROPOSAL_TAG, network_id) + block_id


def vote_message(network_id: bytes, round_: int, block_id: bytes) -> bytes:
    """What a replica signs to vote for a block: (network id, round, block id)."""
    return _network_prefix(VOTE_TAG, network_id) + _U64.pack(round_) + block_id


def timeout_message(network_id: bytes, round_: int, high_qc_round: int) -> bytes:
    """What a replica signs to time out: (network id, round, its highest QC round)."""
    return _network_prefix(TIMEOUT_TAG, network_id) + _U64.pack(round_) + _U64.pack(high_qc_round)


@lru_cache(maxsize=_VERIFY_CACHE_SIZE)
def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        return False
    return True


class ReplicaSigner:
    """An Ed25519 private key. Signatures are deterministic, so recent ones are memoised."""

    __slots__ = ("_cache", "_secret", "public_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_SIZE:
            raise UsageError(f"an Ed25519 seed is {SEED_SIZE} bytes, not {len(seed)}")
        public_key, secret = nacl.bindings.crypto_sign_seed_keypair(seed)
        self.public_key: bytes = public_key
        self._secret: bytes = secret
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()

    def sign(self, message: bytes) -> bytes:
        cached = self._cache.get(message)
        if cached is not None:
            self._cache.move_to_end(message)
            return cached
        signature: bytes = nacl.bindings.crypto_sign(message, self._secret)[:SIGNATURE_SIZE]
        self._cache[message] = signature
        if len(self._cache) > _SIGN_CACHE_SIZE:
            self._cache.popitem(last=False)
        return signature

    def __repr__(self) -> str:
        return f"ReplicaSigner(public_key={self.public_key.hex()})"
