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

SAFETY_STATE_VERSION = 2


class SafetyRules:
    """The DiemBFT v4 predicates. Subclass only in tests, to prove the simulator catches bugs."""

    #: When False the replica emits its vote/timeout before the Persist that covers it.
    persist_before_send: bool = True
    #: When False the replica does not keep the TC that took it into its round across a
    #: restart (the defect of an earlier version: a network restarted in such a round hangs).
    persist_timeout_certificate: bool = True

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
    """Durable consensus state: last voted round, highest QC, last timeout round, highest TC.

    The first three are the safety data of DiemBFT v4. The whole highest QC is kept (not only
    its round) and so is the highest TC, so that a replica restarted from this state alone can
    still time out in the round it was in (the TC of the round before justifies that) and let
    the network form the next TC, even when every replica restarted at once.
    """

    last_voted_round: int
    high_qc: QuorumCert
    highest_timeout_round: int
    high_tc: TimeoutCert | None = None

    @property
    def highest_qc_round(self) -> int:
        return self.high_qc.round

    def to_bytes(self) -> bytes:
        out = Writer()
        out.u8(SAFETY_STATE_VERSION)
        out.u64(self.last_voted_round)
        out.u64(self.highest_timeout_round)
        self.high_qc.encode(out)
        out.u8(0 if self.high_tc is None else 1)
        if self.high_tc is not None:
            self.high_tc.encode(out)
        return out.getvalue()

    @staticmethod
    def from_bytes(data: bytes) -> SafetyState:
        """Strict decoding (version 1, without a TC, is still read); the replica re-verifies
        the certificates against its config on load."""
        reader = Reader(data, "consensus safety state")
        version = reader.u8()
        if version not in (1, SAFETY_STATE_VERSION):
            raise FormatError("consensus safety state", f"unknown version {version}")
        last_voted_round = reader.u64()
        highest_timeout_round = reader.u64()
        high_qc = QuorumCert.decode(reader)
        high_tc = TimeoutCert.decode(reader) if version > 1 and reader.flag() else None
        reader.end()
        return SafetyState(last_voted_round, high_qc, highest_timeout_round, high_tc)
