"""LMDB storage, the compact frontier and the sequencer, in process (real LMDB on disk)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logserver.batcher import ProtocolBatcher
from logserver.core import canonical_json, note, tlog
from logserver.core.checkpoint import Checkpoint
from logserver.core.compact import Frontier
from logserver.core.cosignature import CosignatureSigner
from logserver.core.errors import FormatError, OperationalError, UsageError
from logserver.http.service import LogConfig, LogService
from logserver.protocol.entries import (
    Commit,
    Entry,
    Request,
    Reveal,
    Verdict,
    compute_commitment,
)
from logserver.protocol.fold import protocol_config
from logserver.protocol.network import LogInfo, NetworkConfig, PreviousKey, WitnessInfo
from logserver.protocol.rules import ProtocolState, ProtocolViolation
from logserver.protocol.signed import Leaf, sign_entry
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
    """The entry key of a witness in ``network()``: seed = its number, except witness-1's,
    whose key of seed 101 is replaced by seed 1 in ``network(rotated_at=...)``."""
    default = 101 if name == "witness-1" else WITNESS_NAMES.index(name) + 1
    return note.Signer(name, bytes([seed or default]) * 32)


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
    old = builder_key("witness-1")
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
        assert again.submit(other, builder_key("witness-1", 1)) == 2
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


# ---------------------------------------------------------------------- no entry stops the log


class PoisonBatcher:
    """Passes entries through, but fails (as a bug would) on a batch holding b"poison"."""

    def prepare(self, submissions: Sequence[bytes]) -> tuple[list[bytes], list[int | Exception]]:
        if b"poison" in submissions:
            raise RuntimeError("the batcher broke on this entry")
        return list(submissions), list(range(len(submissions)))

    def committed(self) -> None:
        pass


def test_a_batch_that_cannot_be_prepared_is_refused_and_the_sequencer_goes_on(
    tmp_path: Path,
) -> None:
    store = LogStore(tmp_path, ORIGIN)
    seq = Sequencer(store, sign, batcher=PoisonBatcher(), tick=0.05)
    seq.start()
    assert seq.submit(b"before").result(10) == 0
    with pytest.raises(OperationalError, match="broke on this entry"):
        seq.submit(b"poison").result(10)
    assert seq.healthy and seq.failed_batches == 1
    assert seq.submit(b"after").result(10) == 1
    seq.stop()
    assert store.entries(0, 2) == [b"before", b"after"]


def test_an_entry_too_large_for_a_bundle_is_refused_on_submission(tmp_path: Path) -> None:
    seq = Sequencer(LogStore(tmp_path, ORIGIN), sign)
    with pytest.raises(FormatError, match="65535"):
        seq.submit(b"x" * 65_536)
    seq.submit(b"x" * 65_535)  # queued


def _job_with_reveals(log: ProtocolLog) -> str:
    """A request, every witness's commit (the close follows) and every reveal."""
    request = Request({"name": "itoa", "version": "1.0.11"})
    log.submit(request, builder_key("witness-2"))
    output, nonce = "11" * 32, "22" * 32
    for name in WITNESS_NAMES:
        commitment = compute_commitment(request.job, name, output, nonce)
        log.submit(Commit(request.job, name, commitment), builder_key(name))
    for name in WITNESS_NAMES:
        reveal = Reveal(request.job, name, nonce, output_digest=output, manifest_sha256=output)
        log.submit(reveal, builder_key(name))
    return request.job


def test_a_due_entry_that_cannot_be_logged_is_skipped_and_the_log_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The failure of issue 9: the due verdict's leaf cannot be encoded (it was over 65,535
    # bytes). The rules now bound verdicts; should one still fail, the log must go on.
    encode = Leaf.to_bytes

    def to_bytes(leaf: Leaf) -> bytes:
        if isinstance(leaf.entry.entry, Verdict):
            raise FormatError("log leaf", "68766 bytes > 65535")
        return encode(leaf)

    monkeypatch.setattr(Leaf, "to_bytes", to_bytes)
    log = ProtocolLog(tmp_path, network(), now_ms=1_000)
    try:
        job = _job_with_reveals(log)  # the last reveal makes the verdict due
        assert log.sequencer.healthy
        assert log.batcher.unloggable == {("verdict", job)}
        assert log.batcher.state.jobs[job].verdict is None
        other = Request({"name": "serde", "version": "1.0.0"})
        assert log.submit(other, builder_key("witness-3")) == log.store.size() - 1
        time.sleep(0.2)  # more ticks: the same skipped verdict is reported once
        skipped = [r for r in caplog.records if "cannot be logged" in r.getMessage()]
        assert len(skipped) == 1 and skipped[0].levelname == "ERROR"
    finally:
        log.close()


def test_a_submission_that_breaks_the_batcher_is_refused_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply = ProtocolState.apply

    def fragile(state: ProtocolState, leaf: Leaf) -> None:
        entry = leaf.entry.entry
        if isinstance(entry, Request) and entry.recipe.get("name") == "poison":
            raise KeyError("a bug")
        apply(state, leaf)

    monkeypatch.setattr(ProtocolState, "apply", fragile)
    log = ProtocolLog(tmp_path, network(), now_ms=1_000)
    try:
        key = builder_key("witness-2")
        entries = [
            canonical_json.encode(sign_entry(Request({"name": n}), key, "test.network").to_json())
            for n in ("first", "poison", "last")
        ]
        leaves, outcomes = log.batcher.prepare(entries)
        assert outcomes[0] == 0 and outcomes[2] == 1 and len(leaves) == 2
        assert isinstance(outcomes[1], OperationalError) and "a bug" in str(outcomes[1])
        log.batcher.committed = lambda: None  # type: ignore[method-assign]  # not durable
        with pytest.raises(OperationalError, match="a bug"):
            log.sequencer.submit(entries[1]).result(10)
        assert log.sequencer.healthy
        assert log.sequencer.submit(entries[0]).result(10) == 0
    finally:
        log.close()


def test_the_log_service_exports_both_counts(tmp_path: Path) -> None:
    service = LogService(LogConfig(tmp_path, SIGNER, network=network()))
    assert service.protocol is not None
    service.protocol.unloggable.add(("verdict", "00" * 32))
    service.sequencer.failed_batches = 2
    text = service.prometheus().decode()
    assert "log_due_entries_unloggable 1.0" in text and "log_batches_failed 2.0" in text
    service.store.close()
