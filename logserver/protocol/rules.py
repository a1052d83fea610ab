"""The build protocol's rules, sans-I/O: which leaves may be appended, and what the log must add.

Both the log server and every witness fold the log's leaves, in order and from leaf 0, into a
:class:`ProtocolState`. ``apply`` accepts a leaf or raises :class:`ProtocolViolation` naming
the broken rule (state unchanged); ``due_entries(now_ms)`` returns the ``close`` and ``verdict``
entries the log must append at that time. Log-authored entries are accepted only if they are
exactly what ``due_entries`` yields at their leaf's time, so a witness recomputes every verdict.
:func:`validate_leaves` is a witness's check of a batch of new leaves. spec/protocol.md is the
normative description; the rule codes below are part of it.

Deadlines are measured on the log's leaf times only: the build deadline from the request's
leaf, the reveal deadline from the close's leaf. Nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import NoReturn

from logserver.core import canonical_json
from logserver.core.errors import UsageError, VerificationError
from logserver.protocol.entries import (
    EVIDENCE_KINDS,
    MAX_LEAF_BYTES,
    MAX_TIME_MS,
    OUTCOMES,
    VERDICT_REASONS,
    Close,
    Commit,
    DiffReport,
    Evidence,
    Failure,
    Group,
    Request,
    Reveal,
    Verdict,
    check_name,
)
from logserver.protocol.signed import (
    EntryVerifier,
    Leaf,
    SignedEntry,
    network_id_bytes,
    verify_entry,
)


class ProtocolViolation(VerificationError):
    """A leaf breaks a rule of the build protocol.

    ``rule`` is a stable code from spec/protocol.md (for example ``commit-after-close``),
    ``leaf_index`` the position the leaf would have taken in the log.
    """

    def __init__(self, rule: str, leaf_index: int, detail: str) -> None:
        super().__init__(f"leaf {leaf_index}: {rule}: {detail}")
        self.rule = rule
        self.leaf_index = leaf_index
        self.detail = detail


def default_threshold(builder_count: int) -> int:
    """k = 2f + 1 for n = 3f + 1 builders, raised to a strict majority for other n."""
    faults = (builder_count - 1) // 3
    return max(2 * faults + 1, builder_count // 2 + 1)


def max_verdict_leaf_bytes(log_name: str, builders: Iterable[str]) -> int:
    """An upper bound on the bytes of any verdict leaf of a network with these builders.

    A verdict names each committed builder at most twice (in ``agreeing``, and in one of
    ``groups``, ``failures``, ``evidence`` or ``missing``) and otherwise holds digests, leaf
    indexes and times of at most 16 digits and the log's name: never text a builder chose.
    The bound adds, to a verdict with empty lists and the longest of every other member, for
    each builder its name in ``agreeing`` and the largest object it could be listed in, each
    with a comma. A close is smaller (each name once). ``ProtocolConfig`` refuses builders for
    whom it exceeds the leaf limit, so the log never owes an entry it cannot log.
    """
    big, digest = MAX_TIME_MS, "0" * 64
    members = ("agreeing", "evidence", "failures", "groups", "missing")
    lists: dict[str, list[object]] = {member: [] for member in members}
    entry = {
        "type": "verdict",
        "job": digest,
        "reason": max(VERDICT_REASONS, key=len),
        "outcome": max(OUTCOMES, key=len),
        "threshold": big,
        "output_digest": digest,
        "signer": {"name": log_name, "key_id": "0" * 8},
        "signature": "0" * 88,  # base64 of 64 bytes
    } | lists
    size = len(canonical_json.encode({"entry": entry, "time": big}))
    for name in builders:
        listed_in = [
            {"builders": [name], "output_digest": digest},
            {"builder": name, "reveal_leaf": big},
            {
                "builder": name,
                "commit_leaf": big,
                "kind": max(EVIDENCE_KINDS, key=len),
                "reveal_leaf": big,
            },
        ]
        largest = max(len(canonical_json.encode(obj)) for obj in listed_in)
        size += len(canonical_json.encode(name)) + 1 + largest + 1
    return size


@dataclass(frozen=True)
class RetiredKey:
    """A builder's earlier key: it signs that builder's entries in leaves stamped before
    ``until_ms`` (and after the previous retired key's ``until_ms``)."""

    verifier: EntryVerifier
    until_ms: int


@dataclass(frozen=True)
class ProtocolConfig:
    """The network's protocol parameters (supplied by the network config).

    ``network_id`` is inside every entry's signed bytes: entries signed for another network
    do not verify here. ``builders`` maps each builder to its current key; ``retired_keys``
    lists, for a builder whose key was replaced, its earlier keys in order, each with the
    leaf time from which it no longer signs (:meth:`builder_key`). History is checked against
    the keys valid when it was written.
    """

    log: EntryVerifier
    builders: Mapping[str, EntryVerifier]
    build_deadline_ms: int
    reveal_deadline_ms: int
    threshold: int = 0  # 0 means default_threshold(len(builders))
    network_id: str = field(kw_only=True)
    retired_keys: Mapping[str, Sequence[RetiredKey]] = field(
        default_factory=lambda: MappingProxyType({}), kw_only=True
    )

    def __post_init__(self) -> None:
        network_id_bytes(self.network_id)
        if not self.builders:
            raise UsageError("the network needs at least one builder")
        for name, verifier in self.builders.items():
            check_name(name, "network config", "builder name")
            if verifier.name != name:
                raise UsageError(f"builder {name!r} has a key named {verifier.name!r}")
        for name, retired in self.retired_keys.items():
            if name not in self.builders:
                raise UsageError(f"retired keys for {name!r}, who is not a builder")
            until = [key.until_ms for key in retired]
            if any(key.verifier.name != name for key in retired):
                raise UsageError(f"a retired key of builder {name!r} has another name")
            if until != sorted(set(until)) or not all(0 < t <= MAX_TIME_MS for t in until):
                raise UsageError(f"the retired keys of {name!r} must end at increasing times")
        retired_keys = {name: tuple(keys) for name, keys in self.retired_keys.items() if keys}
        object.__setattr__(self, "retired_keys", MappingProxyType(retired_keys))
        check_name(self.log.name, "network config", "log name")
        if self.log.name in self.builders:
            raise UsageError(f"the log key name {self.log.name!r} is also a builder's")
        if self.build_deadline_ms < 0 or self.reveal_deadline_ms < 0:
            raise UsageError("deadlines must not be negative")
        object.__setattr__(self, "builders", MappingProxyType(dict(self.builders)))
        n = len(self.builders)
        if self.threshold == 0:
            object.__setattr__(self, "threshold", default_threshold(n))
        if not n < 2 * self.threshold <= 2 * n:
            raise UsageError(f"threshold {self.threshold} must be a majority of {n} builders")
        largest = max_verdict_leaf_bytes(self.log.name, self.builders)
        if largest > MAX_LEAF_BYTES:
            raise UsageError(
                f"a verdict of these {n} builders could take {largest} bytes, over the leaf "
                f"limit of {MAX_LEAF_BYTES}: fewer builders or shorter names"
            )

    def builder_key(self, name: str, time_ms: int) -> EntryVerifier | None:
        """The key that signs builder ``name``'s entries in a leaf stamped ``time_ms``: the first
        retired key whose ``until_ms`` is after it, else the current key (None: no builder)."""
        for retired in self.retired_keys.get(name, ()):
            if time_ms < retired.until_ms:
                return retired.verifier
        return self.builders.get(name)


@dataclass(frozen=True)
class RevealRecord:
    """A reveal in the log; ``opens_commit`` is False when it is evidence of misbehaviour."""

    reveal: Reveal
    leaf_index: int
    opens_commit: bool


@dataclass
class JobState:
    """Everything the log holds about one job."""

    request: Request
    request_leaf: int
    request_time: int
    commits: dict[str, tuple[Commit, int]] = field(default_factory=dict)  # builder -> leaf
    close: Close | None = None
    close_time: int = 0
    reveals: dict[str, RevealRecord] = field(default_factory=dict)
    verdict: Verdict | None = None
    diff_reports: tuple[DiffReport, ...] = ()

    def copy(self) -> JobState:
        """A copy sharing only immutable parts."""
        return replace(self, commits=dict(self.commits), reveals=dict(self.reveals))


def compute_verdict(job: JobState, threshold: int, reason: str) -> Verdict:
    """The verdict of a closed job from its reveals (spec/protocol.md, "Verdict")."""
    assert job.close is not None
    by_digest: dict[str, list[str]] = {}
    failures: list[Failure] = []
    missing: list[str] = []
    evidence: list[Evidence] = []
    for builder in job.close.committed:  # sorted, so every list below is sorted
        record = job.reveals.get(builder)
        if record is None:
            missing.append(builder)
        elif not record.opens_commit:
            evidence.append(Evidence(builder, job.commits[builder][1], record.leaf_index))
        elif record.reveal.failure is not None:
            failures.append(Failure(builder, record.leaf_index))
        else:
            assert record.reveal.output_digest is not None
            by_digest.setdefault(record.reveal.output_digest, []).append(builder)
    groups = sorted(
        (Group(digest, tuple(builders)) for digest, builders in by_digest.items()),
        key=lambda g: (-len(g.builders), g.output_digest),
    )
    reproduced = bool(groups) and len(groups[0].builders) >= threshold
    return Verdict(
        job=job.request.job,
        reason="all-revealed" if reason == "all-revealed" else "deadline",
        outcome="reproduced" if reproduced else "not-reproduced" if groups else "failed",
        threshold=threshold,
        output_digest=groups[0].output_digest if reproduced else None,
        agreeing=groups[0].builders if reproduced else (),
        groups=tuple(groups),
        failures=tuple(failures),
        missing=tuple(missing),
        evidence=tuple(evidence),
    )


@dataclass
class ProtocolState:
    """The build protocol folded over a log's leaves, from leaf 0."""

    config: ProtocolConfig
    size: int = 0  # number of leaves applied = index of the next leaf
    last_time: int = 0
    _jobs: dict[str, JobState] = field(default_factory=dict)
    _open: dict[str, JobState] = field(default_factory=dict)  # jobs without a verdict

    @property
    def jobs(self) -> Mapping[str, JobState]:
        """Every requested job by id, in request order (read-only view)."""
        return MappingProxyType(self._jobs)

    def copy(self) -> ProtocolState:
        """An independent copy, cheap enough for every batch a witness validates.

        Jobs with a verdict are never changed in place (a diff report replaces the JobState),
        so the copy shares them; only open jobs are copied.
        """
        open_jobs = {job_id: job.copy() for job_id, job in self._open.items()}
        jobs = self._jobs | open_jobs
        return ProtocolState(self.config, self.size, self.last_time, jobs, open_jobs)

    # -------------------------------------------------------------------- applying leaves

    def apply_bytes(self, data: bytes) -> Leaf:
        """Parse an encoded leaf (FormatError if malformed) and apply it."""
        leaf = Leaf.parse(data)
        self.apply(leaf)
        return leaf

    def apply(self, leaf: Leaf) -> None:
        """Append ``leaf`` to the state, or raise ProtocolViolation and change nothing."""
        index, time = self.size, leaf.time_ms
        if time < self.last_time:
            self._fail("time-backwards", f"time {time} < previous leaf time {self.last_time}")
        self._check_author(leaf.entry, time)
        entry = leaf.entry.entry
        if isinstance(entry, Request):
            if entry.job in self._jobs:
                self._fail("duplicate-request", f"job {entry.job} was already requested")
            job = JobState(entry, index, time)
            self._jobs[entry.job] = self._open[entry.job] = job
        else:
            job = self._job(entry.job)
            match entry:
                case Commit():
                    self._apply_commit(job, entry, time)
                case Reveal():
                    self._apply_reveal(job, entry, time)
                case Close() | Verdict():
                    self._apply_log_entry(job, entry, time)
                case DiffReport():
                    self._apply_diff_report(job, entry)
        self.size += 1
        self.last_time = time

    def _fail(self, rule: str, detail: str) -> NoReturn:
        raise ProtocolViolation(rule, self.size, detail)

    def _job(self, job_id: str) -> JobState:
        job = self._jobs.get(job_id)
        if job is None:
            raise ProtocolViolation("unknown-job", self.size, f"job {job_id} was not requested")
        return job

    def _check_author(self, signed: SignedEntry, time: int) -> None:
        name, entry = signed.signer.name, signed.entry
        is_log = name == self.config.log.name
        verifier = self.config.log if is_log else self.config.builder_key(name, time)
        if verifier is None:
            self._fail("unknown-signer", f"{name!r} is neither a builder nor the log")
        if signed.signer.key_id != verifier.key_id:
            self._fail(
                "unregistered-key", f"{signed.signer} is not the key of {name} at time {time}"
            )
        try:
            verify_entry(signed, verifier, self.config.network_id)
        except VerificationError as exc:
            raise ProtocolViolation("bad-signature", self.size, str(exc)) from exc
        if isinstance(entry, Close | Verdict) != is_log and not isinstance(entry, DiffReport):
            who = "the log" if isinstance(entry, Close | Verdict) else "a builder"
            self._fail("wrong-author", f"a {type(entry).__name__} entry must be signed by {who}")
        if isinstance(entry, Commit | Reveal) and entry.builder != name:
            self._fail("author-mismatch", f"entry for builder {entry.builder} signed by {name}")

    def _apply_commit(self, job: JobState, commit: Commit, time: int) -> None:
        deadline = job.request_time + self.config.build_deadline_ms
        if job.close is not None:
            self._fail("commit-after-close", f"job {commit.job} is closed")
        if time >= deadline:
            self._fail("commit-after-deadline", f"time {time} >= build deadline {deadline}")
        if commit.builder in job.commits:
            self._fail("duplicate-commit", f"{commit.builder} already committed")
        job.commits[commit.builder] = (commit, self.size)

    def _apply_reveal(self, job: JobState, reveal: Reveal, time: int) -> None:
        if job.close is None:
            self._fail("reveal-before-close", f"job {reveal.job} is not closed")
        if reveal.builder not in job.close.committed:
            self._fail("reveal-not-committed", f"{reveal.builder} did not commit before close")
        if reveal.builder in job.reveals:
            self._fail("duplicate-reveal", f"{reveal.builder} already revealed")
        if job.verdict is not None:
            self._fail("reveal-after-verdict", f"job {reveal.job} has its verdict")
        deadline = job.close_time + self.config.reveal_deadline_ms
        if time >= deadline:
            self._fail("reveal-after-deadline", f"time {time} >= reveal deadline {deadline}")
        opens = reveal.matches(job.commits[reveal.builder][0])
        job.reveals[reveal.builder] = RevealRecord(reveal, self.size, opens)

    def _apply_log_entry(self, job: JobState, entry: Close | Verdict, time: int) -> None:
        due: Close | Verdict | None
        due = self._due_close(job, time) if isinstance(entry, Close) else None
        if isinstance(entry, Verdict):
            due = self._due_verdict(job, time)
        kind = type(entry).__name__.lower()
        if due is None:
            self._fail("log-entry-not-due", f"no {kind} is due for job {entry.job} at {time}")
        if entry != due:
            self._fail("log-entry-mismatch", f"{kind} differs from the computed {due}")
        self._record_log_entry(job, entry, time)

    def _record_log_entry(self, job: JobState, entry: Close | Verdict, time: int) -> None:
        if isinstance(entry, Close):
            job.close, job.close_time = entry, time
        else:
            job.verdict = entry
            del self._open[job.request.job]

    def _apply_diff_report(self, job: JobState, report: DiffReport) -> None:
        if job.verdict is None or job.verdict.outcome != "not-reproduced":
            self._fail("diff-report-without-mismatch", f"job {report.job} is not not-reproduced")
        known = {group.output_digest for group in job.verdict.groups}
        if not set(report.groups) <= known:
            self._fail("diff-report-unknown-group", "a compared digest is not a verdict group")
        self._jobs[report.job] = replace(job, diff_reports=(*job.diff_reports, report))

    # -------------------------------------------------------------------- due log entries

    def _due_close(self, job: JobState, now: int) -> Close | None:
        if job.close is not None:
            return None
        committed = tuple(sorted(job.commits))
        if len(committed) == len(self.config.builders):
            return Close(job.request.job, "all-committed", committed)
        if now >= job.request_time + self.config.build_deadline_ms:
            return Close(job.request.job, "deadline", committed)
        return None

    def _due_verdict(self, job: JobState, now: int) -> Verdict | None:
        if job.close is None or job.verdict is not None:
            return None
        if len(job.reveals) == len(job.close.committed):
            return compute_verdict(job, self.config.threshold, "all-revealed")
        if now >= job.close_time + self.config.reveal_deadline_ms:
            return compute_verdict(job, self.config.threshold, "deadline")
        return None

    def due_entries(self, now_ms: int) -> list[Close | Verdict]:
        """The log-authored entries due at ``now_ms``, in the order the log must append them.

        Appending all of them, signed by the log and stamped ``now_ms``, is valid. A close may
        make a verdict due at once (no commits, or a zero reveal deadline): both are returned.
        """
        if now_ms < self.last_time:
            raise UsageError(f"time {now_ms} is before the last leaf's time {self.last_time}")
        due: list[Close | Verdict] = []
        for job in self._open.values():
            close = self._due_close(job, now_ms)
            if close is not None:
                due.append(close)
            closed_job = job if close is None else replace(job, close=close, close_time=now_ms)
            verdict = self._due_verdict(closed_job, now_ms)
            if verdict is not None:
                due.append(verdict)
        return due


def validate_leaves(
    state: ProtocolState,
    leaves: Iterable[Leaf],
    now_ms: int,
    max_skew_ms: int,
    *,
    last_accepted_ms: int | None = None,
) -> ProtocolState:
    """A witness's check of new leaves: applied to a copy of ``state``, which is returned.

    Besides every rule of ``apply``: no leaf may be stamped more than ``max_skew_ms`` ahead of
    the witness's clock ``now_ms`` [``time-ahead``]; and, given ``last_accepted_ms`` (the
    witness's clock when it last accepted new leaves), the newest leaf may not be stamped more
    than ``max_skew_ms`` before that [``time-behind``], so a log cannot freeze its clock to
    hold jobs open. The reference is the last acceptance rather than ``now_ms`` so that leaves
    the log appended while the witnesses could not agree (an outage, a restart of all of them)
    are not refused forever; without it (leaves folded at start-up, or certified by a quorum
    already) nothing is judged behind. ``state`` itself is never changed.
    """
    leaves = list(leaves)
    if last_accepted_ms is not None and leaves:
        newest = leaves[-1].time_ms
        if newest < last_accepted_ms - max_skew_ms:
            raise ProtocolViolation(
                "time-behind",
                state.size + len(leaves) - 1,
                f"newest time {newest} < {last_accepted_ms} (last accepted) - skew {max_skew_ms}",
            )
    new_state = state.copy()
    for leaf in leaves:
        if leaf.time_ms > now_ms + max_skew_ms:
            raise ProtocolViolation(
                "time-ahead", new_state.size, f"time {leaf.time_ms} > clock {now_ms} + skew"
            )
        new_state.apply(leaf)
    return new_state
