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
OLD_KEY = builder_key("witness-1", 101)


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
    new_key = builder_key("witness-1")
    other = Request({"name": "serde", "version": "1.0.0"})
    cases = [(OLD_KEY, 1_999, True), (OLD_KEY, 2_000, False), (new_key, 2_000, True)]
    for i, (key, time_ms, accepted) in enumerate(cases):
        shutil.copytree(tmp_path / "log", tmp_path / f"mirror-{i}")
        store = mirror_with(tmp_path / f"mirror-{i}", other, key, time_ms)
        check = validator(rotated, store, now_ms=time_ms)  # starts: the old leaves verify
        assert check.state.size == 2
        assert check.check(store, 2, 3) is accepted, (key.key_id, time_ms)
        store.close()
