"""The coverage page's pure parts: crates by their last verdict, the timeline, failure reasons,
and the HTML (escaped, no script), over real protocol leaves and hand-made verdicts."""

from __future__ import annotations

import hashlib
import html
import itertools
import random
import re

import pytest

from logserver.dashboard import coverage as cov
from logserver.dashboard.coverage import (
    CoverageTally,
    normalise_reason,
    verdict_reason,
    version_key,
)
from logserver.dashboard.coverage_page import render_chart, render_coverage
from logserver.dashboard.index import BuildIndex
from logserver.protocol.entries import Evidence, Failure, Group, Outcome, Verdict
from tests.support.dashboard_fixtures import BuiltJob, Plan, ProtocolFixture

PLANS: tuple[Plan, ...] = ("reproduced", "not-reproduced", "failed", "misbehaviour", "open")
HOSTILE = '<img src=x onerror=alert(1)>"'


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _log() -> tuple[list[bytes], list[BuiltJob]]:
    """Three waves of every plan; then crate-0-0 (reproduced) fails and crate-0-2 (failed) is
    reproduced, each with another recipe; then a slow wave, during which the open jobs reach
    their reveal deadline (a failed verdict: nobody revealed)."""
    fixture = ProtocolFixture()
    leaves: list[bytes] = []
    jobs: list[BuiltJob] = []
    waves: list[tuple[list[tuple[str, str, Plan]], tuple[str, ...], int]] = [
        ([(f"crate-{w}-{i}", f"0.{w}.{i}", p) for i, p in enumerate(PLANS)], (), 1500)
        for w in range(3)
    ]
    rebuilt: list[tuple[str, str, Plan]] = [
        ("crate-0-0", "0.0.0", "failed"),
        ("crate-0-2", "0.0.2", "reproduced"),
    ]
    waves.append((rebuilt, ("x",), 1500))
    waves.append(([(HOSTILE, HOSTILE, "reproduced")], (), 13_000))
    for specs, features, step in waves:
        more, built = fixture.builds(len(leaves), specs, step_ms=step, features=features)
        leaves += more + [b"not a protocol entry"]
        jobs += built
    assert all("verdict" in job.leaves for job in jobs)
    return leaves, jobs


LEAVES, JOBS = _log()


def _outcome(job: BuiltJob) -> str:
    return {"misbehaviour": "reproduced", "open": "failed"}.get(job.plan, job.plan)


def _indexed() -> BuildIndex:
    index = BuildIndex()
    index.add_leaves(0, LEAVES)
    return index


# ------------------------------------------------------------------------ reasons


@pytest.mark.parametrize(
    ("text", "group"),
    [
        ("nonzero-exit", "nonzero-exit"),
        ("timeout", "timeout"),
        ("  out-of-memory \n", "out-of-memory"),
        ("environment-unavailable: no build image abc", "environment-unavailable"),
        ("OperationalError: docker is down", "OperationalError"),
        ('nonzero-exit: linker <error> & "quotes"', "nonzero-exit"),
        ("the local crate is not in the log's blob store: 404", "the local crate"),
        ("build failed", "build failed"),
        ("", "unknown"),
        ("   ", "unknown"),
        ("x" * 300, "x" * 40),
        ("a b c d: e", "a b c"),
    ],
)
def test_failure_reasons_are_grouped(text: str, group: str) -> None:
    assert normalise_reason(text) == group


def _verdict(
    outcome: Outcome,
    groups: tuple[Group, ...] = (),
    failures: tuple[Failure, ...] = (),
    missing: tuple[str, ...] = (),
    evidence: tuple[Evidence, ...] = (),
) -> Verdict:
    job = _digest("job", outcome, groups, failures, missing, evidence)
    if outcome == "reproduced":
        d = _digest("out", 1)
        return Verdict(job, "all-revealed", outcome, 2, d, ("a", "b"), (Group(d, ("a", "b")),))
    return Verdict(job, "deadline", outcome, 3, None, (), groups, failures, missing, evidence)


