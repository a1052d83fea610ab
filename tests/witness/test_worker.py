"""The build worker against a fake log that runs the real protocol rules (no Docker, no HTTP).

``FakeLog`` stands where ``logserver.client.LogClient`` does: it takes signed entries through
the build protocol's rules (logserver.protocol.rules), appends the closes and verdicts that are
due, keeps a blob store, answers failures with LogClient's messages (``... the log answered 409:
<problem>``), and can be told to fail the next calls. Its leaves are also the worker's "mirror",
committed at once. A ``LogClock`` drives both the log's leaf times and the worker's deadlines.

- work is retried until taken (503s on commits and reveals) and survives a restart: queued
  builds, and a commit whose answer was lost (the 409 duplicate-commit is success);
- a final refusal is not retried;
- any exception of a build is that job's committed failure, and the next job still builds;
- past deadlines: a late request is not built, a late reveal not attempted; both are counted;
- nothing that reveals an output reaches the log before the close;
- a mismatch is explained with a diff report; a corrupt record is an error, not a reset.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from builder.diff import diff_outputs
from builder.manifest import Manifest, collect_manifest
from builder.recipe import Recipe, Toolchain
from logserver.core import canonical_json
from logserver.core.errors import OperationalError
from logserver.core.note import NoteSigner, Signer
from logserver.protocol.entries import (
    Close,
    Commit,
    DiffReport,
    Entry,
    Request,
    Reveal,
    Verdict,
    compute_commitment,
)
from logserver.protocol.rules import ProtocolConfig, ProtocolState, ProtocolViolation
from logserver.protocol.signed import Leaf, SignedEntry, sign_entry
from witness.worker import Backoff, BuildWorker, SigningWriter
from witness.worker_state import JobRecords

NETWORK = "worker.test"
LOG_KEY = Signer("log.example", b"L" * 32)
KEYS = [Signer(f"builder-{i}", bytes([i]) * 32) for i in range(1, 5)]
ME = KEYS[0]
BUILD_MS, REVEAL_MS = 60_000, 30_000
FAST = Backoff(first=0.01, cap=0.05)


class LogClock:
    """Log milliseconds, shared by the fake log and the worker; moves only when told."""

    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> float:
        return self.now_ms / 1000


@dataclass
class Call:
    """One call the worker made to the log, with the log's size when it came."""

    kind: str  # "add-entry", "put-blob", "blob"
    data: bytes
    size: int
    entry: Entry | None = None


