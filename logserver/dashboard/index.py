"""The dashboard's in-memory index of build-protocol entries, kept up to date incrementally.

Pages must not scan the log, so the dashboard folds every leaf once into a :class:`BuildIndex`:
job id -> summary and the leaf indexes of the job's entries, jobs in request order, verdicts in
log order, crate name -> jobs, and each crate's (name, version) last verdict with the coverage
counts and timeline of :mod:`logserver.dashboard.coverage`. Leaves that do not parse as protocol
leaves (:meth:`logserver.protocol.signed.Leaf.parse`; an ``--open`` log accepts anything) are
skipped. Signatures are not checked here: a log that runs the protocol validated them on the way
in, and the build page names each entry's signer.

``BuildIndex`` is pure: leaves in, query results out. :class:`IndexFollower` is its I/O edge: a
thread that reads new leaves from the LMDB store, woken by the sequencer's listener after each
durable batch, so the write path only pays for setting an event.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import lmdb

from logserver.core.errors import FormatError, OperationalError, UsageError
from logserver.dashboard.coverage import (
    MAX_BUCKETS,
    Coverage,
    CoverageTally,
    CratesPage,
    CrateVerdict,
    normalise_reason,
)
from logserver.protocol.entries import Close, Request, Reveal, Verdict
from logserver.protocol.signed import Leaf
from logserver.sequencer import Integrated
from logserver.storage import LogStore

log = logging.getLogger(__name__)

READ_CHUNK = 512  # leaves read from LMDB and parsed per step of the follower
MAX_QUERY_CHARS = 64


@dataclass(frozen=True)
class JobSummary:
    """What the builds list shows about one job, without reading the log."""

    job: str
    name: str
    version: str
    request_index: int
    request_time: int
    close_time: int | None = None
    verdict_index: int | None = None
    verdict_time: int | None = None
    outcome: str | None = None  # None while the job has no verdict

    @property
    def status(self) -> str:
        if self.outcome is not None:
            return self.outcome
        return "building" if self.close_time is None else "revealing"


@dataclass(frozen=True)
class JobsPage:
    """One page of jobs, newest request first, and the number of jobs that matched."""

    jobs: tuple[JobSummary, ...]
    total: int


@dataclass
class _JobRecord:
    summary: JobSummary
    entries: list[int] = field(default_factory=list)
    # Reveal leaf -> normalised failure reason, until the job's verdict refers to them.
    failed_reveals: dict[int, str] = field(default_factory=dict)


def _recipe_text(recipe: object, key: str) -> str:
    value = recipe.get(key) if isinstance(recipe, dict) else None
    return value if isinstance(value, str) else ""


class BuildIndex:
    """Protocol leaves folded into lookups; every method is safe to call from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._size = 0  # leaves folded so far = index of the next leaf
        self._jobs: dict[str, _JobRecord] = {}
        self._order: list[str] = []  # job ids in request order
        self._verdicts: list[tuple[int, str]] = []  # (leaf index, job id) in log order
        self._by_name: dict[str, list[str]] = {}  # lowercase crate name -> job ids, in order
        self._outcomes: dict[str, int] = {}
        self._coverage = CoverageTally()
        self._skipped = 0

    # ------------------------------------------------------------------------ folding leaves

    @property
    def size(self) -> int:
        """How many leaves of the log have been folded in."""
        with self._lock:
            return self._size

    @property
    def skipped(self) -> int:
        """Leaves that were not protocol leaves, or named a job never requested."""
        with self._lock:
            return self._skipped

    def add_leaves(self, first_index: int, leaves: Sequence[bytes]) -> None:
        """Fold leaves ``first_index, first_index + 1, ...``; leaves already folded are ignored.

        Parsing happens outside the lock, so readers wait only for the cheap bookkeeping.
        """
        if not leaves:
            return
        parsed: list[tuple[int, Leaf | None]] = []
        for offset, data in enumerate(leaves):
            try:
                parsed.append((first_index + offset, Leaf.parse(data)))
            except FormatError:
                parsed.append((first_index + offset, None))
        with self._lock:
            if first_index > self._size:
                raise UsageError(f"leaf {first_index} given before leaf {self._size}")
            for index, leaf in parsed:
                if index < self._size:
                    continue
                if leaf is None or not self._fold(index, leaf):
                    self._skipped += 1
                self._size = index + 1

    def _fold(self, index: int, leaf: Leaf) -> bool:
        entry, time = leaf.entry.entry, leaf.time_ms
        if isinstance(entry, Request):
            if entry.job in self._jobs:
                return False  # a duplicate request: the first one stands
            name = _recipe_text(entry.recipe, "name")
            summary = JobSummary(
                entry.job, name, _recipe_text(entry.recipe, "version"), index, time
            )
            self._jobs[entry.job] = _JobRecord(summary, [index])
            self._order.append(entry.job)
            self._by_name.setdefault(name.lower(), []).append(entry.job)
            return True
        record = self._jobs.get(entry.job)
        if record is None:
            return False
        record.entries.append(index)
        summary = record.summary
        if isinstance(entry, Close) and summary.close_time is None:
            record.summary = replace(summary, close_time=time)
        elif isinstance(entry, Reveal) and entry.failure is not None:
            if summary.verdict_index is None:
                record.failed_reveals[index] = normalise_reason(entry.failure)
        elif isinstance(entry, Verdict) and summary.verdict_index is None:
            record.summary = replace(
                summary, verdict_index=index, verdict_time=time, outcome=entry.outcome
            )
            self._verdicts.append((index, entry.job))
            self._outcomes[entry.outcome] = self._outcomes.get(entry.outcome, 0) + 1
            self._coverage.add_verdict(
                summary.name, summary.version, index, time, entry, record.failed_reveals
            )
            record.failed_reveals = {}
        return True

    # ------------------------------------------------------------------------ queries

    def job(self, job_id: str) -> JobSummary | None:
        with self._lock:
            record = self._jobs.get(job_id)
            return None if record is None else record.summary

    def entry_indexes(self, job_id: str) -> tuple[int, ...]:
        """Leaf indexes of the job's entries in log order (empty for an unknown job)."""
        with self._lock:
            record = self._jobs.get(job_id)
            return () if record is None else tuple(record.entries)

    def counts(self) -> dict[str, int]:
        """Jobs, verdicts and verdicts by outcome."""
        with self._lock:
            return {"jobs": len(self._order), "verdicts": len(self._verdicts)} | self._outcomes

    def latest_verdicts(self, limit: int) -> tuple[JobSummary, ...]:
        """The newest ``limit`` verdicts' jobs, newest first."""
        with self._lock:
            newest = self._verdicts[-limit:] if limit > 0 else []
            return tuple(self._jobs[job].summary for _, job in reversed(newest))

    def jobs_page(self, offset: int, limit: int, query: str = "") -> JobsPage:
        """Jobs newest first, skipping ``offset``; with ``query``, only crates whose name
        contains it (case-insensitive). Costs O(distinct names) for a query, never O(log)."""
        if offset < 0 or limit < 0:
            raise UsageError("offset and limit must not be negative")
        needle = query.strip().lower()[:MAX_QUERY_CHARS]
        with self._lock:
            if not needle:
                total = len(self._order)
                end = max(total - offset, 0)
                ids = self._order[max(end - limit, 0) : end][::-1]
            else:
                matched = [
                    job_id
                    for name, job_ids in self._by_name.items()
                    if needle in name
                    for job_id in job_ids
                ]
                matched.sort(key=lambda j: self._jobs[j].summary.request_index, reverse=True)
                total = len(matched)
                ids = matched[offset : offset + limit]
            return JobsPage(tuple(self._jobs[j].summary for j in ids), total)

    # ------------------------------------------------------------------------ coverage

    def coverage(self, max_buckets: int = MAX_BUCKETS) -> Coverage:
        """Crates by their last verdict's outcome, verdicts by outcome, builders' failure
        reasons, and a timeline of at most ``max_buckets`` buckets (bounded work)."""
        with self._lock:
            return self._coverage.coverage(max_buckets)

    def crates_page(self, offset: int, limit: int, query: str = "") -> CratesPage:
        """Crates with their last verdict, by name then version, skipping ``offset``; with
        ``query``, only crates whose name contains it (case-insensitive)."""
        if offset < 0 or limit < 0:
            raise UsageError("offset and limit must not be negative")
        needle = query.strip().lower()[:MAX_QUERY_CHARS]
        with self._lock:
            return self._coverage.crates_page(offset, limit, needle)

    def crate(self, name: str, version: str) -> CrateVerdict | None:
        """The last verdict of crate ``name`` ``version`` (exact spelling), None without one."""
        with self._lock:
            return self._coverage.crate(name, version)

    def crate_versions(self, name: str) -> tuple[CrateVerdict, ...]:
        """Every version of crate ``name`` (ignoring case) that has a verdict, with its last
        verdict, oldest version first: for a name/version lookup over the same leaves."""
        with self._lock:
            return self._coverage.versions(name)