def test_a_verdict_names_its_main_reason() -> None:
    d1, d2 = sorted([_digest("out", 1), _digest("out", 2)])
    assert verdict_reason(_verdict("reproduced"), {}) == ""
    two = _verdict("not-reproduced", groups=(Group(d1, ("a",)), Group(d2, ("b",))))
    assert verdict_reason(two, {}) == cov.OUTPUTS_DIFFER
    few = _verdict("not-reproduced", groups=(Group(d1, ("a", "b")),), failures=(Failure("c", 9),))
    assert verdict_reason(few, {9: "timeout"}) == cov.TOO_FEW_AGREE
    failures = (Failure("a", 5), Failure("b", 6), Failure("c", 7), Failure("d", 8))
    failed = _verdict("failed", failures=failures)
    reasons = {5: "timeout", 6: "nonzero-exit", 7: "timeout", 8: "nonzero-exit"}
    assert verdict_reason(failed, reasons) == "nonzero-exit"  # a tie: alphabetical
    assert verdict_reason(failed, reasons | {8: "out-of-memory"}) == "timeout"
    assert verdict_reason(failed, {}) == "unknown"  # reveals not seen: still counted
    assert verdict_reason(_verdict("failed", missing=("a", "b")), {}) == cov.NO_REVEAL
    evidence = (Evidence("a", 1, 2),)
    assert verdict_reason(_verdict("failed", evidence=evidence), {}) == cov.COMMITMENT_MISMATCH


def test_versions_sort_as_cargo_does() -> None:
    versions = ["1.0.0", "0.10.0", "junk", "1.0.0-alpha.1", "0.9.3", "1.0.0-beta", "10.0.0"]
    expected = ["junk", "0.9.3", "0.10.0", "1.0.0-alpha.1", "1.0.0-beta", "1.0.0", "10.0.0"]
    assert sorted(versions, key=version_key) == expected


# ------------------------------------------------------------------------ the index


def test_crates_by_their_last_verdict_over_real_leaves() -> None:
    index = _indexed()
    with_verdict = [j for j in JOBS if "verdict" in j.leaves]
    last: dict[tuple[str, str], BuiltJob] = {}
    for job in sorted(with_verdict, key=lambda j: j.leaves["verdict"]):
        last[job.name, job.version] = job
    coverage = index.coverage()
    by_outcome = {o: 0 for o in ("reproduced", "not-reproduced", "failed")}
    for job in last.values():
        by_outcome[_outcome(job)] += 1
    assert dict(coverage.crates) == by_outcome
    assert coverage.crate_count == len(last) < len(with_verdict)
    verdicts = {o: sum(_outcome(j) == o for j in with_verdict) for o in by_outcome}
    assert dict(coverage.verdicts) == verdicts
    # The last verdict wins: crate-0-0 was reproduced, then failed; crate-0-2 the other way.
    first = index.crate("crate-0-0", "0.0.0")
    assert first is not None and first.outcome == "failed" and first.verdicts == 2
    assert first.reason == "nonzero-exit" and first.job == last["crate-0-0", "0.0.0"].job
    second = index.crate("crate-0-2", "0.0.2")
    assert second is not None and (second.outcome, second.reason) == ("reproduced", "")
    assert index.crate("crate-0-0", "9.9.9") is None and index.crate("CRATE-0-0", "0.0.0") is None
    not_repro = index.crate("crate-1-1", "0.1.1")
    assert not_repro is not None and not_repro.reason == cov.OUTPUTS_DIFFER
    open_job = index.crate("crate-1-4", "0.1.4")  # nobody revealed: failed at the deadline
    assert open_job is not None and (open_job.outcome, open_job.reason) == ("failed", "no-reveal")
    # Failure reasons, from the reveal leaves the verdicts point to.
    failed = [j for j in with_verdict if j.plan == "failed"]
    opened = [j for j in with_verdict if j.plan == "open"]
    cheats = [j for j in with_verdict if j.plan == "misbehaviour"]
    reasons = {r.reason: (r.builders, r.verdicts) for r in coverage.reasons}
    assert reasons == {
        "nonzero-exit": (3 * len(failed), len(failed)),
        "timeout": (len(failed), len(failed)),
        cov.NO_REVEAL: (4 * len(opened), len(opened)),
        cov.COMMITMENT_MISMATCH: (len(cheats), len(cheats)),
    }
    assert [r.builders for r in coverage.reasons] == sorted(
        (r.builders for r in coverage.reasons), reverse=True
    )


