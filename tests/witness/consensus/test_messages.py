"""Wire encoding of consensus messages: round trips, strictness, bounds and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logserver.core.errors import FormatError, UsageError
from tests.support.consensus_fixtures import (
    NETWORK_ID,
    make_block,
    make_config,
    make_qc,
    make_tc,
    timeout,
)
from witness.consensus import messages as m
from witness.consensus.types import MAX_PAYLOAD, Block, QuorumCert, TimeoutCert

CONFIG = make_config(4)
ID = bytes(range(32))

sig = st.binary(min_size=64, max_size=64)
block_id = st.binary(min_size=32, max_size=32)
rounds = st.integers(0, 2**64 - 1)
signers = st.lists(st.integers(0, 1023), unique=True, max_size=12).map(sorted)


@st.composite
def qcs(draw: st.DrawFn) -> QuorumCert:
    return QuorumCert(draw(rounds), draw(block_id), tuple((s, draw(sig)) for s in draw(signers)))


@st.composite
def tcs(draw: st.DrawFn) -> TimeoutCert:
    entries = tuple((s, draw(rounds), draw(sig)) for s in draw(signers))
    return TimeoutCert(draw(rounds), entries, draw(qcs()))


@st.composite
def blocks(draw: st.DrawFn) -> Block:
    round_, author, qc = draw(rounds), draw(st.integers(0, 65535)), draw(qcs())
    payload = draw(st.binary(max_size=200))
    block_id = Block.compute_id(NETWORK_ID, round_, author, qc, payload)
    return Block(round_, author, qc, payload, draw(sig), block_id)


any_message = st.one_of(
    st.builds(m.Proposal, blocks(), st.one_of(st.none(), tcs())),
    st.builds(m.Vote, rounds, block_id, st.integers(0, 65535), sig),
    st.builds(m.Timeout, rounds, st.integers(0, 65535), qcs(), st.one_of(st.none(), tcs()), sig),
    st.builds(m.SyncRequest, block_id, st.integers(0, 65535)),
    st.builds(m.SyncResponse, st.lists(blocks(), max_size=3).map(tuple)),
)


@settings(max_examples=300)
@given(any_message)
def test_round_trip(message: m.Message) -> None:
    data = message.to_bytes()
    decoded = m.message_from_bytes(data, NETWORK_ID)
    assert decoded == message
    assert decoded.to_bytes() == data
    assert type(message).from_bytes(data, NETWORK_ID) == message


@settings(max_examples=100)
@given(any_message, st.data())
def test_truncation_and_trailing_bytes_rejected(message: m.Message, data: st.DataObject) -> None:
    encoded = message.to_bytes()
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(FormatError):
        m.message_from_bytes(encoded[:cut], NETWORK_ID)
    with pytest.raises(FormatError):
        m.message_from_bytes(encoded + b"\x00", NETWORK_ID)


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_fuzzed_bytes_either_rejected_or_canonical(data: bytes) -> None:
    try:
        message = m.message_from_bytes(data, NETWORK_ID)
    except FormatError:
        return
    assert message.to_bytes() == data


@settings(max_examples=200)
@given(any_message, st.data())
def test_bit_flips_never_crash(message: m.Message, data: st.DataObject) -> None:
    encoded = bytearray(message.to_bytes())
    position = data.draw(st.integers(0, len(encoded) - 1))
    encoded[position] ^= 1 << data.draw(st.integers(0, 7))
    try:
        decoded = m.message_from_bytes(bytes(encoded), NETWORK_ID)
    except FormatError:
        return
    assert decoded.to_bytes() == bytes(encoded)


def test_wrong_kind_rejected() -> None:
    vote = m.Vote(1, ID, 0, bytes(64))
    with pytest.raises(FormatError, match="expected Proposal"):
        m.Proposal.from_bytes(vote.to_bytes(), NETWORK_ID)
    with pytest.raises(FormatError, match="unknown kind"):
        m.message_from_bytes(b"\x09", NETWORK_ID)


def test_unsorted_or_duplicate_signers_rejected() -> None:
    qc = make_qc(CONFIG, 3, ID)
    swapped = QuorumCert(3, ID, (qc.signatures[1], qc.signatures[0], qc.signatures[2]))
    duplicated = QuorumCert(3, ID, (qc.signatures[0], qc.signatures[0], qc.signatures[2]))
    for bad in (swapped, duplicated):
        data = m.Timeout(5, 1, bad, None, bytes(64)).to_bytes()
        with pytest.raises(FormatError, match="strictly increasing"):
            m.message_from_bytes(data, NETWORK_ID)


def test_size_bounds() -> None:
    too_big = b"\x05" + b"\x00" * m.MAX_MESSAGE_BYTES
    with pytest.raises(FormatError, match="exceed"):
        m.message_from_bytes(too_big, NETWORK_ID)
    with pytest.raises(UsageError):
        make_block(CONFIG, 1, CONFIG.genesis_qc, b"x" * (MAX_PAYLOAD + 1))
    block = make_block(CONFIG, 1, CONFIG.genesis_qc, b"1 ok")
    data = bytearray(m.Proposal(block, None).to_bytes())
    # Rewrite the payload length prefix to claim more than the bound.
    offset = 1 + 8 + 2 + 8 + 32 + 2 + 0
    data[offset : offset + 4] = (MAX_PAYLOAD + 1).to_bytes(4, "big")
    with pytest.raises(FormatError, match="exceeds"):
        m.message_from_bytes(bytes(data), NETWORK_ID)
    many = b"\x05" + (m.MAX_SYNC_BLOCKS + 1).to_bytes(2, "big")
    with pytest.raises(FormatError, match="blocks exceed"):
        m.message_from_bytes(many, NETWORK_ID)


def test_block_id_depends_on_network_and_content() -> None:
    block = make_block(CONFIG, 1, CONFIG.genesis_qc, b"1 a")
    data = m.Proposal(block, None).to_bytes()
    assert m.Proposal.from_bytes(data, NETWORK_ID).block.id == block.id
    assert m.Proposal.from_bytes(data, b"other").block.id != block.id
    assert make_block(CONFIG, 1, CONFIG.genesis_qc, b"1 b").id != block.id


def test_real_messages_round_trip() -> None:
    qc = make_qc(CONFIG, 2, ID)
    tc = make_tc(CONFIG, 3, {0: qc, 1: qc, 2: CONFIG.genesis_qc})
    block = make_block(CONFIG, 4, qc, b"5 x")
    for message in (m.Proposal(block, tc), timeout(CONFIG, 1, 4, qc), m.SyncResponse((block,))):
        assert m.message_from_bytes(message.to_bytes(), NETWORK_ID) == message
