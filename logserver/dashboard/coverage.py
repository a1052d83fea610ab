"""Coverage: which crates the log reproduced, how that changed over time, and why builds failed.

Pure and unlocked: :class:`~logserver.dashboard.index.BuildIndex` owns one :class:`CoverageTally`,
feeds it each verdict under its lock while it folds leaves, and answers queries from it. A crate
is a (name, version) pair as its recipe spells it; its last verdict in log order stands,
whatever recipe (features, toolchain) it was for.

Costs: folding a verdict is O(log crates) plus one insertion into a sorted list for a new crate;
:meth:`CoverageTally.coverage` is O(buckets × log verdicts + reasons), never O(log);
:meth:`CoverageTally.crates_page` is O(limit) without a query and O(crates) with one (a
substring test per crate, as the builds search). Memory is six integers a verdict (the timeline)
and one record a crate.

For other readers of the same leaves (a name/version lookup, say): :meth:`CoverageTally.crate`
and :meth:`CoverageTally.versions` answer by name in O(log crates + versions), and
:func:`normalise_reason` is the grouping of failure reasons the dashboard shows.
"""

from __future__ import annotations

import bisect
import re
from array import array
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from logserver.protocol.entries import OUTCOMES, Verdict

MAX_REASON_CHARS = 40
MAX_REASONS = 1000  # distinct failure reasons counted; any later new one counts as OTHER
OTHER = "other"
MAX_BUCKETS = 60
# Bucket widths of the timeline, finest first: the first that spans every verdict in at most
# MAX_BUCKETS buckets is used (a young log is shown by the minute, an old one by the day).
BUCKET_WIDTHS_MS = (
    60_000,
    5 * 60_000,
    15 * 60_000,
    3_600_000,
    6 * 3_600_000,
    86_400_000,
    7 * 86_400_000,
    30 * 86_400_000,
)

# Reasons of a verdict that are not a builder's own words.
OUTPUTS_DIFFER = "outputs-differ"  # not reproduced: builders disagree
TOO_FEW_AGREE = "too-few-agree"  # not reproduced: one output, fewer builders than the threshold
NO_REVEAL = "no-reveal"  # a committed builder did not reveal before the deadline
COMMITMENT_MISMATCH = "commitment-mismatch"  # a reveal that does not open its commit

_WORD = re.compile(r"\S+")


def normalise_reason(text: str) -> str:
    """The group of a builder's failure reason, at most 40 characters.

    The sandbox's reason codes stand as they are (``nonzero-exit``, ``timeout``,
    ``out-of-memory``, ...); a reason of the form ``word: detail`` (an error class such as
    ``OperationalError: ...``, or ``environment-unavailable: ...``) groups under the word;
    anything else under its first three words. Empty text is ``unknown``.
    """
    line = " ".join(text.split())
    if not line:
        return "unknown"
    head = line.partition(":")[0].strip()
    if head and " " not in head:
        return head[:MAX_REASON_CHARS]
    return " ".join(_WORD.findall(line)[:3])[:MAX_REASON_CHARS]


def verdict_reason(verdict: Verdict, failed_reveals: Mapping[int, str]) -> str:
    """Why a verdict is not ``reproduced`` ("" when it is): for ``failed``, the most common
    reason among its builders' failures (``failed_reveals`` maps a reveal leaf to its
    normalised reason; ties go to the first in alphabetical order)."""
    if verdict.outcome == "reproduced":
        return ""
    if verdict.outcome == "not-reproduced":
        return OUTPUTS_DIFFER if len(verdict.groups) > 1 else TOO_FEW_AGREE
    reasons = Counter(failed_reveals.get(f.reveal_leaf, "unknown") for f in verdict.failures)
    if reasons:
        return min(reasons, key=lambda r: (-reasons[r], r))
    return COMMITMENT_MISMATCH if verdict.evidence else NO_REVEAL


