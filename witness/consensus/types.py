"""The consensus data types: network configuration, blocks and certificates, with encodings.

A block carries one opaque payload (a log checkpoint) and the quorum certificate of its
parent. Certificates list their signers in strictly increasing replica-index order, so each
certificate has one canonical encoding and a duplicate signer cannot even be decoded.
Decoding checks structure only; :mod:`witness.consensus.certificates` checks signatures.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import cached_property

from logserver.core.errors import FormatError, UsageError
from witness.consensus import crypto
from witness.consensus.encoding import Reader, Writer

MAX_REPLICAS = 1024
MAX_NETWORK_ID = 255
MAX_PAYLOAD = 65536
GENESIS_PARENT_ID = bytes(crypto.HASH_SIZE)


@dataclass(frozen=True)
class ConsensusConfig:
    """Who takes part: n = 3f+1 named Ed25519 keys (index = position), and pacemaker timing."""

    network_id: bytes
    replicas: tuple[tuple[str, bytes], ...]
    f: int
    base_timeout_ms: int = 1000
    max_timeout_ms: int = 16000
    genesis_payload: bytes = b""

    def __post_init__(self) -> None:
        n = len(self.replicas)
        if not 1 <= len(self.network_id) <= MAX_NETWORK_ID:
            raise UsageError(f"network id must be 1..{MAX_NETWORK_ID} bytes")
        if self.f < 0 or n != 3 * self.f + 1 or n > MAX_REPLICAS:
            raise UsageError(f"need n = 3f+1 <= {MAX_REPLICAS} replicas; got n={n} f={self.f}")
        keys = [key for _, key in self.replicas]
        if any(len(key) != crypto.PUBLIC_KEY_SIZE for key in keys) or len(set(keys)) != n:
            raise UsageError("replica keys must be distinct 32-byte Ed25519 public keys")
        if len({name for name, _ in self.replicas}) != n:
            raise UsageError("replica names must be distinct")
        if not 0 < self.base_timeout_ms <= self.max_timeout_ms:
            raise UsageError("need 0 < base_timeout_ms <= max_timeout_ms")
        if len(self.genesis_payload) > MAX_PAYLOAD:
            raise UsageError("genesis payload too large")

    @property
    def n(self) -> int:
        return len(self.replicas)

    @property
    def quorum(self) -> int:
        return 2 * self.f + 1

    def public_key(self, index: int) -> bytes:
        return self.replicas[index][1]

    def index_of(self, public_key: bytes) -> int:
        for index, (_, key) in enumerate(self.replicas):
            if key == public_key:
                return index
        raise UsageError("public key is not a replica of this network")

    def round_robin_leader(self, round_: int) -> int:
        return round_ % self.n

    @cached_property
    def genesis(self) -> Block:
        """Round 0: no author signature, parent id all zeros, payload from the config."""
        block_id = crypto.sha256(
            crypto.block_id_preimage(
                self.network_id, 0, 0, GENESIS_PARENT_ID, 0, payload=self.genesis_payload
            )
        )
        genesis_qc = QuorumCert(0, GENESIS_PARENT_ID, ())
        return Block(0, 0, genesis_qc, self.genesis_payload, b"", block_id)

    @cached_property
    def genesis_qc(self) -> QuorumCert:
        """The certificate every replica holds for the genesis block (no signatures)."""
        return QuorumCert(0, self.genesis.id, ())


@dataclass(frozen=True, slots=True)
class QuorumCert:
    """2f+1 distinct replicas' votes on one (round, block id); signers strictly increasing."""

    round: int
    block_id: bytes
    signatures: tuple[tuple[int, bytes], ...]

    def encode(self, out: Writer) -> None:
        out.u64(self.round)
        out.fixed(self.block_id)
        out.u16(len(self.signatures))
        for signer, signature in self.signatures:
            out.u16(signer)
            out.fixed(signature)

    @staticmethod
    def decode(reader: Reader) -> QuorumCert:
        round_ = reader.u64()
        block_id = reader.fixed(crypto.HASH_SIZE)
        signatures = tuple(
            (reader.u16(), reader.fixed(crypto.SIGNATURE_SIZE))
            for _ in range(_bounded_count(reader))
        )
        _check_increasing(reader, [signer for signer, _ in signatures])
        return QuorumCert(round_, block_id, signatures)