def test_the_timeline_adds_up() -> None:
    coverage = _indexed().coverage()
    timeline = coverage.timeline
    assert 1 < len(timeline) <= cov.MAX_BUCKETS and coverage.bucket_ms in cov.BUCKET_WIDTHS_MS
    for a, b in itertools.pairwise(timeline):
        assert a.end_ms == b.start_ms == a.start_ms + coverage.bucket_ms
        assert a.crates <= b.crates
    assert all(b.start_ms % coverage.bucket_ms == 0 for b in timeline)
    for outcome, total in coverage.verdicts.items():
        assert sum(b.verdicts[outcome] for b in timeline) == total
    end = timeline[-1]
    assert (end.crates, end.reproduced) == (coverage.crate_count, coverage.crates["reproduced"])


def test_folding_in_any_chunks_gives_the_same_coverage() -> None:
    whole = _indexed()
    rng = random.Random(12)
    for _ in range(5):
        index, start = BuildIndex(), 0
        while start < len(LEAVES):
            size = rng.randint(1, 40)
            index.add_leaves(start, LEAVES[start : start + size])
            start += size
        assert index.coverage() == whole.coverage()
        assert index.crates_page(0, 1000) == whole.crates_page(0, 1000)


def test_crates_are_listed_by_name_searched_and_paginated() -> None:
    index = _indexed()
    everything = index.crates_page(0, 1000)
    names = [(c.name.lower(), version_key(c.version)) for c in everything.crates]
    assert names == sorted(names) and everything.total == len(everything.crates)
    assert len({(c.name, c.version) for c in everything.crates}) == everything.total
    pages = [index.crates_page(offset, 4).crates for offset in range(0, everything.total, 4)]
    assert tuple(c for page in pages for c in page) == everything.crates
    found = index.crates_page(0, 50, "  CRATE-1-")
    assert found.total == len(PLANS) and all(c.name.startswith("crate-1-") for c in found.crates)
    assert index.crates_page(0, 2, "crate-1-").total == len(PLANS)
    assert index.crates_page(0, 50, "<img").crates[0].name == HOSTILE
    assert index.crates_page(0, 50, "nothing like it").total == 0
    assert [c.version for c in index.crate_versions("CRATE-0-0")] == ["0.0.0"]
    assert index.crate_versions("crate-0") == ()
    with pytest.raises(Exception, match="negative"):
        index.crates_page(-1, 5)


# ------------------------------------------------------------------------ the timeline


def _reproduced(name: str) -> Verdict:
    d = _digest("out", name)
    return Verdict(
        _digest("job", name), "all-revealed", "reproduced", 1, d, ("a",), (Group(d, ("a",)),)
    )


def _failed(name: str) -> Verdict:
    return Verdict(_digest("job", name, "f"), "deadline", "failed", 1, None, (), (), missing=("a",))


MINUTE = 60_000


def test_buckets_are_the_finest_width_that_fits() -> None:
    tally = CoverageTally()
    start = 1_700_000_000_000 // (5 * MINUTE) * (5 * MINUTE)  # a bucket boundary
    steps = [(0, "a", _reproduced), (1, "b", _failed), (3, "b", _reproduced), (200, "c", _failed)]
    for i, (minute, name, make) in enumerate(steps):
        tally.add_verdict(name, "1.0.0", i, start + minute * MINUTE, make(name), {})
    coverage = tally.coverage()
    assert coverage.bucket_ms == 5 * MINUTE  # 200 minutes by the minute would be 201 buckets
    timeline = coverage.timeline
    assert len(timeline) == 41 and timeline[0].start_ms == start
    assert dict(timeline[0].verdicts) == {"reproduced": 2, "not-reproduced": 0, "failed": 1}
    assert (timeline[0].crates, timeline[0].reproduced) == (2, 2)  # b: failed, then reproduced
    assert all(sum(b.verdicts.values()) == 0 for b in timeline[1:40])
    assert (timeline[20].crates, timeline[20].share) == (2, 1.0)
    assert timeline[40].verdicts["failed"] == 1 and timeline[40].share == pytest.approx(2 / 3)
    assert dict(coverage.crates) == {"reproduced": 2, "not-reproduced": 0, "failed": 1}
    # A clock that went back is read as standing still, so the timeline stays ordered.
    tally.add_verdict("d", "1.0.0", 4, start, _reproduced("d"), {})
    assert tally.coverage().timeline[-1].verdicts["reproduced"] == 1


