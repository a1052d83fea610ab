"""The build worker of a builder-witness: build, commit, reveal after the close, explain.

It reads the leaves of its verified mirror up to the size its consensus committed (so it acts
only on cosigned history) and keeps one durable record per job (witness/worker_state.py). The
records are the work list: nothing the worker owes the log lives only in memory, so a restart,
a crash or a log answering 503 loses no work. A job moves through these states::

    requested ─build─▶ built ─commit─▶ committed ─close─▶ closed ─blobs, reveal─▶ revealed
        │                │                 │                                        │
        └── close without this builder ────┴──▶ abandoned        not-reproduced verdict this
                                                                  builder heads ─▶ explaining
    any other verdict ─▶ finished               explained ◀─diff-report─ diffed ◀─diff─┘

Three threads share the records, and none ends but by :meth:`BuildWorker.stop`: an exception
is logged with its traceback and the step retried; each step catches what one job can throw.
The builds themselves run on short-lived threads that the ``builder`` thread starts.

- ``scanner``: turns committed leaves into record changes. A request creates a record (its
  build deadline is the request leaf's time + ``build_deadline_ms``); a close naming this
  builder makes it ``closed`` (reveal deadline = the close leaf's time + ``reveal_deadline_ms``),
  a close without it ``abandoned``; the builder's own commit, reveal and diff-report leaves
  confirm those steps (a commit that is not the record's abandons the job); a verdict ends it.
  Records are written before the cursor passes a leaf, and every change is idempotent, so a
  leaf read twice after a crash changes nothing.
- ``builder``: starts the builds of ``requested`` jobs in request order, each on a thread of
  its own, while fewer than ``max_builds`` run (a setting of ``witness run``, default 1), so a
  long build does not hold up the jobs behind it when more may run. A job whose build deadline
  has passed is not built late: it is skipped, logged and counted (``builds_skipped``). ANY
  exception of a build becomes that job's failure with a short printable reason, committed like
  any result. The outputs stay on disk (fsynced) and the record gets a fresh nonce and the
  digest (or the failure) BEFORE the commit can leave. It also starts diffs (``explaining`` →
  ``diffed``), which take a place among the ``max_builds`` like a build. A build thread ends
  with its job's attempt; the ``builder`` thread itself never runs a build, so it never waits
  on one.
- ``outbox``: sends what the records owe the log: the commit of a ``built`` job (until the build
  deadline), the manifest, artifacts and reveal of a ``closed`` one (until the reveal deadline),
  the report and diff-report of a ``diffed`` one (until ``explain_window_ms`` after the
  verdict). Each is retried with exponential backoff (a 503 "the log is busy" included); a 4xx
  is final: a 409 that says the entry is already there (``duplicate-commit``,
  ``duplicate-reveal``: an earlier attempt was taken) is success, any other refusal ends the
  step. A step whose deadline passed is not attempted (logged and counted); the leaves that
  the log appends at the deadline then move the job on.

The commitment hides: nothing that reveals an output (the manifest, whose SHA-256 is the output
digest, or an artifact) leaves the builder before the job's close. The commit carries only the
commitment; the manifest and artifacts are uploaded after the close, just before the reveal
that names them, so a verdict's consumers find the manifest under its ``manifest_sha256``.

Host variations (builder/variation.py, spec/builds.md 4.1): each build runs under the variation
that the job id and this builder's position among the network config's ``builders`` give it
(CPU count, clock, host name), so that the builders of a job differ as real hosts do. The head
of a not-reproduced verdict keeps the verdict's groups and starts its diff report with every
builder's variation, recomputed, and the dimension the compared groups differ in, if one.

Fault injection for tests (``misbehave``): ``fabricate`` commits to and reveals a digest it
never built; ``contradict`` reveals a digest other than the one it committed to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import random
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from builder import recipe as recipes
from builder.build import build_crate
from builder.diff import DEFAULT_MAX_REPORT_BYTES as MAX_REPORT_BYTES
from builder.diff import diff_outputs
from builder.envsource import EnvironmentUnavailable
from builder.manifest import Manifest, manifest_from_json
from builder.variation import Variation, VariedGroup, variation_of, variation_report
from logserver.core import canonical_json, note
from logserver.core.errors import FormatError, OperationalError, RemoteError
from logserver.fsutil import atomic_write
from logserver.protocol.entries import (
    Close,
    Commit,
    DiffReport,
    Entry,
    Request,
    Reveal,
    Verdict,
    compute_commitment,
    new_nonce,
)
from logserver.protocol.signed import Leaf, sign_entry
from witness.worker_state import TERMINAL, JobRecord, JobRecords

log = logging.getLogger(__name__)
MISBEHAVIOURS = ("fabricate", "contradict")
EXPLAIN_WINDOW_MS = 24 * 3600 * 1000  # a diff report has no protocol deadline: this is ours
MAX_REASON = 200
ALREADY_THERE = frozenset({"duplicate-commit", "duplicate-reveal"})
ENVIRONMENT_UNAVAILABLE = "environment-unavailable"  # the build environment not had in time
CURSOR_EVERY = 256  # leaves between cursor writes (records are always written first)

# LogClient reports a non-2xx answer as "<METHOD> <path>: the log answered <status>: <body>",
# and a refused entry's problem detail starts "leaf <i>: <rule>: " (logserver/http/errors.py).
_ANSWERED = re.compile(r"the log answered (\d{3})\b")
_RULE = re.compile(r"leaf \d+: ([a-z]+(?:-[a-z]+)+): ")


def _reason(text: str) -> str:
    """A failure reason for the log: one line of printable ASCII, bounded, never empty."""
    line = " ".join(text.split()).encode("ascii", "backslashreplace").decode("ascii")
    return "".join(c for c in line if c.isprintable())[:MAX_REASON] or "failed"


def _error_reason(error: BaseException) -> str:
    return _reason(f"{type(error).__name__}: {error}")


class LogRefused(OperationalError):
    """The log refused a request for good: a 4xx answer that no retry changes.

    ``status`` is the HTTP status; ``rule`` the build-protocol rule a 409 names
    (spec/protocol.md section 7), if any.
    """

    def __init__(self, status: int, rule: str | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.rule = rule

    @property
    def already_there(self) -> bool:
        """The refused entry is already in the log (an earlier attempt was taken)."""
        return self.rule in ALREADY_THERE


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """Raise a final refusal of the log (4xx but 408 and 429) as LogRefused."""
    try:
        yield
    except LogRefused:
        raise
    except OperationalError as e:
        answered = None if isinstance(e, RemoteError) else _ANSWERED.search(str(e))
        if answered is None:
            raise
        status = int(answered.group(1))
        if not 400 <= status < 500 or status in (408, 429):
            raise
        rule = _RULE.search(str(e))
        raise LogRefused(status, rule.group(1) if rule else None, str(e)) from e


class LogAccess(Protocol):
    """What a builder asks of a log: ``logserver.client.LogClient`` (a fake in tests)."""

    def add_entry(self, entry: bytes) -> int: ...

    def put_blob(self, data: bytes, signer: note.NoteSigner | None = None) -> str: ...

    def blob(self, name: str) -> bytes: ...


class SigningWriter:
    """What a builder writes to the log, signed with its key: protocol entries and blobs.

    The HTTP goes through ``log``, the one client of the log; this class adds the signing, and
    raises a final refusal (a 4xx) as :class:`LogRefused`, any other failure as it came.
    """

    def __init__(self, log: LogAccess, signer: note.Signer, network_id: str) -> None:
        self.log = log
        self.signer = signer
        self.network_id = network_id  # entries are signed for this network only

    def add_entry(self, entry: Entry) -> int:
        """Sign ``entry`` and append it as canonical JSON; return its index in the log."""
        signed = sign_entry(entry, self.signer, self.network_id)
        with _refusals():
            return self.log.add_entry(canonical_json.encode(signed.to_json()))

    def put_blob(self, data: bytes) -> str:
        """Upload a blob with this builder's signature; return its name (hex SHA-256)."""
        with _refusals():
            return self.log.put_blob(data, self.signer)

    def blob(self, name: str) -> bytes:
        """The blob named ``name`` from the log's store, checked against its name."""
        with _refusals():
            return self.log.blob(name)