@dataclass(frozen=True, slots=True)
class TimeoutCert:
    """2f+1 distinct timeouts for one round, each with its signer's highest QC round.

    ``high_qc`` is the certificate whose round is the largest of those rounds.
    """

    round: int
    entries: tuple[tuple[int, int, bytes], ...]  # (signer, high QC round, signature)
    high_qc: QuorumCert

    @property
    def high_qc_rounds(self) -> tuple[int, ...]:
        return tuple(high_qc_round for _, high_qc_round, _ in self.entries)

    def encode(self, out: Writer) -> None:
        out.u64(self.round)
        out.u16(len(self.entries))
        for signer, high_qc_round, signature in self.entries:
            out.u16(signer)
            out.u64(high_qc_round)
            out.fixed(signature)
        self.high_qc.encode(out)

    @staticmethod
    def decode(reader: Reader) -> TimeoutCert:
        round_ = reader.u64()
        entries = tuple(
            (reader.u16(), reader.u64(), reader.fixed(crypto.SIGNATURE_SIZE))
            for _ in range(_bounded_count(reader))
        )
        _check_increasing(reader, [signer for signer, _, _ in entries])
        return TimeoutCert(round_, entries, QuorumCert.decode(reader))


@dataclass(frozen=True, slots=True)
class Block:
    """A proposal's content. ``id`` is derived (SHA-256 of the domain-separated preimage)."""

    round: int
    author: int
    qc: QuorumCert
    payload: bytes
    signature: bytes
    id: bytes = field(compare=False)

    @property
    def parent_id(self) -> bytes:
        return self.qc.block_id

    @staticmethod
    def compute_id(
        network_id: bytes, round_: int, author: int, qc: QuorumCert, payload: bytes
    ) -> bytes:
        preimage = crypto.block_id_preimage(
            network_id, round_, author, qc.block_id, qc.round, payload=payload
        )
        return crypto.sha256(preimage)

    @staticmethod
    def create(
        network_id: bytes,
        round_: int,
        author: int,
        qc: QuorumCert,
        payload: bytes,
        *,
        signer: crypto.ReplicaSigner,
    ) -> Block:
        if len(payload) > MAX_PAYLOAD:
            raise UsageError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
        block_id = Block.compute_id(network_id, round_, author, qc, payload)
        signature = signer.sign(crypto.proposal_message(network_id, block_id))
        return Block(round_, author, qc, payload, signature, block_id)

    def encode(self, out: Writer) -> None:
        out.u64(self.round)
        out.u16(self.author)
        self.qc.encode(out)
        out.var32(self.payload)
        out.fixed(self.signature)

    @staticmethod
    def decode(reader: Reader, network_id: bytes) -> Block:
        round_ = reader.u64()
        author = reader.u16()
        qc = QuorumCert.decode(reader)
        payload = reader.var32(MAX_PAYLOAD)
        signature = reader.fixed(crypto.SIGNATURE_SIZE)
        block_id = Block.compute_id(network_id, round_, author, qc, payload)
        return Block(round_, author, qc, payload, signature, block_id)


@dataclass(frozen=True, slots=True)
class CommitProof:
    """Self-certifying evidence that ``block`` is committed: a certified child in the next round.

    ``child`` extends ``block`` (its QC certifies it) in round ``block.round + 1``, and
    ``child_qc`` certifies ``child``: by the 2-chain rule ``block`` and its ancestors are
    committed. ``height`` is the block's height in the chain as the sender counts it; it is not
    certified, and nothing safety-relevant may depend on it.
    """

    height: int
    block: Block
    child: Block
    child_qc: QuorumCert

    def encode(self, out: Writer) -> None:
        out.u64(self.height)
        self.block.encode(out)
        self.child.encode(out)
        self.child_qc.encode(out)

    @staticmethod
    def decode(reader: Reader, network_id: bytes) -> CommitProof:
        height = reader.u64()
        block = Block.decode(reader, network_id)
        child = Block.decode(reader, network_id)
        return CommitProof(height, block, child, QuorumCert.decode(reader))

    def to_bytes(self) -> bytes:
        out = Writer()
        self.encode(out)
        return out.getvalue()

    @staticmethod
    def from_bytes(data: bytes, network_id: bytes) -> CommitProof:
        """Strict decoding of a stored or received proof (structure only; see certificates)."""
        reader = Reader(data, "commit proof")
        proof = CommitProof.decode(reader, network_id)
        reader.end()
        return proof


def _bounded_count(reader: Reader) -> int:
    count = reader.u16()
    if count > MAX_REPLICAS:
        raise FormatError(reader.what, f"{count} signers exceed {MAX_REPLICAS}")
    return count


def _check_increasing(reader: Reader, signers: list[int]) -> None:
    if any(a >= b for a, b in itertools.pairwise(signers)):
        raise FormatError(reader.what, "signers not strictly increasing (duplicate or unsorted)")
