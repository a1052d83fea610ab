"""The witness's co-signing rule, on real LMDB: never two roots for one size, never backwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from logserver.checkpoint import Checkpoint
from logserver.errors import VerificationError
from witness.state import WitnessState

ORIGIN = "example.test/log"


def cp(size: int, fill: int) -> Checkpoint:
    return Checkpoint(ORIGIN, size, bytes([fill]) * 32)


def test_cosigning_rule_survives_reopen(tmp_path: Path) -> None:
    state = WitnessState(tmp_path)
    assert state.claim_cosignature(cp(5, 1))
    assert not state.claim_cosignature(cp(5, 1))  # nothing new: not co-signed again
    with pytest.raises(VerificationError, match="second root"):
        state.claim_cosignature(cp(5, 2))
    assert not state.claim_cosignature(cp(3, 7))  # smaller after larger: never
    assert state.claim_cosignature(cp(9, 3))
    state.close()
    again = WitnessState(tmp_path)
    assert again.last_cosigned() == cp(9, 3)
    with pytest.raises(VerificationError):
        again.claim_cosignature(cp(9, 4))
    with pytest.raises(VerificationError, match="another log"):
        again.claim_cosignature(Checkpoint("other.test/log", 10, bytes(32)))
    again.close()
