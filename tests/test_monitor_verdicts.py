"""The monitor's replay of a build-protocol log: every verdict recomputed, lies caught."""

from __future__ import annotations

import json

import pytest

from logserver import canonical_json, entries, tlog
from logserver.buildproto import ProtocolViolation
from logserver.checkpoint import Checkpoint
from logserver.errors import VerificationError
from tests.dashboard_fixtures import ProtocolFixture
from witness.monitor import VerdictChecker


def _checkpoint(leaves: list[bytes]) -> Checkpoint:
    tree = tlog.MemoryHashStore()
    for leaf in leaves:
        tree.append_record(leaf)
    return Checkpoint("example.test/log", len(leaves), tree.tree_hash(len(leaves)))


def _history() -> tuple[ProtocolFixture, list[bytes]]:
    fixture = ProtocolFixture()
    leaves, _ = fixture.builds(
        0, [("alpha", "1.0.0", "reproduced"), ("beta", "2.0.0", "not-reproduced")]
    )
    return fixture, leaves


def test_honest_history_replays_in_steps() -> None:
    fixture, leaves = _history()
    checker = VerdictChecker(fixture.state.config)
    half = len(leaves) // 2
    checker.advance(leaves[:half], _checkpoint(leaves[:half]))
    checker.advance(leaves[half:], _checkpoint(leaves))
    assert checker.size == len(leaves) and len(checker.state.jobs) == 2


def test_a_forged_verdict_is_caught() -> None:
    fixture, leaves = _history()
    for i, data in enumerate(leaves):
        leaf = entries.Leaf.parse(data)
        verdict = leaf.entry.entry
        if isinstance(verdict, entries.Verdict) and verdict.outcome == "reproduced":
            # The log, with its own key, states a verdict the rules do not give: a well-formed
            # reproduced verdict under another threshold than the network's.
            obj = json.loads(data)
            obj["entry"]["threshold"] = len(verdict.agreeing)
            assert obj["entry"]["threshold"] != verdict.threshold
            forged = entries.SignedEntry.from_json(obj["entry"])
            resigned = entries.sign_entry(forged.entry, fixture.log_signer)
            leaves[i] = entries.Leaf(resigned, leaf.time_ms).to_bytes()
            break
    else:
        pytest.fail("no reproduced verdict in the fixture")
    checker = VerdictChecker(fixture.state.config)
    with pytest.raises(ProtocolViolation):
        checker.advance(leaves, _checkpoint(leaves))


def test_entries_that_do_not_match_the_checkpoint_are_caught() -> None:
    fixture, leaves = _history()
    checker = VerdictChecker(fixture.state.config)
    other = _checkpoint([*leaves[:-1], canonical_json.encode({"not": "it"})])
    with pytest.raises(VerificationError, match="do not hash"):
        checker.advance(leaves, other)
