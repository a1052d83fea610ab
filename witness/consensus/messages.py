"""The five consensus messages and their canonical wire encoding.

Every message is ``kind (u8) ‖ body``; see spec/consensus.md for the byte layout. The
transport (the HTTP node) authenticates the sender separately; everything a message asserts
is signed inside it and checked by the replica on receipt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from logserver.core.errors import FormatError
from witness.consensus import crypto
from witness.consensus.encoding import Reader, Writer
from witness.consensus.types import Block, CommitProof, QuorumCert, TimeoutCert

MAX_MESSAGE_BYTES = 4 << 20
MAX_SYNC_BLOCKS = 64

KIND_PROPOSAL = 1
KIND_VOTE = 2
KIND_TIMEOUT = 3
KIND_SYNC_REQUEST = 4
KIND_SYNC_RESPONSE = 5


@dataclass(frozen=True, slots=True)
class Proposal:
    """A leader's block for its round, with the TC of the previous round if it entered by one."""

    block: Block
    last_round_tc: TimeoutCert | None

    @property
    def round(self) -> int:
        return self.block.round

    def to_bytes(self) -> bytes:
        out = Writer()
        out.u8(KIND_PROPOSAL)
        self.block.encode(out)
        _encode_optional_tc(out, self.last_round_tc)
        return out.getvalue()

    @staticmethod
    def from_bytes(data: bytes, network_id: bytes) -> Proposal:
        return _expect(message_from_bytes(data, network_id), Proposal)


@dataclass(frozen=True, slots=True)
class Vote:
    """``voter``'s signature over (network id, round, block id); sent to the next leader."""

    round: int
    block_id: bytes
    voter: int
    signature: bytes

    def to_bytes(self) -> bytes:
        out = Writer()
        out.u8(KIND_VOTE)
        out.u64(self.round)
        out.fixed(self.block_id)
        out.u16(self.voter)
        out.fixed(self.signature)
        return out.getvalue()

    @staticmethod
    def from_bytes(data: bytes, network_id: bytes) -> Vote:
        return _expect(message_from_bytes(data, network_id), Vote)


@dataclass(frozen=True, slots=True)
class Timeout:
    """``signer`` gives up on ``round``; signs (network id, round, high_qc.round)."""

    round: int
    signer: int
    high_qc: QuorumCert
    last_round_tc: TimeoutCert | None
    signature: bytes

    def to_bytes(self) -> bytes:
        out = Writer()
        out.u8(KIND_TIMEOUT)
        out.u64(self.round)
        out.u16(self.signer)
        self.high_qc.encode(out)
        _encode_optional_tc(out, self.last_round_tc)
        out.fixed(self.signature)
        return out.getvalue()

    @staticmethod
    def from_bytes(data: bytes, network_id: bytes) -> Timeout:
        return _expect(message_from_bytes(data, network_id), Timeout)


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """Asks for the block ``block_id`` and up to ``max_blocks - 1`` of its ancestors.

    ``committed_round`` is the round of the requester's committed block: a responder that has
    committed beyond it adds its commit proof, so a requester that is far behind (or whose
    missing ancestors were pruned everywhere) can jump instead of fetching the chain.
    """

    block_id: bytes
    max_blocks: int
    committed_round: int = 0

    def to_bytes(self) -> bytes:
        out = Writer()
        out.u8(KIND_SYNC_REQUEST)
        out.fixed(self.block_id)
        out.u16(self.max_blocks)
        out.u64(self.committed_round)
        return out.getvalue()

    @staticmethod
    def from_bytes(data: bytes, network_id: bytes) -> SyncRequest:
        return _expect(message_from_bytes(data, network_id), SyncRequest)


@dataclass(frozen=True, slots=True)
class SyncResponse:
    """A chain of blocks, the requested one first, each followed by its parent; and, when the
    responder has committed beyond the requester, the proof of its latest commit."""

    blocks: tuple[Block, ...]
    proof: CommitProof | None = None

    def to_bytes(self) -> bytes:
        out = Writer()
        out.u8(KIND_SYNC_RESPONSE)
        out.u16(len(self.blocks))
        for block in self.blocks:
            block.encode(out)
        out.u8(0 if self.proof is None else 1)
        if self.proof is not None:
            self.proof.encode(out)
        return out.getvalue()

    @staticmethod
    def from_bytes(data: bytes, network_id: bytes) -> SyncResponse:
        return _expect(message_from_bytes(data, network_id), SyncResponse)


Message = Proposal | Vote | Timeout | SyncRequest | SyncResponse
_M = TypeVar("_M", Proposal, Vote, Timeout, SyncRequest, SyncResponse)


def message_round(message: Message) -> int | None:
    """The round a message belongs to, or None for catch-up messages."""
    if isinstance(message, Proposal | Vote | Timeout):
        return message.round
    return None


def message_from_bytes(data: bytes, network_id: bytes) -> Message:
    """Decode any message strictly; raises FormatError."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise FormatError("consensus message", f"{len(data)} bytes exceed {MAX_MESSAGE_BYTES}")
    reader = Reader(data, "consensus message")
    kind = reader.u8()
    message: Message
    if kind == KIND_PROPOSAL:
        block = Block.decode(reader, network_id)
        message = Proposal(block, _decode_optional_tc(reader))
    elif kind == KIND_VOTE:
        message = Vote(
            reader.u64(),
            reader.fixed(crypto.HASH_SIZE),
            reader.u16(),
            reader.fixed(crypto.SIGNATURE_SIZE),
        )
    elif kind == KIND_TIMEOUT:
        round_ = reader.u64()
        signer = reader.u16()
        high_qc = QuorumCert.decode(reader)
        last_round_tc = _decode_optional_tc(reader)
        message = Timeout(
            round_, signer, high_qc, last_round_tc, reader.fixed(crypto.SIGNATURE_SIZE)
        )
    elif kind == KIND_SYNC_REQUEST:
        message = SyncRequest(reader.fixed(crypto.HASH_SIZE), reader.u16(), reader.u64())
    elif kind == KIND_SYNC_RESPONSE:
        count = reader.u16()
        if count > MAX_SYNC_BLOCKS:
            raise FormatError("consensus message", f"{count} blocks exceed {MAX_SYNC_BLOCKS}")
        blocks = tuple(Block.decode(reader, network_id) for _ in range(count))
        proof = CommitProof.decode(reader, network_id) if reader.flag() else None
        message = SyncResponse(blocks, proof)
    else:
        raise FormatError("consensus message", f"unknown kind {kind}")
    reader.end()
    return message


def _encode_optional_tc(out: Writer, tc: TimeoutCert | None) -> None:
    out.u8(0 if tc is None else 1)
    if tc is not None:
        tc.encode(out)


def _decode_optional_tc(reader: Reader) -> TimeoutCert | None:
    return TimeoutCert.decode(reader) if reader.flag() else None


def _expect(message: Message, kind: type[_M]) -> _M:
    if not isinstance(message, kind):
        raise FormatError("consensus message", f"expected {kind.__name__}")
    return message
