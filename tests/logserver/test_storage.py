"""LMDB storage, the compact frontier and the sequencer, in process (real LMDB on disk)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logserver.batcher import ProtocolBatcher
from logserver.core import canonical_json, note, tlog
from logserver.core.checkpoint import Checkpoint
from logserver.core.compact import Frontier
from logserver.core.cosignature import CosignatureSigner
from logserver.core.errors import OperationalError, UsageError
from logserver.protocol.entries import Commit, Entry, Request
from logserver.protocol.fold import protocol_config
from logserver.protocol.network import LogInfo, NetworkConfig, PreviousKey, WitnessInfo
from logserver.protocol.rules import ProtocolViolation
from logserver.protocol.signed import sign_entry
from logserver.sequencer import QueueFull, Sequencer
from logserver.storage import LogStore

ORIGIN = "example.test/log"
SIGNER = note.Signer(ORIGIN, bytes(range(32)))


def sign(cp: Checkpoint) -> bytes:
    return note.sign_note(cp.to_bytes(), SIGNER)


@given(st.lists(st.binary(max_size=40), max_size=150), st.integers(min_value=0, max_value=150))
@settings(max_examples=60, deadline=None)
def test_frontier_matches_stored_hashes(records: list[bytes], split: int) -> None:
    split = min(split, len(records))
    memory = tlog.MemoryHashStore()
    for r in records[:split]:
        memory.append_record(r)
    frontier = Frontier.load(split, memory)
    assert frontier.tree_hash() == memory.tree_hash(split)
    for n, r in enumerate(records[split:], start=split):
        assert frontier.append(r) == tlog.stored_hashes(n, r, memory)
        memory.append_record(r)
        assert frontier.tree_hash() == memory.tree_hash(n + 1)


def test_frontier_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match="levels"):
        Frontier(3, {0: b"\0" * 32})


def test_batches_are_durable_and_reopen(tmp_path: Path) -> None:
    store = LogStore(tmp_path, ORIGIN)
    assert store.latest_checkpoint() is None
    first, cp = store.append_batch([b"a", b"b", b"c"], sign)
    assert first == 0
    first, cp = store.append_batch([b"d"], sign)
    assert first == 3 and store.size() == 4
    assert store.entries(0, 4) == [b"a", b"b", b"c", b"d"]
    assert store.checkpoint_sizes(10) == [4, 3]
    assert store.checkpoint_sizes(10, before=4) == [3]
    store.close()
    again = LogStore(tmp_path, ORIGIN)
    assert again.latest_checkpoint() == cp
    with pytest.raises(UsageError):
        again.entry(4)
    with pytest.raises(UsageError):
        again.inclusion_proof(0, 5)
    again.close()
    with pytest.raises(OperationalError, match="belongs to origin"):
        LogStore(tmp_path, "other.test/log")


def test_failed_signing_writes_nothing(tmp_path: Path) -> None:
    store = LogStore(tmp_path, ORIGIN)
    store.append_batch([b"a"], sign)

    def broken(cp: Checkpoint) -> bytes:
        raise OperationalError("HSM unavailable")

    with pytest.raises(OperationalError):
        store.append_batch([b"b", b"c"], broken)
    assert store.size() == 1
    assert store.append_batch([b"b"], sign)[0] == 1


def test_sequencer_batches_and_orders(tmp_path: Path) -> None:
    store = LogStore(tmp_path, ORIGIN)
    seq = Sequencer(store, sign, max_batch=16, max_delay=0.01)
    sizes: list[int] = []
    seq.add_listener(lambda done: sizes.append(done.count))
    seq.start()
    futures = [seq.submit(b"e%d" % i) for i in range(100)]
    indexes = [f.result(10) for f in futures]
    group = seq.submit_many([b"g1", b"g2", b"g3"]).result(10)
    seq.stop()
    assert sorted(indexes) == list(range(100))
    for submitted, index in enumerate(indexes):
        assert store.entry(index) == b"e%d" % submitted
    assert store.entries(group, group + 3) == [b"g1", b"g2", b"g3"]
    assert max(sizes) <= 16 and sum(sizes) == 103


def test_sequencer_pushes_back_when_full(tmp_path: Path) -> None:
    store = LogStore(tmp_path, ORIGIN)
    seq = Sequencer(store, sign, max_queue=2)  # not started: nothing drains the queue
    seq.submit(b"1")
    seq.submit(b"2")
    with pytest.raises(QueueFull):
        seq.submit(b"3")
    with pytest.raises(ValueError):
        seq.submit_many([])


def test_sequencer_failure_reaches_every_submitter(tmp_path: Path) -> None:
    store = LogStore(tmp_path, ORIGIN)
    gate = threading.Event()

    def failing(cp: Checkpoint) -> bytes:
        gate.wait(5)
        raise OperationalError("disk on fire")

    seq = Sequencer(store, failing, max_batch=1)
    seq.start()
    first = seq.submit(b"a")
    second = seq.submit(b"b")
    gate.set()
    for fut in (first, second):
        with pytest.raises(OperationalError):
            fut.result(5)
    assert not seq.healthy
    with pytest.raises(OperationalError, match="stopped"):
        seq.submit(b"c")
    assert store.size() == 0


# ---------------------------------------------------------------------------- protocol logs

WITNESS_NAMES = [f"witness-{i}" for i in range(1, 5)]


def builder_key(name: str, seed: int | None = None) -> note.Signer:
    """The entry key of a witness (seed = its number unless given)."""
    return note.Signer(name, bytes([seed or WITNESS_NAMES.index(name) + 1]) * 32)


def network(network_id: str = "test.network", rotated_at: int | None = None) -> NetworkConfig:
    """Four witnesses; with ``rotated_at``, witness-1 replaced its key (seed 101) by seed 1 then."""
    witnesses = []
    for i, name in enumerate(WITNESS_NAMES, start=1):
        seed, previous = i, tuple[PreviousKey, ...]()
        if i == 1 and rotated_at is None:
            seed = 101
        elif i == 1 and rotated_at is not None:
            previous = (PreviousKey(CosignatureSigner(name, bytes([101]) * 32).vkey, rotated_at),)
        current = CosignatureSigner(name, bytes([seed]) * 32)
        witnesses.append(WitnessInfo(name, current.vkey, f"http://{name}", previous))
    log = LogInfo(ORIGIN, SIGNER.vkey, "http://log")
    return NetworkConfig(network_id, log, tuple(witnesses), f=1)


class ProtocolLog:
    """A protocol log on a real LogStore: batcher, sequencer and a settable clock (ms)."""

    def __init__(self, path: Path, config: NetworkConfig, now_ms: int) -> None:
        self.now_ms = now_ms
        self.store = LogStore(path, ORIGIN)
        self.batcher = ProtocolBatcher(
            protocol_config(config), SIGNER, self.store, clock=lambda: self.now_ms / 1000
        )
        self.sequencer = Sequencer(self.store, sign, batcher=self.batcher, tick=0.05)
        self.sequencer.start()

    def submit(self, entry: Entry, signer: note.Signer, network_id: str = "test.network") -> int:
        signed = sign_entry(entry, signer, network_id)
        return self.sequencer.submit(canonical_json.encode(signed.to_json())).result(10)

    def close(self) -> None:
        self.sequencer.stop()
        self.store.close()


def test_a_log_restarts_after_a_key_rotation(tmp_path: Path) -> None:
    old = builder_key("witness-1", 101)
    first = ProtocolLog(tmp_path, network(), now_ms=1_000)
    request = Request({"name": "itoa", "version": "1.0.11"})
    first.submit(request, old)
    first.submit(Commit(request.job, "witness-1", "11" * 32), old)
    first.close()
    # witness-1's key is replaced from log time 2000: history still verifies with the old key.
    again = ProtocolLog(tmp_path, network(rotated_at=2_000), now_ms=2_000)
    try:
        assert again.batcher.state.size == 2
        other = Request({"name": "serde", "version": "1.0.0"})
        with pytest.raises(ProtocolViolation) as refused:
            again.submit(other, old)
        assert refused.value.rule == "unregistered-key"
        assert again.submit(other, builder_key("witness-1")) == 2
    finally:
        again.close()
    # A log that kept the old config would refuse the new key's entry as history.
    with pytest.raises(ProtocolViolation, match="unregistered-key"):
        ProtocolLog(tmp_path, network(), now_ms=3_000)


def test_a_log_refuses_entries_signed_for_another_network(tmp_path: Path) -> None:
    log = ProtocolLog(tmp_path, network(), now_ms=1_000)
    try:
        request = Request({"name": "itoa", "version": "1.0.11"})
        key = builder_key("witness-2")
        with pytest.raises(ProtocolViolation) as refused:
            log.submit(request, key, network_id="another.network")
        assert refused.value.rule == "bad-signature"
        assert log.submit(request, key) == 0
    finally:
        log.close()