@dataclass
class FakeLog:
    """A network log behind LogClient's interface, running the real protocol rules."""

    builders: list[Signer]
    clock: LogClock
    build_ms: int = BUILD_MS
    reveal_ms: int = REVEAL_MS
    leaves: list[Leaf] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    faults: list[tuple[str, int | str]] = field(default_factory=list)  # (entry type, status)
    on_append: list[Callable[[int], None]] = field(default_factory=list)
    hold: bool = False  # consensus lags: new leaves are not committed (told) until release()

    def __post_init__(self) -> None:
        self.config = ProtocolConfig(
            LOG_KEY.verifier(),
            {k.name: k.verifier() for k in self.builders},
            self.build_ms,
            self.reveal_ms,
            network_id=NETWORK,
        )
        self.state = ProtocolState(self.config)
        self.lock = threading.RLock()

    # ----- what LogClient offers ---------------------------------------------------------

    def add_entry(self, entry: bytes) -> int:
        with self.lock:
            signed = SignedEntry.from_json(canonical_json.decode_object(entry))
            kind = type(signed.entry).__name__.lower()
            self.calls.append(Call("add-entry", entry, len(self.leaves), signed.entry))
            fault = self._fault(kind)
            if fault == "lose-answer":  # taken, but the answer never arrives
                self._append(Leaf(signed, self.clock.now_ms))
                self.tick()
                raise OperationalError("cannot reach the log at fake: connection reset")
            if fault is not None:
                raise _answer("POST", "/add-entry", int(fault), "the log is busy")
            self.tick()
            try:
                index = self._append(Leaf(signed, self.clock.now_ms))
            except ProtocolViolation as e:
                raise _answer("POST", "/add-entry", 409, str(e)) from None
            self.tick()  # what became due because of it (a close once all committed)
            return index

    def put_blob(self, data: bytes, signer: NoteSigner | None = None) -> str:
        with self.lock:
            self.calls.append(Call("put-blob", data, len(self.leaves)))
            fault = self._fault("blob")
            if fault is not None:
                raise _answer("PUT", "/blob/x", int(fault), "the log is busy")
            name = hashlib.sha256(data).hexdigest()
            self.blobs[name] = data
            return name

    def blob(self, name: str) -> bytes:
        with self.lock:
            self.calls.append(Call("blob", name.encode(), len(self.leaves)))
            if name not in self.blobs:
                raise _answer("GET", f"/blob/{name}", 404, "no such blob")
            return self.blobs[name]

    # ----- the mirror: every leaf is committed at once -----------------------------------

    def size(self) -> int:
        with self.lock:
            return len(self.leaves)

    def entry(self, index: int) -> bytes:
        with self.lock:
            return self.leaves[index].to_bytes()

    # ----- playing the log and the other builders ----------------------------------------

    def tick(self) -> None:
        """Append the closes and verdicts due now, as the log's sequencer does."""
        with self.lock:
            for due in self.state.due_entries(self.clock.now_ms):
                self._append(Leaf(sign_entry(due, LOG_KEY, NETWORK), self.clock.now_ms))

    def submit(self, entry: Entry, signer: Signer) -> int:
        with self.lock:
            self.tick()
            index = self._append(Leaf(sign_entry(entry, signer, NETWORK), self.clock.now_ms))
            self.tick()
            return index

    def request(self, version: str) -> str:
        entry = Request(make_recipe(version).to_value())
        self.submit(entry, self.builders[-1])  # any builder may request
        return entry.job

    def _append(self, leaf: Leaf) -> int:
        trial = self.state.copy()
        trial.apply(leaf)
        self.state = trial
        self.leaves.append(leaf)
        if not self.hold:
            self.release()
        return len(self.leaves) - 1

    def release(self) -> None:
        """Consensus commits every leaf there is."""
        self.hold = False
        for listener in self.on_append:
            listener(len(self.leaves))

    def _fault(self, kind: str) -> int | str | None:
        for i, (which, status) in enumerate(self.faults):
            if which == kind:
                del self.faults[i]
                return status
        return None

    # ----- what tests look at ------------------------------------------------------------

    def entries(self, kind: type[Entry]) -> list[Any]:
        with self.lock:
            return [leaf.entry.entry for leaf in self.leaves if isinstance(leaf.entry.entry, kind)]

    def verdict(self, job: str) -> Verdict | None:
        found = [v for v in self.entries(Verdict) if v.job == job]
        return found[0] if found else None

    def attempts(self, kind: type[Entry]) -> int:
        with self.lock:
            return sum(1 for c in self.calls if isinstance(c.entry, kind))


def _answer(method: str, path: str, status: int, detail: str) -> OperationalError:
    """The error LogClient raises for a non-2xx answer carrying a problem+json body."""
    body = json.dumps(
        {"detail": detail, "status": status, "title": "x", "type": "about:blank"}, sort_keys=True
    )
    return OperationalError(f"{method} {path}: the log answered {status}: {body[:200]}")


def make_recipe(version: str) -> Recipe:
    return Recipe(
        name="hello",
        version=version,
        crate_sha256="a" * 64,
        cargo_lock="version = 3\n",
        toolchain=Toolchain("1.80.0", "b" * 40, "c" * 64),
        rootfs_sha256="d" * 64,
    )


@dataclass
class Built:
    """What a fake build returns (the fields the worker reads from builder.build's result)."""

    ok: bool
    manifest: Manifest | None
    reason: str | None = None


def builds_bytes(content: bytes = b"rlib bytes") -> Callable[..., Built]:
    """A build function that 'builds' one rlib with ``content`` (no Docker)."""

    def build(recipe: Recipe, out_dir: Path, **_: object) -> Built:
        artifacts = out_dir / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        (artifacts / "libhello.rlib").write_bytes(content + recipe.version.encode())
        return Built(True, collect_manifest(artifacts))

    return build


def make_worker(
    log: FakeLog, workdir: Path, build: Callable[..., object], **kwargs: Any
) -> BuildWorker:
    worker = BuildWorker(
        ME.name,
        SigningWriter(log, ME, NETWORK),
        log,
        workdir,
        build=build,
        build_deadline_ms=log.build_ms,
        reveal_deadline_ms=log.reveal_ms,
        clock=log.clock,
        backoff=FAST,
        **kwargs,
    )
    log.on_append.append(worker.committed)
    worker.committed(log.size())
    return worker


