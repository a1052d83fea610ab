"""Offline checks of blocks, votes, timeouts, QCs and TCs: every way to be wrong is rejected."""

from __future__ import annotations

import dataclasses

import pytest

from tests.support.consensus_fixtures import (
    make_block,
    make_config,
    make_qc,
    make_tc,
    timeout,
    vote,
)
from witness.consensus import crypto
from witness.consensus.certificates import (
    MessageRejected,
    verify_block,
    verify_qc,
    verify_tc,
    verify_timeout,
    verify_vote,
)
from witness.consensus.types import QuorumCert

CONFIG = make_config(4)
BLOCK_ID = bytes(range(32))
OTHER_ID = bytes(32 - i for i in range(32))


def test_valid_qc_passes() -> None:
    verify_qc(CONFIG, make_qc(CONFIG, 3, BLOCK_ID))
    verify_qc(CONFIG, make_qc(CONFIG, 3, BLOCK_ID, [0, 1, 2, 3]))
    verify_qc(CONFIG, CONFIG.genesis_qc)


def test_qc_with_2f_signatures_rejected() -> None:
    with pytest.raises(MessageRejected) as caught:
        verify_qc(CONFIG, make_qc(CONFIG, 3, BLOCK_ID, [0, 1]))
    assert caught.value.reason == "qc-too-few-signers"


def test_qc_with_duplicate_signer_rejected() -> None:
    good = make_qc(CONFIG, 3, BLOCK_ID)
    signatures = (good.signatures[0], good.signatures[0], good.signatures[1])
    with pytest.raises(MessageRejected) as caught:
        verify_qc(CONFIG, QuorumCert(3, BLOCK_ID, signatures))
    assert caught.value.reason == "qc-duplicate-signer"


def test_qc_with_unknown_signer_rejected() -> None:
    good = make_qc(CONFIG, 3, BLOCK_ID)
    signatures = (*good.signatures, (7, good.signatures[0][1]))
    with pytest.raises(MessageRejected) as caught:
        verify_qc(CONFIG, QuorumCert(3, BLOCK_ID, signatures))
    assert caught.value.reason == "qc-unknown-signer"


def test_qc_from_another_network_rejected() -> None:
    other = make_config(4, network_id=b"another-network")
    with pytest.raises(MessageRejected) as caught:
        verify_qc(CONFIG, make_qc(other, 3, BLOCK_ID))
    assert caught.value.reason == "qc-bad-signature"


def test_qc_with_signature_over_another_block_rejected() -> None:
    good = make_qc(CONFIG, 3, BLOCK_ID)
    foreign = make_qc(CONFIG, 3, OTHER_ID)
    mixed = (good.signatures[0], good.signatures[1], foreign.signatures[2])
    with pytest.raises(MessageRejected) as caught:
        verify_qc(CONFIG, QuorumCert(3, BLOCK_ID, mixed))
    assert caught.value.reason == "qc-bad-signature"


def test_qc_signature_for_another_round_rejected() -> None:
    moved = dataclasses.replace(make_qc(CONFIG, 3, BLOCK_ID), round=4)
    with pytest.raises(MessageRejected):
        verify_qc(CONFIG, moved)


def test_fake_genesis_qc_rejected() -> None:
    with pytest.raises(MessageRejected) as caught:
        verify_qc(CONFIG, QuorumCert(0, BLOCK_ID, ()))
    assert caught.value.reason == "qc-bad-genesis"


