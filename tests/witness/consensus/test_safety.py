"""The DiemBFT v4 predicates, their boundaries, and the safety state's strict encoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logserver.core.errors import FormatError
from tests.support.consensus_fixtures import make_config, make_qc, make_tc
from witness.consensus.safety import DIEMBFT_V4, SafetyState
from witness.consensus.types import QuorumCert, TimeoutCert

CONFIG = make_config(4)
ID = bytes(range(32))


def tc_with(round_: int, high_qc_rounds: list[int]) -> TimeoutCert:
    qcs = {
        i: (make_qc(CONFIG, r, ID) if r else CONFIG.genesis_qc)
        for i, r in enumerate(high_qc_rounds)
    }
    return make_tc(CONFIG, round_, qcs)


def test_vote_requires_a_higher_round() -> None:
    vote = DIEMBFT_V4.safe_to_vote
    assert vote(5, 4, None, 4)
    assert not vote(5, 4, None, 5)  # already voted in this round
    assert not vote(5, 4, None, 6)
    assert not vote(4, 4, None, 0)  # block round must exceed its QC round


def test_vote_requires_consecutive_qc_or_a_justifying_tc() -> None:
    vote = DIEMBFT_V4.safe_to_vote
    assert not vote(6, 4, None, 0)  # gap without a TC
    tc5 = tc_with(5, [4, 3, 0])
    assert vote(6, 4, tc5, 0)  # qc round 4 >= max(4, 3, 0)
    assert not vote(6, 3, tc5, 0)  # qc round below the TC's highest: the lock
    assert not vote(7, 4, tc5, 0)  # the TC must be for the previous round
    tc4 = tc_with(4, [2, 2, 2])
    assert not vote(6, 4, tc4, 0)


def test_timeout_rule_boundaries() -> None:
    timeout = DIEMBFT_V4.safe_to_timeout
    assert timeout(5, 4, None, 5, 4)  # may time out in the round it voted in
    assert not timeout(5, 4, None, 6, 4)  # voted in a later round
    assert not timeout(5, 3, None, 4, 4)  # QC below the highest QC round seen
    assert not timeout(5, 5, None, 0, 5)  # round must exceed the QC round
    assert not timeout(6, 4, None, 0, 4)  # gap, no TC
    assert timeout(6, 4, tc_with(5, [4, 4, 4]), 0, 4)
    assert not timeout(7, 4, tc_with(5, [4, 4, 4]), 0, 4)


def test_commit_rule_needs_consecutive_rounds() -> None:
    assert DIEMBFT_V4.commits_parent(8, 7)
    assert not DIEMBFT_V4.commits_parent(9, 7)
    assert not DIEMBFT_V4.commits_parent(7, 7)


@given(
    block_round=st.integers(1, 40),
    qc_round=st.integers(0, 40),
    last_voted=st.integers(0, 40),
    tc_round=st.one_of(st.none(), st.integers(1, 40)),
    tc_high=st.integers(0, 40),
)
def test_vote_rule_properties(
    block_round: int, qc_round: int, last_voted: int, tc_round: int | None, tc_high: int
) -> None:
    tc = None
    if tc_round is not None:
        high = min(tc_high, tc_round - 1)
        tc = TimeoutCert(tc_round, ((0, high, b""), (1, 0, b""), (2, 0, b"")), CONFIG.genesis_qc)
    allowed = DIEMBFT_V4.safe_to_vote(block_round, qc_round, tc, last_voted)
    if allowed:
        # Never twice in one round, never below the block's own QC, and only extending the
        # certified block directly or through a TC that does not hide a higher QC.
        assert block_round > last_voted and block_round > qc_round
        assert block_round == qc_round + 1 or (
            tc is not None and block_round == tc.round + 1 and qc_round >= max(tc.high_qc_rounds)
        )
        assert not DIEMBFT_V4.safe_to_vote(block_round, qc_round, tc, block_round)


def test_safety_state_round_trip_and_strictness() -> None:
    state = SafetyState(7, make_qc(CONFIG, 5, ID), 6)
    data = state.to_bytes()
    assert data[0] == 2 and data[-1] == 0  # version 2, no TC
    assert SafetyState.from_bytes(data) == state
    assert state.highest_qc_round == 5
    for bad in (data[:-1], data + b"\x00", b"\x03" + data[1:], data[:-1] + b"\x02", b""):
        with pytest.raises(FormatError):
            SafetyState.from_bytes(bad)
    # Version 1 (no TC) is still read, as a state without a TC.
    assert SafetyState.from_bytes(b"\x01" + data[1:-1]) == state
    with pytest.raises(FormatError):
        SafetyState.from_bytes(b"\x01" + data[1:])


def test_safety_state_keeps_the_highest_timeout_certificate() -> None:
    qc = make_qc(CONFIG, 5, ID)
    tc = make_tc(CONFIG, 6, {0: qc, 1: qc, 2: qc})
    state = SafetyState(7, qc, 6, tc)
    assert SafetyState.from_bytes(state.to_bytes()) == state


@given(st.binary(max_size=300))
def test_safety_state_decoding_never_crashes(data: bytes) -> None:
    try:
        state = SafetyState.from_bytes(data)
    except FormatError:
        return
    if data[0] == 2:
        assert state.to_bytes() == data


def test_genesis_state_round_trip() -> None:
    state = SafetyState(0, CONFIG.genesis_qc, 0)
    assert SafetyState.from_bytes(state.to_bytes()).high_qc == QuorumCert(0, CONFIG.genesis.id, ())
