"""The node's co-signing rule for its own log, on the real LMDB cosign store.

Never two roots for one size, never backwards, never another log; across a reopen; and the
own log's head lives beside the heads add-checkpoint keeps for other logs without touching them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from logserver.core.checkpoint import Checkpoint
from logserver.core.errors import VerificationError
from witness.cosign.rules import Accepted, Submission, TreeHead, decide
from witness.cosign.store import CosignStore

ORIGIN = "example.test/log"
OTHER = "other.test/log"


def cp(size: int, fill: int) -> Checkpoint:
    return Checkpoint(ORIGIN, size, bytes([fill]) * 32)


def test_cosigning_rule_survives_reopen(tmp_path: Path) -> None:
    store = CosignStore(tmp_path)
    assert store.latest(ORIGIN) is None
    assert store.claim_cosignature(ORIGIN, cp(5, 1))
    assert not store.claim_cosignature(ORIGIN, cp(5, 1))  # nothing new: not co-signed again
    with pytest.raises(VerificationError, match="second root"):
        store.claim_cosignature(ORIGIN, cp(5, 2))
    assert not store.claim_cosignature(ORIGIN, cp(3, 7))  # smaller after larger: never
    assert store.claim_cosignature(ORIGIN, cp(9, 3))
    store.close()
    again = CosignStore(tmp_path)
    assert again.latest(ORIGIN) == TreeHead(9, bytes([3]) * 32)
    with pytest.raises(VerificationError):
        again.claim_cosignature(ORIGIN, cp(9, 4))
    with pytest.raises(VerificationError, match="another log"):
        again.claim_cosignature(ORIGIN, Checkpoint(OTHER, 10, bytes(32)))
    assert again.latest(ORIGIN) == TreeHead(9, bytes([3]) * 32)
    assert again.latest(OTHER) is None
    again.close()


def test_own_log_and_other_logs_share_one_store(tmp_path: Path) -> None:
    store = CosignStore(tmp_path)
    try:
        other = Checkpoint(OTHER, 4, bytes([8]) * 32)
        submission = Submission(0, (), other, other.to_bytes())
        accepted = store.check_and_persist(OTHER, lambda stored: decide(submission, stored))
        assert isinstance(accepted, Accepted)
        assert store.claim_cosignature(ORIGIN, cp(2, 1))
        assert store.latest(OTHER) == TreeHead(4, bytes([8]) * 32)
        assert store.latest(ORIGIN) == TreeHead(2, bytes([1]) * 32)
    finally:
        store.close()
