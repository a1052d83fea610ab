"""Offline checks of everything signed: blocks, votes, timeouts, QCs and TCs.

Each check raises :class:`MessageRejected` (a VerificationError) with a short ``reason`` that the
replica counts. Checks are pure functions of the network config and the value; verification
of whole certificates is memoised on top of the per-signature memo in ``crypto``.
"""

from __future__ import annotations

from functools import lru_cache

from logserver.core.errors import VerificationError
from witness.consensus import crypto
from witness.consensus.messages import Timeout, Vote
from witness.consensus.types import (
    MAX_PAYLOAD,
    Block,
    CommitProof,
    ConsensusConfig,
    QuorumCert,
    TimeoutCert,
)


class MessageRejected(VerificationError):
    """A message or certificate failed a check; ``reason`` is a short stable key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _check_signers(config: ConsensusConfig, signers: list[int], what: str) -> None:
    if len(set(signers)) != len(signers):
        raise MessageRejected(f"{what}-duplicate-signer")
    if any(not 0 <= signer < config.n for signer in signers):
        raise MessageRejected(f"{what}-unknown-signer")
    if len(signers) < config.quorum:
        raise MessageRejected(f"{what}-too-few-signers", f"{len(signers)} < {config.quorum}")


def verify_qc(config: ConsensusConfig, qc: QuorumCert) -> None:
    """A QC is valid when 2f+1 distinct replicas signed (network id, round, block id)."""
    if not _qc_is_valid(config, qc):
        _explain_qc(config, qc)


@lru_cache(maxsize=1 << 14)
def _qc_is_valid(config: ConsensusConfig, qc: QuorumCert) -> bool:
    try:
        _explain_qc(config, qc)
    except MessageRejected:
        return False
    return True


def _explain_qc(config: ConsensusConfig, qc: QuorumCert) -> None:
    if qc.round == 0:
        if qc != config.genesis_qc:
            raise MessageRejected("qc-bad-genesis")
        return
    _check_signers(config, [signer for signer, _ in qc.signatures], "qc")
    message = crypto.vote_message(config.network_id, qc.round, qc.block_id)
    for signer, signature in qc.signatures:
        if not crypto.verify(config.public_key(signer), message, signature):
            raise MessageRejected("qc-bad-signature", f"signer {signer}")


def verify_tc(config: ConsensusConfig, tc: TimeoutCert) -> None:
    """2f+1 distinct timeouts for tc.round; high_qc valid and exactly the highest QC round."""
    if not _tc_is_valid(config, tc):
        _explain_tc(config, tc)


@lru_cache(maxsize=1 << 12)
def _tc_is_valid(config: ConsensusConfig, tc: TimeoutCert) -> bool:
    try:
        _explain_tc(config, tc)
    except MessageRejected:
        return False
    return True


def _explain_tc(config: ConsensusConfig, tc: TimeoutCert) -> None:
    _check_signers(config, [signer for signer, _, _ in tc.entries], "tc")
    for signer, high_qc_round, signature in tc.entries:
        if high_qc_round >= tc.round:
            raise MessageRejected("tc-qc-round-not-below-round")
        message = crypto.timeout_message(config.network_id, tc.round, high_qc_round)
        if not crypto.verify(config.public_key(signer), message, signature):
            raise MessageRejected("tc-bad-signature", f"signer {signer}")
    if tc.high_qc.round != max(tc.high_qc_rounds):
        raise MessageRejected("tc-high-qc-mismatch")
    verify_qc(config, tc.high_qc)


def verify_block(config: ConsensusConfig, block: Block) -> None:
    """Author known, rounds ordered, author's signature and the parent QC valid."""
    if block.round < 1 or block.qc.round >= block.round:
        raise MessageRejected("block-bad-round")
    if not 0 <= block.author < config.n:
        raise MessageRejected("block-unknown-author")
    if len(block.payload) > MAX_PAYLOAD:
        raise MessageRejected("block-payload-too-large")
    message = crypto.proposal_message(config.network_id, block.id)
    if not crypto.verify(config.public_key(block.author), message, block.signature):
        raise MessageRejected("block-bad-signature")
    verify_qc(config, block.qc)


def verify_vote(config: ConsensusConfig, vote: Vote) -> None:
    if not 0 <= vote.voter < config.n:
        raise MessageRejected("vote-unknown-signer")
    if vote.round < 1:
        raise MessageRejected("vote-bad-round")
    message = crypto.vote_message(config.network_id, vote.round, vote.block_id)
    if not crypto.verify(config.public_key(vote.voter), message, vote.signature):
        raise MessageRejected("vote-bad-signature")


def verify_timeout(config: ConsensusConfig, timeout: Timeout) -> None:
    """Signature over (network id, round, high_qc.round); the carried certificates valid."""
    if not 0 <= timeout.signer < config.n:
        raise MessageRejected("timeout-unknown-signer")
    if timeout.high_qc.round >= timeout.round:
        raise MessageRejected("timeout-qc-round-not-below-round")
    message = crypto.timeout_message(config.network_id, timeout.round, timeout.high_qc.round)
    if not crypto.verify(config.public_key(timeout.signer), message, timeout.signature):
        raise MessageRejected("timeout-bad-signature")
    verify_qc(config, timeout.high_qc)
    if timeout.last_round_tc is not None:
        verify_tc(config, timeout.last_round_tc)


def verify_commit_proof(config: ConsensusConfig, proof: CommitProof) -> None:
    """Both blocks valid, the child extends the block in the next round, its QC valid."""
    block, child, qc = proof.block, proof.child, proof.child_qc
    verify_block(config, block)
    verify_block(config, child)
    if child.parent_id != block.id or child.qc.round != block.round:
        raise MessageRejected("proof-not-a-child")
    if child.round != block.round + 1:
        raise MessageRejected("proof-rounds-not-consecutive")
    if qc.block_id != child.id or qc.round != child.round:
        raise MessageRejected("proof-qc-mismatch")
    verify_qc(config, qc)