class LeafReader(Protocol):
    """The verified mirror as the worker reads it (``logserver.storage.LogStore``)."""

    def size(self) -> int: ...

    def entry(self, index: int) -> bytes: ...


@dataclass(frozen=True)
class Backoff:
    """Retry delays: ``first`` seconds, doubled after each failure up to ``cap``, +-20%."""

    first: float = 0.5
    cap: float = 30.0

    def delay(self, failures: int) -> float:
        base = min(self.cap, self.first * 2.0 ** min(max(failures - 1, 0), 30))
        return base * random.uniform(0.8, 1.2)  # noqa: S311 (jitter, not a secret)


class _Schedule:
    """When each owed step of a job may be tried again, and which steps were given up.

    Keys are (job, state). Shared by the worker's threads, hence the lock.
    """

    def __init__(self, backoff: Backoff) -> None:
        self._backoff = backoff
        self._lock = threading.Lock()
        self._retry: dict[tuple[str, str], tuple[int, float]] = {}  # failures, retry at
        self._given_up: set[tuple[str, str]] = set()

    def due(self, key: tuple[str, str]) -> bool:
        with self._lock:
            if key in self._given_up:
                return False
            return time.monotonic() >= self._retry.get(key, (0, 0.0))[1]

    def failed(self, key: tuple[str, str]) -> None:
        with self._lock:
            failures = self._retry.get(key, (0, 0.0))[0] + 1
            self._retry[key] = (failures, time.monotonic() + self._backoff.delay(failures))

    def succeeded(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._retry.pop(key, None)

    def give_up(self, key: tuple[str, str]) -> bool:
        """Never try ``key`` again (until its job changes state); whether it is news."""
        with self._lock:
            self._retry.pop(key, None)
            fresh = key not in self._given_up
            self._given_up.add(key)
            return fresh

    def forget(self, job: str) -> None:
        with self._lock:
            for key in [k for k in self._retry if k[0] == job]:
                del self._retry[key]
            self._given_up = {k for k in self._given_up if k[0] != job}

    def next_in(self) -> float:
        """Seconds until the earliest scheduled retry (at most 1)."""
        now = time.monotonic()
        with self._lock:
            return min([1.0] + [max(0.0, at - now) for _, at in self._retry.values()])


BuildFn = Callable[..., object]
DiffFn = Callable[[Path, Path], bytes]


def _contained_diff(left: Path, right: Path) -> bytes:
    """builder.diff's report (diffoscope in its sandbox), without progress lines."""
    return diff_outputs(left, right, progress=_quiet)


class BuildWorker:
    """Acts on the committed leaves of the mirror: builds, commits, reveals and explains.

    ``build_deadline_ms`` and ``reveal_deadline_ms`` are the network's (``network.builds``);
    ``clock`` gives the time in seconds, compared with the log's leaf times; ``max_builds`` is
    how many builds (and diffs) may run at once.
    """

    def __init__(
        self,
        name: str,
        writer: SigningWriter,
        mirror: LeafReader,
        workdir: Path,
        *,
        build_deadline_ms: int,
        reveal_deadline_ms: int,
        build: BuildFn | None = None,
        diff: DiffFn = _contained_diff,
        misbehave: str | None = None,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
        explain_window_ms: int = EXPLAIN_WINDOW_MS,
        max_builds: int = 1,
        builders: tuple[str, ...] = (),
    ) -> None:
        if misbehave is not None and misbehave not in MISBEHAVIOURS:
            raise ValueError(f"misbehave must be one of {MISBEHAVIOURS}")
        if max_builds < 1:
            raise ValueError("max_builds must be at least 1")
        self.max_builds = max_builds
        self.name = name
        self.writer = writer
        self.mirror = mirror
        self.workdir = workdir
        self.records = JobRecords(workdir)
        self.build_deadline_ms = build_deadline_ms
        self.reveal_deadline_ms = reveal_deadline_ms
        self.explain_window_ms = explain_window_ms
        self._build = build or build_crate
        self._diff = diff
        self.builders = builders  # every builder of the network config, in order
        self.misbehave = misbehave
        self._clock = clock
        self.backoff = backoff or Backoff()
        self._committed_size = 0
        self.stats: dict[str, float] = dict.fromkeys(
            (
                "builds_ok",
                "builds_failed",
                "builds_skipped",  # the build deadline had passed: not built
                "commits_skipped",  # the build deadline passed before the log took the commit
                "reveals_skipped",  # the reveal deadline had passed: not revealed
                "diffs_skipped",  # a diff report not logged within the explain window
                "retries",  # attempts that failed and will be retried (the log busy or down)
                "refusals",  # final refusals by the log (4xx other than "already there")
                "errors",  # unexpected exceptions, logged with their tracebacks
                "last_build_seconds",
                "build_seconds",  # wall time spent in builds and diffs, summed over all of them
            ),
            0.0,
        )
        self._running: dict[str, threading.Thread] = {}  # job -> the thread building it
        self._running_lock = threading.Lock()
        self._crate_lock = threading.Lock()  # one fetch of a local .crate at a time
        self._schedule = _Schedule(self.backoff)
        self._stopping = threading.Event()
        self._wake = {step: threading.Event() for step in ("scanner", "builder", "outbox")}
        steps = {"scanner": self.scan_once, "builder": self.build_once, "outbox": self.send_once}
        self._threads = {
            step: threading.Thread(target=self._loop, args=(step, fn), daemon=True, name=step)
            for step, fn in steps.items()
        }

    # ----- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        for thread in self._threads.values():
            thread.start()

    def stop(self, wait: float = 0.0) -> None:
        """Stop the threads (running builds finish first); wait up to ``wait`` seconds."""
        self._stopping.set()
        for event in self._wake.values():
            event.set()
        deadline = time.monotonic() + wait
        with self._running_lock:
            builds = list(self._running.values())
        for thread in [*self._threads.values(), *builds]:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))

    def running(self) -> int:
        """How many builds and diffs are running now."""
        with self._running_lock:
            return len(self._running)

    def committed(self, size: int) -> None:
        """Consensus committed the log up to ``size``: act on the new leaves."""
        if size > self._committed_size:
            self._committed_size = size
            self._wake["scanner"].set()

    def threads(self) -> dict[str, bool]:
        """Each of the worker's threads and whether it is running."""
        return {name: thread.is_alive() for name, thread in self._threads.items()}

    def _loop(self, step: str, once: Callable[[], float]) -> None:
        """Call ``once`` until stopped; it returns how long to sleep (a wake-up cuts it short).

        Each step handles the failures of one job itself; what escapes is a failure outside
        any job (the disk, a bug): logged with its traceback and retried with backoff.
        """
        failures = 0
        wake = self._wake[step]
        while not self._stopping.is_set():
            wake.clear()
            try:
                pause = once()
                failures = 0
            except Exception:
                failures += 1
                self.stats["errors"] += 1
                log.exception("the worker's %s failed; retrying", step, extra={"step": step})
                pause = self.backoff.delay(failures)
            wake.wait(pause)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # ----- changing records --------------------------------------------------------------

    def _change(
        self, job: str, states: set[str] | frozenset[str], **changes: object
    ) -> JobRecord | None:
        """Apply ``changes`` to the job's record if it is in one of ``states``; the new record."""

        def change(record: JobRecord) -> JobRecord | None:
            if record.state not in states:
                return None
            return dataclasses.replace(record, **changes)  # type: ignore[arg-type]

        changed = self.records.update(job, change)
        if changed is None:
            return None
        old, new = changed
        if new.state != old.state:
            self._schedule.forget(job)
            log.info("job %s", new.state, extra={"job": job, "state": new.state, "was": old.state})
            for step in ("builder", "outbox"):
                self._wake[step].set()
        return new

    # ----- the scanner: committed leaves into records ------------------------------------

    def scan_once(self) -> float:
        """Turn the committed leaves not yet read into record changes; then the cursor."""
        start = index = self.records.cursor()
        end = min(self._committed_size, self.mirror.size())
        try:
            while index < end and not self._stopping.is_set():
                self._on_leaf(index)
                index += 1
                if index % CURSOR_EVERY == 0:
                    self.records.set_cursor(index)
        finally:
            if index > start:
                self.records.set_cursor(index)
        return 1.0

    def _on_leaf(self, index: int) -> None:
        try:
            leaf = Leaf.parse(self.mirror.entry(index))
        except FormatError as e:  # the witnesses validated it: this cannot be, but never stall
            self.stats["errors"] += 1
            log.error("skipping an unreadable leaf", extra={"leaf": index, "error": str(e)})
            return
        entry, mine = leaf.entry.entry, leaf.entry.signer.name == self.name
        if isinstance(entry, Request):
            self._on_request(index, leaf.time_ms, entry)
        elif isinstance(entry, Commit) and mine:
            self._on_own_commit(entry)
        elif isinstance(entry, Close):
            self._on_close(entry, leaf.time_ms)
        elif isinstance(entry, Reveal) and mine:
            self._change(entry.job, {"closed"}, state="revealed")
        elif isinstance(entry, Verdict):
            self._on_verdict(entry, leaf.time_ms)
        elif isinstance(entry, DiffReport) and mine:
            self._change(entry.job, {"explaining", "diffed"}, state="explained")

    def _on_request(self, index: int, time_ms: int, request: Request) -> None:
        if self.records.get(request.job) is not None:
            return
        record = JobRecord(
            request.job,
            "requested",
            index,
            time_ms + self.build_deadline_ms,
            dict(request.recipe),
        )
        legacy = self.records.legacy(request.job)
        if legacy is not None:  # the first worker committed (or meant to): keep its nonce
            record = dataclasses.replace(
                record,
                state="committed" if legacy.get("committed") else "built",
                nonce=legacy["nonce"],
                output_digest=legacy.get("digest"),
                failure=legacy.get("failure"),
            )
        self.records.put(record)
        self._wake["builder"].set()
        self._wake["outbox"].set()

    def _on_own_commit(self, commit: Commit) -> None:
        record = self.records.get(commit.job)
        if record is None or record.state not in ("requested", "built", "committed"):
            return
        ours = record.nonce is not None and commit.commitment == compute_commitment(
            commit.job, self.name, record.committed_digest, record.nonce
        )
        if ours:
            self._change(commit.job, {"built"}, state="committed")
            return
        # The log holds a commitment this record cannot open (the record was lost): never
        # reveal something else under it.
        log.error("the log holds a commit this builder cannot open", extra={"job": commit.job})
        self._change(
            commit.job,
            {"requested", "built", "committed"},
            state="abandoned",
            note="the log holds a commit of this builder that its record cannot open",
        )

    def _on_close(self, close: Close, time_ms: int) -> None:
        record = self.records.get(close.job)
        if record is None or record.state in TERMINAL:
            return
        if self.name in close.committed and record.nonce is not None:
            self._change(
                close.job,
                {"built", "committed"},
                state="closed",
                reveal_deadline_ms=time_ms + self.reveal_deadline_ms,
            )
        elif record.state in ("requested", "built", "committed"):
            log.warning("the job closed without this builder's commit", extra={"job": close.job})
            self._change(
                close.job,
                {"requested", "built", "committed"},
                state="abandoned",
                note="the job closed without this builder's commit",
            )

    def _on_verdict(self, verdict: Verdict, time_ms: int) -> None:
        groups = verdict.groups
        heads = (
            verdict.outcome == "not-reproduced"
            and len(groups) >= 2
            and groups[0].builders[0] == self.name
        )
        if heads:
            self._keep_groups(verdict)
            self._change(
                verdict.job,
                {"closed", "revealed"},
                state="explaining",
                compare=(groups[0].output_digest, groups[1].output_digest),
                explain_deadline_ms=time_ms + self.explain_window_ms,
            )
        record = self.records.get(verdict.job)
        if record is not None and record.state not in TERMINAL | {"explaining", "diffed"}:
            self._change(verdict.job, {record.state}, state="finished")

    # ----- retries -----------------------------------------------------------------------

    def _attempt(self, record: JobRecord, step: Callable[[JobRecord], None]) -> None:
        """One attempt at what ``record`` owes; a failure is retried later with backoff.

        ``step`` handles the final refusals it expects; a LogRefused it lets through ends the
        step (logged, counted); any other exception schedules a retry.
        """
        key = (record.job, record.state)
        if not self._schedule.due(key):
            return
        extra = {"job": record.job, "state": record.state}
        try:
            step(record)
        except LogRefused as e:
            self.stats["refusals"] += 1
            self._schedule.give_up(key)
            log.error("the log refused; not retrying", extra=extra | {"error": str(e)})
        except OperationalError as e:
            self.stats["retries"] += 1
            self._schedule.failed(key)
            log.warning("the log did not take it; retrying", extra=extra | {"error": str(e)})
        except Exception:
            self.stats["retries"] += 1
            self.stats["errors"] += 1
            self._schedule.failed(key)
            log.exception("a step of a job failed; retrying", extra=extra)
        else:
            self._schedule.succeeded(key)

    def _past(self, record: JobRecord, deadline_ms: int | None, what: str, counter: str) -> bool:
        """Whether ``deadline_ms`` has passed; if so, say so once, count it and give up."""
        if deadline_ms is None or self._now_ms() < deadline_ms:
            return False
        if self._schedule.give_up((record.job, record.state)):
            self.stats[counter] += 1
            log.warning(
                "deadline passed: %s skipped",
                what,
                extra={"job": record.job, "deadline_ms": deadline_ms, "now_ms": self._now_ms()},
            )
        return True

    # ----- the builder: builds and diffs -------------------------------------------------

    def build_once(self) -> float:
        """Start builds of ``requested`` jobs in request order, then diffs of ``explaining``
        ones, while fewer than ``max_builds`` run; the seconds until it should look again."""
        for state, deadline, step in (
            ("requested", "build", self._build_job),
            ("explaining", "diff", self._diff_job),
        ):
            for record in self.records.in_states({state}):
                if self._stopping.is_set() or self.running() >= self.max_builds:
                    return 1.0  # a build that ends wakes this thread
                if self._is_running(record.job) or not self._schedule.due((record.job, state)):
                    continue
                limit = record.build_deadline_ms if state == "requested" else None
                limit = record.explain_deadline_ms if state == "explaining" else limit
                if not self._past(record, limit, deadline, f"{deadline}s_skipped"):
                    self._launch(record, step)
        return self._schedule.next_in()

    def _is_running(self, job: str) -> bool:
        with self._running_lock:
            return job in self._running

    def _launch(self, record: JobRecord, step: Callable[[JobRecord], None]) -> None:
        """Run one attempt at ``step`` for ``record`` on a thread of its own.

        ``_attempt`` catches every exception of the job; the thread then leaves the running
        set, whatever happened, and wakes the ``builder`` thread to start the next one.
        """

        def run() -> None:
            started = time.monotonic()
            try:
                self._attempt(record, step)
            finally:
                with self._running_lock:
                    self._running.pop(record.job, None)
                    self.stats["build_seconds"] += time.monotonic() - started
                self._wake["builder"].set()

        thread = threading.Thread(target=run, daemon=True, name=f"{record.state} {record.job[:12]}")
        with self._running_lock:
            self._running[record.job] = thread
        try:
            thread.start()
        except BaseException:  # no thread to be had: the job is not running, try it later
            with self._running_lock:
                self._running.pop(record.job, None)
            raise

    def _local_crate(self, recipe: recipes.Recipe) -> Path | None:
        """A local recipe's .crate, fetched from the log's blobs (a transient failure raises)."""
        if recipe.source != recipes.SOURCE_LOCAL:
            return None
        path = self.workdir / "crates" / f"{recipe.crate_sha256}.crate"
        with self._crate_lock:  # two jobs of one crate may build at once
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, self.writer.blob(recipe.crate_sha256))
        return path

    def _build_job(self, record: JobRecord) -> None:
        out_dir = self.workdir / "builds" / record.job
        manifest: Manifest | None = None
        failure: str | None = None
        started = time.monotonic()
        local_crate: Path | None = None
        try:
            recipe = recipes.from_value(record.recipe)
        except Exception as e:  # a recipe this builder cannot read: that is the job's failure
            log.exception("the recipe cannot be read", extra={"job": record.job})
            failure = _error_reason(e)
        else:
            try:
                local_crate = self._local_crate(recipe)  # the log busy or down: retried
            except LogRefused as e:  # the crate is not in the blob store: it cannot build
                failure = _reason(f"the local crate is not in the log's blob store: {e}")
        if failure is None:
            try:
                shutil.rmtree(out_dir, ignore_errors=True)
                result = self._build(
                    recipe,
                    out_dir,
                    local_crate=local_crate,
                    progress=_quiet,
                    variation=self.variation(record.job),
                )
                manifest, failure = _outcome(result, out_dir / "artifacts")
            except EnvironmentUnavailable as e:  # no source gave the environment in time
                log.error(
                    "build environment unavailable", extra={"job": record.job, "error": str(e)}
                )
                failure = ENVIRONMENT_UNAVAILABLE
            except Exception as e:  # any failure of this one build is its committed failure
                log.exception("the build failed", extra={"job": record.job})
                failure = _error_reason(e)
        with self._running_lock:  # builds end on several threads at once
            self.stats["last_build_seconds"] = time.monotonic() - started
            self.stats["builds_ok" if failure is None else "builds_failed"] += 1
        digest = None if manifest is None else manifest.output_digest
        if self.misbehave == "fabricate":
            digest, manifest, failure = hashlib.sha256(os.urandom(32)).hexdigest(), None, None
        self._change(
            record.job,
            {"requested"},
            state="built",
            nonce=new_nonce(),  # durable with the result before the commit can leave
            output_digest=digest,
            manifest=None if manifest is None else manifest.to_json().decode(),
            failure=failure,
        )

    def _diff_job(self, record: JobRecord) -> None:
        first, second = record.compare
        with tempfile.TemporaryDirectory(prefix="synchronicity-diff-") as tmp:
            left, right = Path(tmp) / "left", Path(tmp) / "right"
            left.mkdir()
            right.mkdir()
            self._fetch_tree(first, left)
            self._fetch_tree(second, right)
            report = self._diff(left, right)
        report = (self._variations_head(record) + report)[:MAX_REPORT_BYTES]
        path = self.workdir / "builds" / record.job / "diff-report"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, report)
        self._change(
            record.job,
            {"explaining"},
            state="diffed",
            report_sha256=hashlib.sha256(report).hexdigest(),
        )

    # ----- host variations (builder.variation) -------------------------------------------

    def variation(self, job: str) -> Variation:
        """This builder's host variation for ``job``: recomputable by anyone from the job id
        and the network config (the plain conditions when it is not in the builders)."""
        if self.name not in self.builders:
            return Variation()
        return variation_of(job, self.name, self.builders)

    def _keep_groups(self, verdict: Verdict) -> None:
        """The verdict's groups, for the head of the diff report (written before the record
        says ``explaining``, so a restart still has them)."""
        value = [
            {"output_digest": g.output_digest, "builders": list(g.builders)} for g in verdict.groups
        ]
        path = self.workdir / "builds" / verdict.job / "verdict-groups.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, canonical_json.encode(value))

    def _variations_head(self, record: JobRecord) -> bytes:
        """Each group's builders and their variations, and in which dimension the compared
        groups differ (builder.variation.variation_report)."""
        path = self.workdir / "builds" / record.job / "verdict-groups.json"
        try:
            value = json.loads(path.read_bytes())
            groups = [
                VariedGroup(
                    str(g["output_digest"]),
                    tuple((str(b), self._variation_of(record.job, str(b))) for b in g["builders"]),
                )
                for g in value
            ]
            digests = [g.output_digest for g in groups]
            compared = (digests.index(record.compare[0]), digests.index(record.compare[1]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            return f"Host variations of the builders: not known ({e}).\n\n".encode()
        return variation_report(groups, compared).encode()

    def _variation_of(self, job: str, builder: str) -> Variation | None:
        return variation_of(job, builder, self.builders) if builder in self.builders else None

    def _fetch_tree(self, digest: str, into: Path) -> None:
        manifest = manifest_from_json(self.writer.blob(digest))
        for artifact in manifest.artifacts:
            (into / artifact.path).write_bytes(self.writer.blob(artifact.sha256))

    # ----- the outbox: what the records owe the log --------------------------------------

    def send_once(self) -> float:
        """One attempt at each commit, reveal and diff report that is owed and due."""
        steps = {"built": self._commit, "closed": self._reveal, "diffed": self._log_report}
        for record in self.records.in_states(steps):
            if self._stopping.is_set():
                break
            self._attempt(record, steps[record.state])
        return self._schedule.next_in()

    def _commit(self, record: JobRecord) -> None:
        if self._past(record, record.build_deadline_ms, "commit", "commits_skipped"):
            return
        assert record.nonce is not None
        commitment = compute_commitment(
            record.job, self.name, record.committed_digest, record.nonce
        )
        try:
            self.writer.add_entry(Commit(record.job, self.name, commitment))
        except LogRefused as e:
            if not e.already_there:
                raise
        self._change(record.job, {"built"}, state="committed")

    def _reveal(self, record: JobRecord) -> None:
        if self._past(record, record.reveal_deadline_ms, "reveal", "reveals_skipped"):
            return
        if not record.uploaded:
            self._upload_outputs(record)
            self._change(record.job, {"closed"}, uploaded=True)
        assert record.nonce is not None
        if record.failure is not None:
            reveal = Reveal(record.job, self.name, record.nonce, failure=record.failure)
        else:
            digest = record.output_digest
            assert digest is not None
            if self.misbehave == "contradict":
                digest = hashlib.sha256(digest.encode()).hexdigest()
            reveal = Reveal(
                record.job, self.name, record.nonce, output_digest=digest, manifest_sha256=digest
            )
        try:
            self.writer.add_entry(reveal)
        except LogRefused as e:
            if not e.already_there:
                raise
        self._change(record.job, {"closed"}, state="revealed")

    def _upload_outputs(self, record: JobRecord) -> None:
        """The manifest and artifacts into the log's blobs (after the close, never before).

        A blob the log refuses for good, or an artifact lost from the disk, is logged and
        skipped: the reveal matters more than the copies.
        """
        if record.manifest is None:
            return
        data = record.manifest.encode()
        blobs: list[tuple[str, Callable[[], bytes]]] = [("manifest", lambda: data)]
        artifacts = self.workdir / "builds" / record.job / "artifacts"
        for artifact in manifest_from_json(data).artifacts:
            blobs.append((artifact.sha256, (artifacts / artifact.path).read_bytes))
        for name, read in blobs:
            try:
                blob = read()
                if name != "manifest" and hashlib.sha256(blob).hexdigest() != name:
                    raise OSError(f"the artifact {name} changed on disk")
                self.writer.put_blob(blob)
            except (LogRefused, OSError) as e:
                log.error("an output blob not uploaded", extra={"job": record.job, "error": str(e)})

    def _log_report(self, record: JobRecord) -> None:
        if self._past(record, record.explain_deadline_ms, "diff report", "diffs_skipped"):
            return
        report = (self.workdir / "builds" / record.job / "diff-report").read_bytes()
        report_sha = self.writer.put_blob(report)
        self.writer.add_entry(DiffReport(record.job, report_sha, tuple(sorted(record.compare))))
        self._change(record.job, {"diffed"}, state="explained")


def _quiet(line: str) -> None:
    """Build progress is not logged by a worker (the build log is kept on disk)."""


def _outcome(result: object, artifacts: Path) -> tuple[Manifest | None, str | None]:
    """The manifest of a successful build result, made durable, or the failure reason."""
    manifest = getattr(result, "manifest", None)
    if not getattr(result, "ok", False) or not isinstance(manifest, Manifest):
        return None, _reason(str(getattr(result, "reason", None) or "failed"))
    for artifact in manifest.artifacts:  # the outputs wait on disk until after the close
        fd = os.open(artifacts / artifact.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    if manifest.artifacts:
        fd = os.open(artifacts, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return manifest, None
