"""The dashboard's pure parts: the build index, and the page helpers that escape and format."""

from __future__ import annotations

import html
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logserver.core import note
from logserver.core.checkpoint import Checkpoint
from logserver.core.errors import UsageError
from logserver.dashboard.build import collect, render_build
from logserver.dashboard.index import BuildIndex, IndexFollower
from logserver.dashboard.pages import (
    esc,
    fmt_duration,
    fmt_time,
    index_notice,
    recipe_rows,
    render_builds,
    witness_status,
)
from logserver.protocol.signed import Leaf
from logserver.sequencer import Sequencer
from logserver.storage import LogStore
from tests.support.dashboard_fixtures import BuiltJob, ProtocolFixture

PLANS = ("reproduced", "not-reproduced", "failed", "misbehaviour", "open")


def _log(waves: int = 3) -> tuple[list[bytes], list[BuiltJob]]:
    fixture = ProtocolFixture()
    leaves: list[bytes] = []
    jobs: list[BuiltJob] = []
    for wave in range(waves):
        specs = [(f"Crate-{wave}-{i}", f"{wave}.{i}.0", p) for i, p in enumerate(PLANS)]
        more, built = fixture.builds(len(leaves), specs)  # type: ignore[arg-type]
        leaves += more + [b"not a protocol entry"]
        jobs += built
    return leaves, jobs


LEAVES, JOBS = _log()


def _indexed(chunks: list[int] | None = None) -> BuildIndex:
    index = BuildIndex()
    start = 0
    for size in chunks or [len(LEAVES)]:
        index.add_leaves(start, LEAVES[start : start + size])
        start = min(start + size, len(LEAVES))
    index.add_leaves(start, LEAVES[start:])
    return index


def test_index_folds_jobs_verdicts_and_skips_other_leaves() -> None:
    index = _indexed()
    assert index.size == len(LEAVES)
    assert index.skipped == 3  # the junk leaf of each wave
    counts = index.counts()
    with_verdict = [j for j in JOBS if "verdict" in j.leaves]
    assert counts["jobs"] == len(JOBS) and counts["verdicts"] == len(with_verdict)
    assert counts["not-reproduced"] == 3 and counts["reproduced"] == 6
    for job in JOBS:
        summary = index.job(job.job)
        assert summary is not None
        assert (summary.name, summary.version) == (job.name, job.version)
        assert summary.request_index == job.leaves["request"]
        assert summary.verdict_index == job.leaves.get("verdict")
        assert sorted(index.entry_indexes(job.job)) == sorted(job.leaves.values())
    assert index.job("0" * 64) is None and index.entry_indexes("0" * 64) == ()
    latest = index.latest_verdicts(4)
    assert [s.verdict_index for s in latest] == sorted(
        (j.leaves["verdict"] for j in with_verdict), reverse=True
    )[:4]


def test_jobs_page_paginates_newest_first_and_searches_names() -> None:
    index = _indexed()
    newest_first = [j.job for j in sorted(JOBS, key=lambda j: -j.leaves["request"])]
    pages = [index.jobs_page(offset, 4) for offset in range(0, 20, 4)]
    assert all(p.total == len(JOBS) for p in pages)
    assert [s.job for p in pages for s in p.jobs] == newest_first
    assert index.jobs_page(100, 4).jobs == ()
    found = index.jobs_page(0, 50, "  crate-1-")
    assert [s.name for s in found.jobs] == [f"Crate-1-{i}" for i in reversed(range(5))]
    assert index.jobs_page(0, 2, "CRATE").total == len(JOBS)
    assert index.jobs_page(0, 50, "nothing").total == 0
    with pytest.raises(UsageError):
        index.jobs_page(-1, 5)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 40), max_size=12))
def test_any_chunking_gives_the_same_index(chunks: list[int]) -> None:
    whole, chunked = _indexed(), _indexed(chunks)
    assert chunked.size == whole.size and chunked.counts() == whole.counts()
    assert chunked.jobs_page(0, 100) == whole.jobs_page(0, 100)
    assert chunked.latest_verdicts(100) == whole.latest_verdicts(100)


def test_leaves_are_folded_once_and_in_order() -> None:
    index = BuildIndex()
    index.add_leaves(0, LEAVES[:10])
    index.add_leaves(5, LEAVES[5:20])  # overlapping: 5..9 are ignored
    at_once = BuildIndex()
    at_once.add_leaves(0, LEAVES[:20])
    assert index.size == 20 and index.counts() == at_once.counts()
    assert index.jobs_page(0, 50) == at_once.jobs_page(0, 50)
    with pytest.raises(UsageError):
        index.add_leaves(30, LEAVES[30:31])