def test_tc_checks() -> None:
    qc2 = make_qc(CONFIG, 2, BLOCK_ID)
    genesis = CONFIG.genesis_qc
    tc = make_tc(CONFIG, 5, {0: qc2, 1: genesis, 3: genesis})
    verify_tc(CONFIG, tc)
    assert tc.high_qc_rounds == (2, 0, 0)
    with pytest.raises(MessageRejected, match="tc-too-few-signers"):
        verify_tc(CONFIG, make_tc(CONFIG, 5, {0: qc2, 1: genesis}))
    with pytest.raises(MessageRejected, match="tc-high-qc-mismatch"):
        verify_tc(CONFIG, dataclasses.replace(tc, high_qc=genesis))
    lying = dataclasses.replace(tc, entries=((0, 1, tc.entries[0][2]), *tc.entries[1:]))
    with pytest.raises(MessageRejected, match="tc-bad-signature"):
        verify_tc(CONFIG, lying)
    with pytest.raises(MessageRejected, match="tc-duplicate-signer"):
        verify_tc(CONFIG, dataclasses.replace(tc, entries=(tc.entries[0], *tc.entries[:2])))
    other = make_config(4, network_id=b"elsewhere")
    with pytest.raises(MessageRejected, match="tc-bad-signature"):
        verify_tc(CONFIG, make_tc(other, 5, {0: genesis, 1: genesis, 2: genesis}))


def test_block_checks() -> None:
    block = make_block(CONFIG, 1, CONFIG.genesis_qc, b"1 a")
    verify_block(CONFIG, block)
    with pytest.raises(MessageRejected, match="block-bad-signature"):
        verify_block(CONFIG, dataclasses.replace(block, signature=bytes(64)))
    with pytest.raises(MessageRejected, match="block-bad-signature"):
        verify_block(CONFIG, dataclasses.replace(block, author=2))
    with pytest.raises(MessageRejected, match="block-unknown-author"):
        verify_block(CONFIG, dataclasses.replace(block, author=9))
    stale = make_block(CONFIG, 2, make_qc(CONFIG, 2, BLOCK_ID), b"x")
    with pytest.raises(MessageRejected, match="block-bad-round"):
        verify_block(CONFIG, stale)
    with pytest.raises(MessageRejected, match="qc-too-few-signers"):
        verify_block(CONFIG, make_block(CONFIG, 4, make_qc(CONFIG, 3, BLOCK_ID, [1]), b"x"))


def test_vote_and_timeout_checks() -> None:
    good = vote(CONFIG, 2, 7, BLOCK_ID)
    verify_vote(CONFIG, good)
    with pytest.raises(MessageRejected, match="vote-bad-signature"):
        verify_vote(CONFIG, dataclasses.replace(good, block_id=OTHER_ID))
    with pytest.raises(MessageRejected, match="vote-bad-signature"):
        verify_vote(CONFIG, dataclasses.replace(good, voter=1))
    with pytest.raises(MessageRejected, match="vote-unknown-signer"):
        verify_vote(CONFIG, dataclasses.replace(good, voter=4))
    qc = make_qc(CONFIG, 3, BLOCK_ID)
    t = timeout(CONFIG, 1, 5, qc)
    verify_timeout(CONFIG, t)
    with pytest.raises(MessageRejected, match="timeout-bad-signature"):
        verify_timeout(CONFIG, dataclasses.replace(t, high_qc=CONFIG.genesis_qc))
    with pytest.raises(MessageRejected, match="timeout-qc-round-not-below-round"):
        verify_timeout(CONFIG, timeout(CONFIG, 1, 3, qc))
    ghost = make_qc(CONFIG, 3, OTHER_ID, [1])
    with pytest.raises(MessageRejected, match="qc-too-few-signers"):
        verify_timeout(CONFIG, timeout(CONFIG, 1, 5, ghost))


def test_signed_strings_are_domain_separated() -> None:
    nid = CONFIG.network_id
    strings = {
        crypto.vote_message(nid, 1, BLOCK_ID),
        crypto.timeout_message(nid, 1, 0),
        crypto.proposal_message(nid, BLOCK_ID),
        crypto.vote_message(b"other", 1, BLOCK_ID),
    }
    assert len(strings) == 4
    assert crypto.vote_message(nid, 1, BLOCK_ID) == (
        b"synchronicity/consensus/v1 vote\x00\x00\x0ctest-network"
        + (1).to_bytes(8, "big")
        + BLOCK_ID
    )
