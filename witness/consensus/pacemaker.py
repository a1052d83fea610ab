"""Pacemaker pieces: round timeout durations and the collectors that form QCs and TCs.

Collectors keep bounded state: votes only within a window of rounds and one vote per
(signer, round); timeouts only the latest one per signer, since an honest replica's timeout
rounds only grow. Inputs must already be verified (see ``certificates``).
"""

from __future__ import annotations

from dataclasses import dataclass

from witness.consensus.messages import Timeout, Vote
from witness.consensus.types import ConsensusConfig, QuorumCert, TimeoutCert

VOTE_WINDOW_ROUNDS = 64


def timeout_duration_ms(config: ConsensusConfig, round_: int, highest_qc_round: int) -> int:
    """base * 2^(rounds since the last QC, minus one), capped at max_timeout_ms."""
    exponent = min(max(0, round_ - highest_qc_round - 1), 32)
    return min(config.max_timeout_ms, config.base_timeout_ms << exponent)


@dataclass
class VoteOutcome:
    """What adding a vote did: a new QC, or the discovery that its voter equivocated."""

    qc: QuorumCert | None = None
    equivocation: bool = False


class VoteCollector:
    """Collects verified votes per (round, block) until a quorum forms a QC."""

    def __init__(self, config: ConsensusConfig) -> None:
        self._config = config
        self._by_block: dict[tuple[int, bytes], dict[int, bytes]] = {}
        self._first_vote: dict[tuple[int, int], bytes] = {}
        self._done: set[tuple[int, bytes]] = set()

    def add(self, vote: Vote, current_round: int) -> VoteOutcome:
        """Add a verified vote; returns the QC when this vote completes a quorum."""
        if not current_round - 2 <= vote.round <= current_round + VOTE_WINDOW_ROUNDS:
            return VoteOutcome()
        first = self._first_vote.setdefault((vote.round, vote.voter), vote.block_id)
        if first != vote.block_id:
            return VoteOutcome(equivocation=True)
        key = (vote.round, vote.block_id)
        if key in self._done:
            return VoteOutcome()
        signatures = self._by_block.setdefault(key, {})
        signatures[vote.voter] = vote.signature
        if len(signatures) < self._config.quorum:
            return VoteOutcome()
        self._done.add(key)
        del self._by_block[key]
        qc = QuorumCert(vote.round, vote.block_id, tuple(sorted(signatures.items())))
        return VoteOutcome(qc=qc)

    def prune(self, below_round: int) -> None:
        self._by_block = {k: v for k, v in self._by_block.items() if k[0] >= below_round}
        self._first_vote = {k: v for k, v in self._first_vote.items() if k[0] >= below_round}
        self._done = {k for k in self._done if k[0] >= below_round}


class TimeoutCollector:
    """Keeps each replica's latest verified timeout and forms a TC when 2f+1 share a round."""

    def __init__(self, config: ConsensusConfig) -> None:
        self._config = config
        self._latest: dict[int, Timeout] = {}

    def add(self, timeout: Timeout) -> TimeoutCert | None:
        """Add a verified timeout; returns a TC when 2f+1 signers time out in its round."""
        previous = self._latest.get(timeout.signer)
        if previous is not None and previous.round >= timeout.round:
            return None
        self._latest[timeout.signer] = timeout
        same_round = sorted(
            (t for t in self._latest.values() if t.round == timeout.round),
            key=lambda t: t.signer,
        )
        if len(same_round) < self._config.quorum:
            return None
        high_qc = max((t.high_qc for t in same_round), key=lambda qc: qc.round)
        entries = tuple((t.signer, t.high_qc.round, t.signature) for t in same_round)
        return TimeoutCert(timeout.round, entries, high_qc)

    def count(self, round_: int) -> int:
        return sum(1 for t in self._latest.values() if t.round == round_)