@pytest.fixture
def running() -> Iterator[list[BuildWorker]]:
    workers: list[BuildWorker] = []
    yield workers
    for worker in workers:
        worker.stop(wait=5)


def wait_for(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


def start(
    log: FakeLog,
    workdir: Path,
    build: Callable[..., object],
    running: list[BuildWorker],
    **kwargs: Any,
) -> BuildWorker:
    worker = make_worker(log, workdir, build, **kwargs)
    running.append(worker)
    worker.start()
    return worker


# ----- retries and restarts ------------------------------------------------------------


def test_503s_on_commit_and_reveal_are_retried_until_taken(
    tmp_path: Path, running: list[BuildWorker]
) -> None:
    log = FakeLog([ME], LogClock())
    log.faults = [("commit", 503), ("commit", 503), ("reveal", 503), ("reveal", 503)]
    log.faults += [("blob", 503)]
    job = log.request("1.0.0")
    worker = start(log, tmp_path, builds_bytes(), running)
    wait_for(lambda: log.verdict(job))
    verdict = log.verdict(job)
    assert verdict is not None and verdict.outcome == "reproduced", verdict
    assert log.attempts(Commit) == 3 and log.attempts(Reveal) == 3
    assert worker.stats["retries"] >= 5 and worker.stats["refusals"] == 0


def test_queued_builds_are_built_after_a_restart(
    tmp_path: Path, running: list[BuildWorker]
) -> None:
    log = FakeLog([ME], LogClock())
    jobs = [log.request("1.0.0"), log.request("1.0.1")]
    entered, release = threading.Event(), threading.Event()

    def never_finishes(recipe: Recipe, out_dir: Path, **_: object) -> Built:
        entered.set()
        release.wait(60)
        raise RuntimeError("the machine went down mid-build")

    first = start(log, tmp_path, never_finishes, running)
    assert entered.wait(10)
    time.sleep(0.3)
    first.stop(wait=2)  # "crash": the first build never returns, nothing was committed
    second = start(log, tmp_path, builds_bytes(), running)
    try:
        wait_for(lambda: all(log.verdict(job) for job in jobs))
    finally:
        release.set()  # (the first worker's stale build then changes nothing)
    for job in jobs:
        verdict = log.verdict(job)
        assert verdict is not None and verdict.outcome == "reproduced"
    assert second.stats["builds_ok"] == 2


@pytest.mark.parametrize("builders", [2, 1])
def test_a_commit_whose_answer_was_lost_is_not_retried_forever(
    tmp_path: Path, running: list[BuildWorker], builders: int
) -> None:
    log = FakeLog(KEYS[:builders], LogClock())
    log.faults = [("commit", "lose-answer")]
    job = log.request("1.0.0")
    log.hold = True  # the commit is not in the committed log yet when the worker retries
    worker = start(log, tmp_path, builds_bytes(), running)
    wait_for(lambda: log.attempts(Commit) == 2)
    time.sleep(0.2)
    assert log.attempts(Commit) == 2
    # Two builders: the retry meets 409 duplicate-commit, which is success. One: the commit
    # closed the job, so the retry meets commit-after-close, a refusal; either way the
    # commit's leaf, once committed, moves the job on, and the reveal opens it.
    assert worker.stats["refusals"] == (0 if builders == 2 else 1)
    log.release()
    if builders == 2:
        log.submit(Commit(job, KEYS[1].name, "e" * 64), KEYS[1])
    wait_for(lambda: log.attempts(Reveal) == 1)
    mine = next(c for c in log.entries(Commit) if c.builder == ME.name)
    assert log.entries(Reveal)[0].matches(mine)


def test_a_commit_sent_just_before_a_restart_is_revealed_after_it(
    tmp_path: Path, running: list[BuildWorker]
) -> None:
    log = FakeLog([ME, KEYS[1]], LogClock())
    job = log.request("1.0.0")
    first = start(log, tmp_path, builds_bytes(), running)
    wait_for(lambda: log.attempts(Commit) == 1)
    first.stop(wait=5)
    # The other builder commits; the close names both; a new worker reveals what was committed.
    log.submit(Commit(job, KEYS[1].name, "e" * 64), KEYS[1])
    assert log.entries(Close)
    second = start(log, tmp_path, builds_bytes(), running)
    wait_for(lambda: log.attempts(Reveal) == 1)
    reveal = log.entries(Reveal)[0]
    commit = next(c for c in log.entries(Commit) if c.builder == ME.name)
    assert reveal.matches(commit)
    assert second.stats["builds_ok"] == 0  # not built twice


def test_a_final_refusal_is_not_retried(tmp_path: Path, running: list[BuildWorker]) -> None:
    log = FakeLog([ME], LogClock())
    log.faults = [("commit", 403)]
    log.request("1.0.0")
    worker = start(log, tmp_path, builds_bytes(), running)
    wait_for(lambda: worker.stats["refusals"] == 1)
    time.sleep(0.3)
    assert log.attempts(Commit) == 1


# ----- every failure of a job is that job's -------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        IsADirectoryError(21, "Is a directory", "/src/Cargo.lock"),
        UnicodeEncodeError("utf-8", "target/\udcff", 7, 8, "surrogates not allowed"),
    ],
)
def test_a_build_that_raises_commits_a_failure_and_the_next_job_builds(
    tmp_path: Path, running: list[BuildWorker], error: Exception
) -> None:
    log = FakeLog([ME], LogClock())
    bad, good = log.request("1.0.0"), log.request("1.0.1")
    normal = builds_bytes()

    def build(recipe: Recipe, out_dir: Path, **kwargs: object) -> Built:
        if recipe.version == "1.0.0":
            raise error
        return normal(recipe, out_dir, **kwargs)

    worker = start(log, tmp_path, build, running)
    wait_for(lambda: log.verdict(bad) and log.verdict(good))
    failed, built = log.verdict(bad), log.verdict(good)
    assert failed is not None and failed.outcome == "failed"
    assert [f.builder for f in failed.failures] == [ME.name]
    reason = next(r.failure for r in log.entries(Reveal) if r.job == bad)
    assert reason.startswith(type(error).__name__) and reason.isprintable() and reason.isascii()
    assert built is not None and built.outcome == "reproduced"
    assert worker.threads() == {"scanner": True, "builder": True, "outbox": True}


