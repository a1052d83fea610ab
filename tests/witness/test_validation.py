"""A witness's check of new log entries (witness/validation.py) on a real LMDB mirror: key
epochs and the clock bounds."""

from __future__ import annotations

import shutil
from pathlib import Path

from logserver.core import note
from logserver.protocol.entries import Commit, Entry, Request
from logserver.protocol.fold import protocol_config
from logserver.protocol.network import NetworkConfig
from logserver.protocol.signed import Leaf, sign_entry
from logserver.storage import LogStore
from tests.logserver.test_storage import ORIGIN, ProtocolLog, builder_key, network, sign
from witness.validation import ProtocolValidator

REQUEST = Request({"name": "itoa", "version": "1.0.11"})
OLD_KEY = builder_key("witness-1")


def history(path: Path) -> None:
    """A log whose first two leaves (at 1000 ms) are witness-1's, signed with its old key."""
    log = ProtocolLog(path, network(), now_ms=1_000)
    log.submit(REQUEST, OLD_KEY)
    log.submit(Commit(REQUEST.job, "witness-1", "11" * 32), OLD_KEY)
    log.close()


def mirror_with(path: Path, entry: Entry, signer: note.Signer, time_ms: int) -> LogStore:
    """The mirror of a witness: the history, plus one leaf the log appended at ``time_ms``."""
    store = LogStore(path, ORIGIN)
    leaf = Leaf(sign_entry(entry, signer, "test.network"), time_ms)
    store.append_batch([leaf.to_bytes()], sign)
    return store


def validator(config: NetworkConfig, store: LogStore, now_ms: int) -> ProtocolValidator:
    return ProtocolValidator(protocol_config(config), store, 2, clock=lambda: now_ms / 1000)


def test_a_witness_checks_history_with_the_keys_valid_when_it_was_written(tmp_path: Path) -> None:
    history(tmp_path / "log")
    rotated = network(rotated_at=2_000)
    new_key = builder_key("witness-1", 1)
    other = Request({"name": "serde", "version": "1.0.0"})
    cases = [(OLD_KEY, 1_999, True), (OLD_KEY, 2_000, False), (new_key, 2_000, True)]
    for i, (key, time_ms, accepted) in enumerate(cases):
        shutil.copytree(tmp_path / "log", tmp_path / f"mirror-{i}")
        store = mirror_with(tmp_path / f"mirror-{i}", other, key, time_ms)
        check = validator(rotated, store, now_ms=time_ms)  # starts: the old leaves verify
        assert check.state.size == 2
        assert check.check(store, 2, 3) is accepted, (key.key_id, time_ms)
        store.close()


class Clock:
    """The witness's clock, in milliseconds, set by the test."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> float:
        return self.now_ms / 1000


def append(store: LogStore, time_ms: int, package: str) -> int:
    """The log appends a request (by witness-2) stamped ``time_ms``; returns the new size."""
    entry = Request({"name": package, "version": "1.0.0"})
    leaf = Leaf(sign_entry(entry, builder_key("witness-2"), "test.network"), time_ms)
    store.append_batch([leaf.to_bytes()], sign)
    return store.size()


def started(tmp_path: Path, now_ms: int) -> tuple[LogStore, ProtocolValidator, Clock]:
    """A witness started at ``now_ms`` on a mirror of the history (2 leaves at 1000)."""
    history(tmp_path / "log")
    store = LogStore(tmp_path / "log", ORIGIN)
    clock = Clock(now_ms)
    return store, ProtocolValidator(protocol_config(network()), store, 2, clock=clock), clock


def test_a_log_that_freezes_its_clock_is_refused(tmp_path: Path) -> None:
    store, check, clock = started(tmp_path, now_ms=20_000)
    frozen = 1_000
    # The first proposal after a start is not judged behind: nothing to compare with yet.
    assert check.check(store, 2, append(store, frozen, "a"))
    clock.now_ms = 40_000  # 1000 is within 30 s of the last acceptance (20 000)
    assert check.check(store, 3, append(store, frozen, "b"))
    clock.now_ms = 45_000  # 1000 is more than 30 s behind the last acceptance (40 000)
    size = append(store, frozen, "c")
    assert not check.check(store, 4, size)
    assert check.state.size == 4
    assert check.check(store, 4, append(store, 44_000, "d"))  # fresh leaves unblock it


def test_leaves_the_log_appended_during_an_outage_pass(tmp_path: Path) -> None:
    # All witnesses were down for an hour; the log went on stamping (a close at a deadline,
    # say). Judged against today's clock these would be refused forever; they pass.
    store, check, clock = started(tmp_path, now_ms=3_600_000)
    assert check.check(store, 2, append(store, 2_000, "a"))
    clock.now_ms = 3_601_000
    assert check.check(store, 3, append(store, 3_600_500, "b"))
    # A stall while running: accepted at 3 601 000, the next batch is appended at once but
    # proposed 10 minutes later. It was on time when appended: it passes.
    size = append(store, 3_601_100, "c")
    clock.now_ms = 4_201_000
    assert check.check(store, 4, size)


def test_a_parents_leaves_are_not_judged_behind(tmp_path: Path) -> None:
    store, check, _ = started(tmp_path, now_ms=100_000)
    assert check.check(store, 2, append(store, 1_000, "a"))  # the first after a start
    size = append(store, 1_000, "b")  # more than 30 s behind the last acceptance (100 000)
    assert not check.check(store, 3, size)  # as a new leaf of a proposal: refused
    # Others certified it while this witness was away: as the proposal's parent, it passes.
    assert check.check(store, size, size)
    assert check.state.size == size


def test_a_leaf_too_far_ahead_of_the_clock_is_refused(tmp_path: Path) -> None:
    store, check, clock = started(tmp_path, now_ms=20_000)
    assert not check.check(store, 2, append(store, 50_001, "a"))  # more than 30 s ahead
    clock.now_ms = 20_001
    assert check.check(store, 2, 3)  # 30 s ahead exactly


def test_folding_certified_leaves_does_not_move_the_reference(tmp_path: Path) -> None:
    store, check, clock = started(tmp_path, now_ms=20_000)
    assert check.check(store, 2, append(store, 19_000, "a"))  # the reference: 20 000
    size = append(store, 19_500, "b")
    clock.now_ms = 600_000
    assert check.check(store, size, size)  # a commit this witness did not vote for
    # Appended (at 19 600) while consensus was stalled, proposed now: judged against 20 000.
    assert check.check(store, size, append(store, 19_600, "c"))