def test_an_old_log_shows_its_newest_buckets_only() -> None:
    tally = CoverageTally()
    month = 30 * 86_400_000
    for i in range(100):  # one verdict a month for 100 months: wider than every width allows
        tally.add_verdict(f"c{i}", "1.0.0", i, i * month, _reproduced(f"c{i}"), {})
    coverage = tally.coverage(max_buckets=10)
    assert coverage.bucket_ms == month and len(coverage.timeline) == 10
    assert sum(sum(b.verdicts.values()) for b in coverage.timeline) == 10
    assert coverage.timeline[0].crates == 91 and coverage.timeline[-1].crates == 100
    assert CoverageTally().coverage() == cov.Coverage(
        dict.fromkeys(("reproduced", "not-reproduced", "failed"), 0),
        dict.fromkeys(("reproduced", "not-reproduced", "failed"), 0),
        (),
        0,
        (),
    )


def test_distinct_failure_reasons_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cov, "MAX_REASONS", 3)
    tally = CoverageTally()
    for i in range(6):
        verdict = Verdict(
            _digest("job", i), "deadline", "failed", 1, None, (), (), failures=(Failure("a", i),)
        )
        tally.add_verdict(f"c{i}", "1.0.0", 10 + i, i, verdict, {i: f"reason-{i}"})
    reasons = {r.reason: r.builders for r in tally.coverage().reasons}
    assert reasons == {"reason-0": 1, "reason-1": 1, "reason-2": 1, cov.OTHER: 3}


# ------------------------------------------------------------------------ the page


def test_the_page_escapes_everything_and_runs_no_script() -> None:
    index = _indexed()
    found = index.crates_page(0, 50)
    page = render_coverage(
        "origin <o>", index.coverage(), found.crates, found.total, 1, HOSTILE, ""
    )
    assert "<script" not in page and "<img" not in page and "onerror=alert(1)>" not in page
    assert html.escape(HOSTILE) in page and "origin &lt;o&gt;" in page
    hostile = index.crate(HOSTILE, HOSTILE)
    assert hostile is not None and f'<a href="/build/{hostile.job}">' in page
    assert page.count('<rect class="bar') >= len(index.coverage().timeline) // 2
    assert 'id="share-line"' in page and 'id="coverage-chart"' in page
    rows = re.findall(r"<tr>(.*?)</tr>", re.search(r'id="reasons">(.*?)</table>', page).group(1))  # type: ignore[union-attr]
    assert "nonzero-exit" in rows[1] or "nonzero-exit" in rows[2]
    assert f"Showing 1–{found.total} of {found.total}" in page
    assert 'href="/coverage?page=2' not in page


def test_pages_link_on_with_the_query() -> None:
    index = _indexed()
    found = index.crates_page(50, 50, "crate")
    page = render_coverage("o", index.coverage(), found.crates, 120, 2, "a b&c", "")
    assert 'rel="prev" href="/coverage?page=1&q=a%20b%26c"' in page
    assert 'rel="next" href="/coverage?page=3&q=a%20b%26c"' in page
    assert "matching “a b&amp;c”" in page


def test_an_empty_log_has_an_empty_page() -> None:
    empty = CoverageTally().coverage()
    page = render_coverage("o", empty, (), 0, 1, "", "")
    assert "No verdict yet." in page and "No builder has failed." in page
    assert "none of 0" in page and "<svg" not in page and 'id="cov-crates"><b>0</b>' in page
    assert render_chart((), 0) == '<p id="no-timeline">No verdict yet.</p>'