# ----- deadlines -----------------------------------------------------------------------


def test_a_request_past_its_build_deadline_is_not_built(
    tmp_path: Path, running: list[BuildWorker], caplog: pytest.LogCaptureFixture
) -> None:
    clock = LogClock()
    log = FakeLog([ME, KEYS[1]], clock)
    late = log.request("1.0.0")
    clock.now_ms += BUILD_MS // 2
    on_time = log.request("1.0.1")
    clock.now_ms += BUILD_MS // 2 + 1  # the builder was down until after the first deadline
    built: list[str] = []
    normal = builds_bytes()

    def build(recipe: Recipe, out_dir: Path, **kwargs: object) -> Built:
        built.append(recipe.version)
        return normal(recipe, out_dir, **kwargs)

    with caplog.at_level(logging.WARNING, logger="witness.worker"):
        worker = start(log, tmp_path, build, running)
        wait_for(lambda: log.attempts(Commit) == 1)
    assert built == ["1.0.1"]
    assert worker.stats["builds_skipped"] == 1
    said = [r for r in caplog.records if "deadline passed" in r.getMessage()]
    assert [getattr(r, "job", None) for r in said] == [late]
    assert [c.job for c in log.entries(Commit)] == [on_time]


def test_a_reveal_past_its_deadline_is_not_attempted(
    tmp_path: Path, running: list[BuildWorker]
) -> None:
    clock = LogClock()
    log = FakeLog([ME, KEYS[1]], clock)
    job = log.request("1.0.0")
    first = start(log, tmp_path, builds_bytes(), running)
    wait_for(lambda: log.attempts(Commit) == 1)
    first.stop(wait=5)
    clock.now_ms += BUILD_MS  # the other builder never commits: closed at the deadline
    log.tick()
    assert [c.committed for c in log.entries(Close)] == [(ME.name,)]
    clock.now_ms += REVEAL_MS  # ... and this builder was down until after the reveal deadline
    second = start(log, tmp_path, builds_bytes(), running)
    wait_for(lambda: second.stats["reveals_skipped"] == 1)
    time.sleep(0.2)
    assert log.attempts(Reveal) == 0
    assert not [c for c in log.calls if c.kind == "put-blob"]
    log.tick()
    verdict = log.verdict(job)
    assert verdict is not None and verdict.missing == (ME.name,)


# ----- the commitment hides ------------------------------------------------------------