def test_a_duplicate_request_does_not_replace_the_first() -> None:
    index = _indexed()
    first_request = LEAVES[JOBS[0].leaves["request"]]
    index.add_leaves(len(LEAVES), [first_request])
    assert index.skipped == 4
    assert index.job(JOBS[0].job).request_index == JOBS[0].leaves["request"]  # type: ignore[union-attr]


def test_follower_catches_up_from_the_store_and_follows_the_sequencer(tmp_path: Path) -> None:
    signer = note.Signer("example.test/log", b"\x05" * 32)
    store = LogStore(tmp_path, signer.name)
    sequencer = Sequencer(store, lambda cp: note.sign_note(cp.to_bytes(), signer))
    sequencer.start()
    try:
        half = len(LEAVES) // 2
        for data in LEAVES[:half]:
            sequencer.submit(data).result(10)
        follower = IndexFollower(store)
        sequencer.add_listener(follower.on_integrated)
        follower.start()
        assert follower.wait_until(half, 10)
        futures = [sequencer.submit(data) for data in LEAVES[half:]]
        for fut in futures:
            fut.result(10)
        assert follower.wait_until(len(LEAVES), 10)
        assert follower.index.counts() == _indexed().counts()
        assert not follower.wait_until(len(LEAVES) + 1, 0.05)
        follower.stop()
        assert follower.failure is None
    finally:
        sequencer.stop()
        store.close()


def test_index_is_safe_to_read_while_it_grows() -> None:
    index = BuildIndex()
    errors: list[str] = []

    def read() -> None:
        while index.size < len(LEAVES):
            page = index.jobs_page(0, 10, "crate")
            if len(page.jobs) > page.total:
                errors.append("page larger than its total")

    reader = threading.Thread(target=read)
    reader.start()
    for start in range(len(LEAVES)):
        index.add_leaves(start, LEAVES[start : start + 1])
    reader.join(10)
    assert not errors and index.counts() == _indexed().counts()


# ------------------------------------------------------------------------------ page helpers


@given(st.text())
def test_escaped_text_never_opens_a_tag_or_closes_an_attribute(text: str) -> None:
    out = esc(text)
    assert "<" not in out and ">" not in out and '"' not in out and "'" not in out
    assert html.unescape(out) == text


def test_time_and_duration_formats() -> None:
    assert fmt_time(1_700_000_000_123) == "2023-11-14 22:13:20.123Z"
    assert fmt_time(None) == "—"
    assert fmt_duration(1_500) == "1.500 s"
    assert fmt_duration(125_000) == "2 min 5 s"
    assert fmt_duration(3_725_000) == "1 h 2 min"


def test_witness_status() -> None:
    assert witness_status(0, None, 10, 1000.0) == "silent"
    assert witness_status(10, 100.0, 10, 1000.0) == "ok"  # cosigned the whole tree
    assert witness_status(5, 990.0, 10, 1000.0) == "ok"  # recently
    assert witness_status(5, 900.0, 10, 1000.0) == "behind"


def test_pages_say_when_the_index_is_behind_or_stopped() -> None:
    assert index_notice(10, 10, None) == ""
    assert "Indexing the log: 4 of 10 entries" in index_notice(10, 4, None)
    stopped = index_notice(10, 4, "closed <db>")
    assert "stopped: closed &lt;db&gt;" in stopped


def test_recipe_rows_tolerate_any_shape() -> None:
    rows = dict((k, v) for k, v in recipe_rows({"name": ["<x>"], "toolchain": "oops"}))
    assert rows["crate"] == "&lt;x&gt;" and rows["rustc"] == "—"
    assert dict(recipe_rows({"default_features": False}))["default features"] == "false"


def test_build_page_renders_each_plan_escaped() -> None:
    index = _indexed()
    cp = Checkpoint("example.test/log", len(LEAVES), b"\x00" * 32)
    for job in JOBS[:5]:
        leaves = [(i, Leaf.parse(LEAVES[i])) for i in index.entry_indexes(job.job)]
        record = collect(leaves)
        assert record.builders == ["builder-1", "builder-2", "builder-3", "builder-4"]
        summary = index.job(job.job)
        assert summary is not None
        page = render_build("o<rigin", summary, leaves, cp.size)
        assert "o&lt;rigin" in page and "<rigin" not in page
        assert ("/proof/tlog?index=" in page) == ("verdict" in job.leaves)
        unpublished = render_build("o", summary, leaves, 0)
        assert "/proof/tlog" not in unpublished


def test_builds_page_links_keep_the_query() -> None:
    index = _indexed()
    page = index.jobs_page(0, 2, "crate")
    out = render_builds("o", page.jobs, page.total, 1, "cr ate&x", "")
    assert "q=cr%20ate%26x" in out and 'value="cr ate&amp;x"' in out