def version_key(version: str) -> tuple[int, int, int, int, str]:
    """Sorts semantic versions as Cargo does, nearly: by the numbers, a pre-release before its
    release; text that is not a version sorts first, as text."""
    match = re.fullmatch(r"(\d{1,18})\.(\d{1,18})\.(\d{1,18})(?:-([^+]*))?(?:\+.*)?", version)
    if match is None:
        return (-1, -1, -1, 0, version)
    major, minor, patch, pre = match.groups()
    return (int(major), int(minor), int(patch), 0 if pre else 1, pre or "")


@dataclass(frozen=True)
class CrateVerdict:
    """A crate's last verdict: the job it was for, its leaf and time, outcome and reason."""

    name: str
    version: str
    job: str
    verdict_index: int
    verdict_time: int
    outcome: str
    reason: str  # "" for reproduced (see verdict_reason)
    verdicts: int  # how many verdicts this crate had in all


@dataclass(frozen=True)
class CratesPage:
    """One page of crates (by name, then version) and how many crates matched."""

    crates: tuple[CrateVerdict, ...]
    total: int


@dataclass(frozen=True)
class Bucket:
    """One bar of the timeline: verdicts logged in [start, end) by outcome, and the crates
    covered at its end (crates with a verdict; of those, crates whose last one reproduced)."""

    start_ms: int
    end_ms: int
    verdicts: Mapping[str, int]
    crates: int
    reproduced: int

    @property
    def share(self) -> float | None:
        """The share of crates reproduced at the end of the bucket (None: no crate yet)."""
        return self.reproduced / self.crates if self.crates else None


@dataclass(frozen=True)
class ReasonCount:
    """A normalised failure reason: builders that failed with it, and verdicts it occurs in."""

    reason: str
    builders: int
    verdicts: int


@dataclass(frozen=True)
class Coverage:
    """What the coverage page shows, apart from the list of crates."""

    crates: Mapping[str, int]  # crates by the outcome of their last verdict
    verdicts: Mapping[str, int]  # every verdict by outcome
    reasons: tuple[ReasonCount, ...]  # most builders first
    bucket_ms: int  # 0 when there is no verdict yet
    timeline: tuple[Bucket, ...]

    @property
    def crate_count(self) -> int:
        return sum(self.crates.values())


def _bucket_width(first_ms: int, last_ms: int, max_buckets: int) -> int:
    for width in BUCKET_WIDTHS_MS:
        if last_ms // width - first_ms // width < max_buckets:
            return width
    return BUCKET_WIDTHS_MS[-1]


