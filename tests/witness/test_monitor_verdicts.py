"""The monitor's replay of a build-protocol log: every verdict recomputed, lies caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from logserver.core import canonical_json, note, tlog
from logserver.core.checkpoint import Checkpoint
from logserver.core.errors import RemoteError, VerificationError
from logserver.core.policy import Policy
from logserver.protocol import entries, signed
from logserver.protocol.rules import ProtocolViolation
from tests.support.dashboard_fixtures import ProtocolFixture
from witness.monitor import Monitor, VerdictChecker


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
        leaf = signed.Leaf.parse(data)
        verdict = leaf.entry.entry
        if isinstance(verdict, entries.Verdict) and verdict.outcome == "reproduced":
            # The log, with its own key, states a verdict the rules do not give: a well-formed
            # reproduced verdict under another threshold than the network's.
            obj = json.loads(data)
            obj["entry"]["threshold"] = len(verdict.agreeing)
            assert obj["entry"]["threshold"] != verdict.threshold
            forged = signed.SignedEntry.from_json(obj["entry"])
            network = fixture.state.config.network_id
            resigned = signed.sign_entry(forged.entry, fixture.log_signer, network)
            leaves[i] = signed.Leaf(resigned, leaf.time_ms).to_bytes()
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


def _signed_policy(fixture: ProtocolFixture, leaves: list[bytes]) -> tuple[Policy, bytes]:
    signer = fixture.log_signer
    policy = Policy.for_network(signer.vkey, [], 0, log_url="http://127.0.0.1:9")
    return policy, note.sign_note(_checkpoint(leaves).to_bytes(), signer)


def test_bytes_from_the_log_that_do_not_parse_are_remote_errors(tmp_path: Path) -> None:
    """The log's fault (exit 3), never the caller's usage error (exit 2)."""
    fixture, leaves = _history()
    policy, signed = _signed_policy(fixture, leaves)
    html = Monitor(policy, tmp_path / "a", lambda: b"<html>hello</html>", lambda o, n: [])
    with pytest.raises(RemoteError, match="checkpoint that does not parse"):
        html.check_once()
    garbage = [*leaves[:-1], b"not a leaf"]
    policy, signed = _signed_policy(fixture, garbage)
    replay = Monitor(
        policy,
        tmp_path / "b",
        lambda: signed,
        lambda o, n: [],
        verdicts=VerdictChecker(fixture.state.config),
        fetch_leaves=lambda start, end: garbage[start:end],
    )
    with pytest.raises(RemoteError, match="leaf that does not parse"):
        replay.check_once()
    assert not (tmp_path / "b" / "checkpoint").exists()