class IndexFollower:
    """Keeps a :class:`BuildIndex` level with a :class:`LogStore` from a background thread."""

    def __init__(self, store: LogStore, index: BuildIndex | None = None) -> None:
        self.store = store
        self.index = index if index is not None else BuildIndex()
        self._target = 0
        self._target_lock = threading.Lock()
        self._wake = threading.Event()
        self._caught_up = threading.Condition()
        self._stopping = False
        self.failure: str | None = None
        self._thread = threading.Thread(target=self._run, name="dashboard-index", daemon=True)

    def on_integrated(self, done: Integrated) -> None:
        """Sequencer listener: remember the new size and wake the thread (cheap on purpose)."""
        self._raise_target(done.first_index + done.count)

    def _raise_target(self, size: int) -> None:
        with self._target_lock:
            self._target = max(self._target, size)
        self._wake.set()

    @property
    def target(self) -> int:
        with self._target_lock:
            return self._target

    def start(self) -> None:
        """Start following; register ``on_integrated`` with the sequencer before this."""
        self._raise_target(self.store.size())
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wait_until(self, size: int, timeout: float) -> bool:
        """Wait until at least ``size`` leaves are indexed; False on timeout or failure."""
        with self._caught_up:
            return self._caught_up.wait_for(
                lambda: self.index.size >= size or self.failure is not None or self._stopping,
                timeout,
            ) and (self.index.size >= size)

    def _run(self) -> None:
        try:
            while not self._stopping:
                start, target = self.index.size, self.target
                if start >= target:
                    self._wake.wait()
                    self._wake.clear()
                    continue
                end = min(start + READ_CHUNK, target)
                self.index.add_leaves(start, self.store.entries(start, end))
                with self._caught_up:
                    self._caught_up.notify_all()
        except (lmdb.Error, OperationalError, UsageError) as e:
            # The store was closed under us (shutdown) or is broken: pages say so.
            self.failure = str(e)
            log.warning("dashboard index stopped", extra={"error": str(e)})
            with self._caught_up:
                self._caught_up.notify_all()