class CoverageTally:
    """Verdicts folded into crate coverage. Not thread-safe: its owner locks around it."""

    def __init__(self) -> None:
        self._crates: dict[tuple[str, str], CrateVerdict] = {}
        # (lowercase name, name, version key, version), sorted: the crate list's order.
        self._order: list[tuple[str, str, tuple[int, int, int, int, str], str]] = []
        self._by_outcome: dict[str, int] = dict.fromkeys(OUTCOMES, 0)  # crates by last outcome
        self._verdicts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self._reason_builders: dict[str, int] = {}
        self._reason_verdicts: dict[str, int] = {}
        # The timeline: one row a verdict, times never decreasing.
        self._times = array("q")
        # Verdicts so far, by outcome.
        self._cumulative: dict[str, array[int]] = {o: array("q") for o in OUTCOMES}
        self._covered = array("q")  # crates with a verdict so far
        self._covered_reproduced = array("q")  # of which the last verdict reproduced

    # ---------------------------------------------------------------------- folding

    def add_verdict(
        self,
        name: str,
        version: str,
        index: int,
        time_ms: int,
        verdict: Verdict,
        failed_reveals: Mapping[int, str],
    ) -> CrateVerdict:
        """Fold one verdict (the first of its job) for crate ``name`` ``version``, logged at
        leaf ``index`` and ``time_ms``; ``failed_reveals`` as for :func:`verdict_reason`."""
        outcome = verdict.outcome
        key = (name, version)
        previous = self._crates.get(key)
        record = CrateVerdict(
            name,
            version,
            verdict.job,
            index,
            time_ms,
            outcome,
            verdict_reason(verdict, failed_reveals),
            1 if previous is None else previous.verdicts + 1,
        )
        self._crates[key] = record
        if previous is None:
            bisect.insort(self._order, (name.lower(), name, version_key(version), version))
        else:
            self._by_outcome[previous.outcome] -= 1
        self._by_outcome[outcome] += 1
        self._verdicts[outcome] += 1
        self._count_reasons(verdict, failed_reveals)
        self._times.append(max(time_ms, self._times[-1]) if self._times else time_ms)
        for o in OUTCOMES:
            self._cumulative[o].append(self._verdicts[o])
        self._covered.append(len(self._crates))
        self._covered_reproduced.append(self._by_outcome["reproduced"])
        return record

    def _count_reasons(self, verdict: Verdict, failed_reveals: Mapping[int, str]) -> None:
        builders = [failed_reveals.get(f.reveal_leaf, "unknown") for f in verdict.failures]
        builders += [NO_REVEAL] * len(verdict.missing)
        builders += [COMMITMENT_MISMATCH] * len(verdict.evidence)
        for found, count in Counter(builders).items():
            known = found in self._reason_builders or len(self._reason_builders) < MAX_REASONS
            reason = found if known else OTHER
            self._reason_builders[reason] = self._reason_builders.get(reason, 0) + count
            self._reason_verdicts[reason] = self._reason_verdicts.get(reason, 0) + 1

    # ---------------------------------------------------------------------- queries

    def crate(self, name: str, version: str) -> CrateVerdict | None:
        """The last verdict of crate ``name`` ``version`` (names exactly as in the recipe)."""
        return self._crates.get((name, version))

    def versions(self, name: str) -> tuple[CrateVerdict, ...]:
        """Every version of crate ``name`` (ignoring case) with its last verdict, oldest version
        first."""
        lower = name.lower()
        start = bisect.bisect_left(self._order, (lower,))
        out = []
        for key in self._order[start:]:
            if key[0] != lower:
                break
            out.append(self._crates[key[1], key[3]])
        return tuple(out)

    def crates_page(self, offset: int, limit: int, needle: str = "") -> CratesPage:
        """Crates by name then version, skipping ``offset``; with ``needle`` (lowercase), only
        those whose lowercase name contains it."""
        if not needle:
            keys = self._order[offset : offset + limit]
            total = len(self._order)
        else:
            matched = [key for key in self._order if needle in key[0]]
            keys, total = matched[offset : offset + limit], len(matched)
        return CratesPage(tuple(self._crates[k[1], k[3]] for k in keys), total)

    def coverage(self, max_buckets: int = MAX_BUCKETS) -> Coverage:
        """Counts, failure reasons and a timeline of at most ``max_buckets`` buckets (the
        newest ones, should even the widest bucket not cover every verdict)."""
        reasons = sorted(
            (ReasonCount(r, n, self._reason_verdicts[r]) for r, n in self._reason_builders.items()),
            key=lambda rc: (-rc.builders, rc.reason),
        )
        timeline: list[Bucket] = []
        width = 0
        if self._times and max_buckets > 0:
            first, last = self._times[0], self._times[-1]
            width = _bucket_width(first, last, max_buckets)
            start = max(first // width, last // width - max_buckets + 1) * width
            before = bisect.bisect_left(self._times, start)  # verdicts before the first bucket
            while start <= last:
                end = start + width
                upto = bisect.bisect_left(self._times, end)
                timeline.append(self._bucket(start, end, before, upto))
                before, start = upto, end
        return Coverage(
            dict(self._by_outcome), dict(self._verdicts), tuple(reasons), width, tuple(timeline)
        )

    def _bucket(self, start: int, end: int, before: int, upto: int) -> Bucket:
        """The bucket [start, end) holding verdict rows before..upto-1."""

        def so_far(column: array[int], rows: int) -> int:
            return column[rows - 1] if rows else 0

        verdicts: dict[str, int] = {
            o: so_far(self._cumulative[o], upto) - so_far(self._cumulative[o], before)
            for o in OUTCOMES
        }
        return Bucket(
            start,
            end,
            verdicts,
            so_far(self._covered, upto),
            so_far(self._covered_reproduced, upto),
        )