def test_no_output_reaches_the_log_before_the_close(
    tmp_path: Path, running: list[BuildWorker]
) -> None:
    log = FakeLog([ME, KEYS[1]], LogClock())
    job = log.request("1.0.0")
    start(log, tmp_path, builds_bytes(), running)
    wait_for(lambda: log.attempts(Commit) == 1)
    time.sleep(0.2)
    assert not [c for c in log.calls if c.kind == "put-blob"]  # nothing before the close
    log.submit(Commit(job, KEYS[1].name, "e" * 64), KEYS[1])
    close_at = next(i for i, leaf in enumerate(log.leaves) if isinstance(leaf.entry.entry, Close))
    wait_for(lambda: log.attempts(Reveal) == 1)
    blobs = [c for c in log.calls if c.kind == "put-blob"]
    reveal_call = next(c for c in log.calls if isinstance(c.entry, Reveal))
    reveal = log.entries(Reveal)[0]
    assert reveal.manifest_sha256 in log.blobs  # uploaded ...
    assert all(close_at < c.size for c in blobs)  # ... after the close
    assert all(log.calls.index(c) < log.calls.index(reveal_call) for c in blobs)  # before it


# ----- explaining a mismatch -----------------------------------------------------------


def test_a_mismatch_this_builder_heads_is_explained(
    tmp_path: Path, running: list[BuildWorker]
) -> None:
    log = FakeLog([ME, KEYS[1]], LogClock())
    job = log.request("1.0.0")
    mine = builds_bytes(b"my bytes")(make_recipe("1.0.0"), tmp_path / "mine").manifest
    assert mine is not None
    # The other builder's output sorts after this one's: this builder heads the first group.
    for salt in range(100):
        other_dir = tmp_path / f"other-{salt}"
        theirs = builds_bytes(b"other %d" % salt)(make_recipe("1.0.0"), other_dir).manifest
        assert theirs is not None
        if theirs.output_digest > mine.output_digest:
            break
    assert theirs is not None
    digest = theirs.output_digest
    log.faults = [("diffreport", 503)]
    start(log, tmp_path / "me", builds_bytes(b"my bytes"), running, diff=builtin_diff)
    wait_for(lambda: log.attempts(Commit) == 1)
    nonce = "f" * 64
    commitment = compute_commitment(job, KEYS[1].name, digest, nonce)
    log.submit(Commit(job, KEYS[1].name, commitment), KEYS[1])
    log.put_blob(theirs.to_json())
    log.put_blob((other_dir / "artifacts" / "libhello.rlib").read_bytes())
    wait_for(lambda: log.attempts(Reveal) == 1)
    log.submit(Reveal(job, KEYS[1].name, nonce, digest, digest), KEYS[1])
    verdict = log.verdict(job)
    assert verdict is not None and verdict.outcome == "not-reproduced"
    assert verdict.groups[0].builders == (ME.name,)
    wait_for(lambda: log.entries(DiffReport))
    report = log.entries(DiffReport)[0]
    assert report.groups == tuple(sorted(g.output_digest for g in verdict.groups))
    assert b"libhello.rlib" in log.blobs[report.report_sha256]


def builtin_diff(left: Path, right: Path) -> bytes:
    return diff_outputs(left, right, use_diffoscope=False)  # no Docker here


# ----- the records ---------------------------------------------------------------------


def test_an_upgraded_builder_reveals_what_the_first_worker_committed(
    tmp_path: Path, running: list[BuildWorker]
) -> None:
    log = FakeLog([ME, KEYS[1]], LogClock())
    job = log.request("1.0.0")
    # The first worker's state: its record (nonce, digest) and cursor; its commit is logged.
    digest, nonce = "1" * 64, "2" * 64
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / f"{job}.json").write_text(
        json.dumps({"nonce": nonce, "digest": digest, "committed": "yes"})
    )
    (tmp_path / "cursor").write_text(str(log.size()))
    log.submit(Commit(job, ME.name, compute_commitment(job, ME.name, digest, nonce)), ME)
    log.submit(Commit(job, KEYS[1].name, "e" * 64), KEYS[1])
    worker = start(log, tmp_path, builds_bytes(), running)
    wait_for(lambda: log.attempts(Reveal) == 1)
    reveal = log.entries(Reveal)[0]
    assert (reveal.nonce, reveal.output_digest) == (nonce, digest)
    assert worker.stats["builds_ok"] == 0 and log.attempts(Commit) == 0


def test_a_corrupt_record_is_an_error_not_a_reset(tmp_path: Path) -> None:
    records = tmp_path / "records"
    records.mkdir()
    (records / ("0" * 64 + ".json")).write_text('{"job": "truncated')
    with pytest.raises(OperationalError, match="corrupt"):
        JobRecords(tmp_path)
