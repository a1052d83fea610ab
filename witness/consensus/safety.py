"""DiemBFT v4 safety rules as pure predicates, and the durable safety state.

The three predicates (vote, time out, commit) are methods of :class:`SafetyRules` so that
tests can inject deliberately weakened rules (negative controls); production code always uses
``DIEMBFT_V4``. :class:`SafetyState` is what a replica must make durable before any vote or
timeout that depends on it leaves the node.
"""

from __future__ import annotations

from dataclasses import dataclass

from logserver.core.errors import FormatError
from witness.consensus.encoding import Reader, Writer
from witness.consensus.types import QuorumCert, TimeoutCert

SAFETY_STATE_VERSION = 1


class SafetyRules:
    """The DiemBFT v4 predicates. Subclass only in tests, to prove the simulator catches bugs."""

    #: When False the replica emits its vote/timeout before the Persist that covers it.
    persist_before_send: bool = True

    def safe_to_vote(
        self, block_round: int, qc_round: int, tc: TimeoutCert | None, last_voted_round: int
    ) -> bool:
        if block_round <= max(last_voted_round, qc_round):
            return False
        if block_round == qc_round + 1:
            return True
        return tc is not None and block_round == tc.round + 1 and qc_round >= max(tc.high_qc_rounds)

    def safe_to_timeout(
        self,
        round_: int,
        qc_round: int,
        tc: TimeoutCert | None,
        last_voted_round: int,
        highest_qc_round: int,
    ) -> bool:
        if qc_round < highest_qc_round or round_ <= max(last_voted_round - 1, qc_round):
            return False
        return round_ == qc_round + 1 or (tc is not None and round_ == tc.round + 1)

    def commits_parent(self, block_round: int, parent_round: int) -> bool:
        """2-chain rule: a certified block commits its parent iff their rounds are consecutive."""
        return block_round == parent_round + 1


DIEMBFT_V4 = SafetyRules()


@dataclass(frozen=True, slots=True)
class SafetyState:
    """Durable safety data: last voted round, highest QC (with its round), last timeout round.

    The whole highest QC is kept (not only its round) so that a replica restarted from this
    state alone can still time out and let the network form a TC.
    """

    last_voted_round: int
    high_qc: QuorumCert
    highest_timeout_round: int

    @property
    def highest_qc_round(self) -> int:
        return self.high_qc.round

    def to_bytes(self) -> bytes:
        out = Writer()
        out.u8(SAFETY_STATE_VERSION)
        out.u64(self.last_voted_round)
        out.u64(self.highest_timeout_round)
        self.high_qc.encode(out)
        return out.getvalue()

    @staticmethod
    def from_bytes(data: bytes) -> SafetyState:
        """Strict decoding; the replica re-verifies the QC against its config on load."""
        reader = Reader(data, "consensus safety state")
        version = reader.u8()
        if version != SAFETY_STATE_VERSION:
            raise FormatError("consensus safety state", f"unknown version {version}")
        last_voted_round = reader.u64()
        highest_timeout_round = reader.u64()
        high_qc = QuorumCert.decode(reader)
        reader.end()
        return SafetyState(last_voted_round, high_qc, highest_timeout_round)
