"""The dashboard's pages over HTTP, against a real log server process holding real protocol leaves.

The log runs as the real ``log serve --network`` of a network whose entries are the build
protocol (the only kind of log whose dashboard shows builds), holding signed build-protocol
leaves from ``tests.support.dashboard_fixtures`` (builds with hostile crate names among them)
that it checked against the protocol's rules at start-up; three of its four witnesses cosigned
its checkpoint.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from logserver.core import canonical_json, note
from logserver.core.checkpoint import Checkpoint
from logserver.core.policy import Policy
from logserver.core.proof import TlogProof, verify_proof
from logserver.protocol import entries as e
from logserver.protocol import signed
from logserver.protocol.entries import Verdict
from logserver.protocol.signed import Leaf
from tests.support.dashboard_fixtures import BuiltJob, Plan, diff_report_text, recipe
from tests.support.dashboard_runner import wait_indexed
from tests.support.protocol_log import NETWORK_ID, ProtocolLog

HOSTILE_NAME = '<script>alert("pwn")</script>'
HOSTILE_VERSION = '1.0.0"><img src=x onerror=alert(1)>'
PLANS: tuple[Plan, ...] = ("reproduced", "not-reproduced", "failed", "misbehaviour", "open")


@dataclass
class FilledLog:
    log: ProtocolLog
    client: httpx.Client
    jobs: list[BuiltJob]
    size: int


# Built again half-way, with another recipe (features): the reproduced one fails, the failed
# one is reproduced.
REBUILT: list[tuple[str, str, Plan]] = [
    ("crate-0-0", "0.0.0", "failed"),
    ("crate-0-2", "0.0.2", "reproduced"),
]


def _fill(log: ProtocolLog, waves: int) -> list[BuiltJob]:
    """Waves of builds of every plan, two crates built again, and one hostile build, in the
    stopped log's LMDB."""
    jobs: list[BuiltJob] = []
    for wave in range(waves):
        specs = [(f"crate-{wave}-{i}", f"0.{wave}.{i}", plan) for i, plan in enumerate(PLANS)]
        if wave == waves - 1:
            specs.append((HOSTILE_NAME, HOSTILE_VERSION, "reproduced"))
        leaves, built = log.fixture.builds(log.size, specs)
        log.prefill(leaves)
        jobs += built
        if wave == waves // 2:
            leaves, built = log.fixture.builds(log.size, REBUILT, features=("rebuilt",))
            log.prefill(leaves)
            jobs += built
    return jobs


def _submit_request(client: httpx.Client, log: ProtocolLog, name: str, version: str) -> str:
    """A builder asks for a build the way builders do: a signed entry the log stamps."""
    request = e.Request(recipe(name, version))
    entry = signed.sign_entry(request, log.fixture.builders["builder-1"], NETWORK_ID)
    r = client.post("/add-entry", content=canonical_json.encode(entry.to_json()))
    assert r.status_code == 200, r.text
    return request.job


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FilledLog]:
    log = ProtocolLog(tmp_path_factory.mktemp("dashboard"))
    jobs = _fill(log, waves=12)
    log.start()
    try:
        assert log.cosign() == log.size
        with httpx.Client(base_url=log.url, timeout=30) as client:
            wait_indexed(log.url, log.size)
            yield FilledLog(log, client, jobs, log.size)
    finally:
        log.stop()


def _rows(page: str, table_id: str) -> list[str]:
    found = re.search(rf'<table id="{table_id}">.*?<tbody>(.*?)</tbody>', page, re.S)
    assert found is not None, f"no table {table_id}"
    return re.findall(r"<tr>(.*?)</tr>", found.group(1), re.S)


def _get(client: httpx.Client, path: str, status: int = 200) -> str:
    r = client.get(path)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert "<script" not in r.text  # no page carries script, whatever the log holds
    return r.text


def test_overview_shows_size_checkpoint_and_counts(filled: FilledLog) -> None:
    page = _get(filled.client, "/")
    assert f'<meta name="indexed-size" content="{filled.size}">' in page
    assert f'<span class="stat" id="stat-tree-size"><b>{filled.size}</b>' in page
    cp = Checkpoint.parse(note.split_note(filled.client.get("/checkpoint").content)[0])
    assert f'<b id="published-size">{cp.size}</b>' in page
    signers = _rows(page, "signers")
    assert len(signers) == 4 and filled.log.origin in signers[0] and "log" in signers[0]
    assert all("witness" in row for row in signers[1:])
    assert "once 3 witnesses cosigned it" in page
    reproduced = sum(j.plan in ("reproduced", "misbehaviour") for j in filled.jobs)
    assert f'id="stat-reproduced"><b>{reproduced}</b>' in page
    assert f'id="stat-builds"><b>{len(filled.jobs)}</b>' in page
    latest = _rows(page, "latest")
    assert len(latest) == 10
    newest_verdict = max((j for j in filled.jobs if "verdict" in j.leaves), key=_verdict_index)
    assert newest_verdict.job[:16] in latest[0]


def _verdict_index(job: BuiltJob) -> int:
    return job.leaves["verdict"]


def test_builds_are_paginated_newest_first(filled: FilledLog) -> None:
    newest_first = sorted(filled.jobs, key=lambda j: j.leaves["request"], reverse=True)
    first = _get(filled.client, "/builds")
    rows = _rows(first, "builds")
    assert len(rows) == 50
    assert f"Showing 1–50 of {len(filled.jobs)}" in first
    for row, job in zip(rows, newest_first, strict=False):
        assert f'href="/build/{job.job}"' in row
    assert 'rel="next" href="/builds?page=2"' in first and 'rel="prev"' not in first
    second = _rows(_get(filled.client, "/builds?page=2"), "builds")
    assert f'href="/build/{newest_first[50].job}"' in second[0]
    last = _get(filled.client, "/builds?page=2")
    assert 'rel="prev" href="/builds?page=1"' in last and 'rel="next"' not in last
    statuses = " ".join(rows)
    for status in ("reproduced", "not-reproduced", "failed", "revealing"):
        assert f'class="badge {status}"' in statuses
    assert "none of" in _get(filled.client, "/builds?page=9")
    for bad in ("0", "-1", "x", "01", "99999999"):
        _get(filled.client, f"/builds?page={bad}", 400)


def test_search_by_crate_name(filled: FilledLog) -> None:
    page = _get(filled.client, "/builds?q=CRATE-3-")  # case-insensitive substring
    rows = _rows(page, "builds")
    expected = [j for j in filled.jobs if j.name.startswith("crate-3-")]
    assert len(rows) == len(expected) == len(PLANS)
    assert all("crate-3-" in row for row in rows)
    exact = _rows(_get(filled.client, "/builds?q=crate-11-1"), "builds")
    assert len(exact) == 1 and "not-reproduced" in exact[0]
    assert "none of 0" in _get(filled.client, "/builds?q=no-such-crate")
    page = _get(filled.client, "/builds", 200)
    assert 'name="q"' in page
    # The query is echoed escaped, in the heading and the search box.
    echoed = _get(filled.client, "/builds?q=" + httpx.QueryParams({"x": '"><b>x'})["x"])
    assert "&quot;&gt;&lt;b&gt;x" in echoed and '"><b>x' not in echoed


def test_hostile_crate_names_are_escaped(filled: FilledLog) -> None:
    hostile = next(j for j in filled.jobs if j.name == HOSTILE_NAME)
    for path in ["/", "/builds", f"/build/{hostile.job}", "/builds?q=script"]:
        page = _get(filled.client, path)
        assert html.escape(HOSTILE_NAME) in page, path
        assert "<img" not in page and "onerror=alert(1)>" not in page
    found = _rows(_get(filled.client, "/builds?q=%3Cscript"), "builds")
    assert len(found) == 1


def test_build_pages(filled: FilledLog) -> None:
    published = Checkpoint.parse(note.split_note(filled.client.get("/checkpoint").content)[0])
    for job in filled.jobs[: len(PLANS)] + filled.jobs[-len(PLANS) - 1 :]:
        page = _get(filled.client, f"/build/{job.job}")
        assert html.escape(f"{job.name} {job.version}") in page
        assert job.job in page
        recipe = dict(re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td></tr>", page))
        assert recipe["rustc"] == "1.80.1"
        assert recipe["target / profile"] == "x86_64-unknown-linux-gnu / release"
        assert re.fullmatch(r"<code>[0-9a-f]{64}</code>", recipe[".crate SHA-256"])
        assert re.fullmatch(r"<code>[0-9a-f]{64}</code>", recipe["build image (rootfs SHA-256)"])
        builders = _rows(page, "builders")
        assert len(builders) == 4
        assert f'<a href="/entry/{job.leaves["commit builder-2"]}">' in builders[1]
        if "verdict" not in job.leaves:
            assert "No verdict yet" in page and "no reveal" in builders[0]
            assert 'class="badge revealing"' in page
            continue
        if job.plan != "open":
            assert f'<a href="/entry/{job.leaves["reveal builder-3"]}">' in builders[2]
        verdict_index = job.leaves["verdict"]
        outcome = {"misbehaviour": "reproduced", "open": "failed"}.get(job.plan, job.plan)
        assert f'class="badge {outcome}"' in page
        assert "request → close" in page and "all-committed" in page
        if job.plan == "open":  # nobody revealed: a failed verdict at the reveal deadline
            assert "did not reveal" in page and "deadline" in page
        if job.plan == "misbehaviour":
            assert "NO: misbehaviour" in builders[3] and "evidence against builder-4" in page
            reveal = job.leaves["reveal builder-4"]
            assert f'reveal <a href="/entry/{reveal}">#{reveal}</a>' in page
        if job.plan == "failed":
            assert "linker &lt;error&gt; &amp; &quot;quotes&quot;" in page
        if job.plan == "not-reproduced":
            assert len(_rows(page, "diffs")) == 1
            blob = re.search(r'<a href="(/blob/[0-9a-f]{64})">diff report</a>', page)
            assert blob is not None
            assert filled.client.get(blob.group(1)).status_code == 404  # not uploaded yet
            report = diff_report_text(job.job)
            headers = filled.log.blob_headers(blob.group(1).removeprefix("/blob/"))
            r = filled.client.put(blob.group(1), content=report, headers=headers)
            assert r.status_code in (200, 201), r.text
            assert filled.client.get(blob.group(1)).content == report
        else:
            assert 'id="diffs"' not in page
        assert verdict_index < published.size
        link = f'href="/proof/tlog?index={verdict_index}"'
        assert link in page
        r = filled.client.get(f"/proof/tlog?index={verdict_index}")
        assert r.status_code == 200
        proof = TlogProof.parse(r.content)
        assert proof.index == verdict_index and proof.extra is not None
        verdict = Leaf.parse(proof.extra).entry.entry
        assert isinstance(verdict, Verdict) and verdict.job == job.job
        lax = Policy.parse(f"log {filled.log.vkey}\nquorum none\n".encode())
        assert verify_proof(r.content, proof.extra, lax).checkpoint.size == published.size


def test_unknown_and_malformed_jobs_are_404(filled: FilledLog) -> None:
    for job in ["0" * 64, "A" * 64, "abc", filled.jobs[0].job + "0"]:
        page = _get(filled.client, f"/build/{job}", 404)
        assert "Unknown build" in page


def test_checkpoint_history_is_paginated(filled: FilledLog) -> None:
    page = _get(filled.client, "/checkpoints")
    rows = _rows(page, "cps")
    assert len(rows) == 50
    sizes = [int(re.match(r"<td>(\d+)</td>", row).group(1)) for row in rows]  # type: ignore[union-attr]
    assert sizes[0] == filled.size and sizes == sorted(sizes, reverse=True)
    older = re.search(r'rel="next" href="/checkpoints\?before=(\d+)"', page)
    assert older is not None and int(older.group(1)) == sizes[-1]
    next_rows = _rows(_get(filled.client, f"/checkpoints?before={sizes[-1]}"), "cps")
    assert int(re.match(r"<td>(\d+)</td>", next_rows[0]).group(1)) < sizes[-1]  # type: ignore[union-attr]
    first = _rows(_get(filled.client, "/checkpoints?before=2"), "cps")
    assert len(first) == 1 and first[0].startswith("<td>1</td>")
    for bad in ("x", "0", "-3", "007"):
        _get(filled.client, f"/checkpoints?before={bad}", 400)


def test_index_is_rebuilt_from_lmdb_after_restart(tmp_path: Path) -> None:
    log = ProtocolLog(tmp_path)
    leaves, jobs = log.fixture.builds(0, [("before-restart", "1.0.0", "reproduced")])
    size = log.prefill(leaves)
    log.start()
    try:
        wait_indexed(log.url, size)
        log.stop()
        log.start()  # same data directory: the index is folded again from LMDB
        with httpx.Client(base_url=log.url, timeout=30) as client:
            wait_indexed(log.url, size)
            assert "before-restart 1.0.0" in _get(client, f"/build/{jobs[0].job}")
            later = _submit_request(client, log, "after-restart", "2.0.0")
            wait_indexed(log.url, size + 1)  # the sequencer listener keeps it level
            rows = _rows(_get(client, "/builds"), "builds")
            assert [later in rows[0], jobs[0].job in rows[1]] == [True, True]
            assert 'class="badge building"' in rows[0]
    finally:
        log.stop()


def test_overview_with_witnesses(tmp_path: Path) -> None:
    log = ProtocolLog(tmp_path)
    leaves, jobs = log.fixture.builds(0, [("witnessed", "1.0.0", "reproduced")])
    size = log.prefill(leaves)
    log.start()
    try:
        with httpx.Client(base_url=log.url, timeout=30) as client:
            wait_indexed(log.url, size)
            page = _get(client, f"/build/{jobs[0].job}")
            assert "/proof/tlog" not in page and "will be available" in page
            assert "No checkpoint is published yet" in _get(client, "/")
            assert log.cosign() == size
            page = _get(client, "/")
            signers = _rows(page, "signers")
            assert len(signers) == 4 and "log" in signers[0]
            for w, row in zip(log.cosigners[:3], signers[1:], strict=True):
                assert w.name in row and "witness" in row and "Z</td>" in row
            health = _rows(page, "wits")
            assert len(health) == len(log.config.witnesses) == 4
            assert all('class="badge ok"' in row for row in health[:3])
            assert 'class="badge silent"' in health[3]
            assert "once 3 witnesses cosigned it" in page
            page = _get(client, f"/build/{jobs[0].job}")
            assert f'href="/proof/tlog?index={jobs[0].leaves["verdict"]}"' in page
            cps = _rows(_get(client, "/checkpoints"), "cps")
            assert cps[0].startswith(f"<td>{size}</td>") and "yes" in cps[0]
            assert log.cosigners[0].name in cps[0]
    finally:
        log.stop()


# ------------------------------------------------------------------------------ coverage


def _last_verdicts(jobs: list[BuiltJob]) -> dict[tuple[str, str], BuiltJob]:
    """Each crate's job with the last verdict in log order."""
    last: dict[tuple[str, str], BuiltJob] = {}
    for job in sorted((j for j in jobs if "verdict" in j.leaves), key=_verdict_index):
        last[job.name, job.version] = job
    return last


def _outcome(job: BuiltJob) -> str:
    return {"misbehaviour": "reproduced", "open": "failed"}.get(job.plan, job.plan)


def test_coverage_counts_crates_by_their_last_verdict(filled: FilledLog) -> None:
    page = _get(filled.client, "/coverage")
    last = _last_verdicts(filled.jobs)
    with_verdict = [j for j in filled.jobs if "verdict" in j.leaves]
    assert f'id="cov-crates"><b>{len(last)}</b>' in page
    assert f'id="cov-verdicts"><b>{len(with_verdict)}</b>' in page
    outcomes = {}
    for row in _rows(page, "outcomes"):
        cells = re.findall(r"<td>(.*?)</td>", row)
        outcome = re.search(r'class="badge ([a-z-]+)"', cells[0]).group(1)  # type: ignore[union-attr]
        outcomes[outcome] = (int(cells[1]), int(cells[3]))
    for outcome in ("reproduced", "not-reproduced", "failed"):
        crates = sum(_outcome(j) == outcome for j in last.values())
        verdicts = sum(_outcome(j) == outcome for j in with_verdict)
        assert outcomes[outcome] == (crates, verdicts), outcome
    reproduced = sum(_outcome(j) == "reproduced" for j in last.values())
    assert f"{reproduced} ({100 * reproduced / len(last):.1f}%)" in page
    # The builders' failure reasons, read from the reveals the verdicts point to.
    reasons = {
        cells[0]: (int(cells[1]), int(cells[2]))
        for cells in (re.findall(r"<td>(.*?)</td>", row) for row in _rows(page, "reasons"))
    }
    failed = sum(j.plan == "failed" for j in with_verdict)
    opened = sum(j.plan == "open" for j in with_verdict)
    cheats = sum(j.plan == "misbehaviour" for j in with_verdict)
    assert reasons == {
        "nonzero-exit": (3 * failed, failed),
        "timeout": (failed, failed),
        "no-reveal": (4 * opened, opened),
        "commitment-mismatch": (cheats, cheats),
    }
    # The timeline's bars add up to every verdict; its last point covers every crate.
    timeline = [re.findall(r"<td>(.*?)</td>", row) for row in _rows(page, "timeline")]
    assert sum(int(cells[1]) + int(cells[2]) + int(cells[3]) for cells in timeline) == len(
        with_verdict
    )
    assert int(timeline[0][4]) == len(last)  # newest bucket first
    assert '<svg id="coverage-chart"' in page and 'id="share-line"' in page
    assert 'href="/coverage" id="nav-coverage"' in page
    assert 'href="/coverage" id="coverage-link"' in _get(filled.client, "/")


def test_coverage_lists_each_crate_once_with_its_last_verdict(filled: FilledLog) -> None:
    last = _last_verdicts(filled.jobs)
    first = _get(filled.client, "/coverage")
    rows = _rows(first, "crates")
    assert len(rows) == 50 and f"Showing 1–50 of {len(last)}" in first
    assert 'rel="next" href="/coverage?page=2"' in first
    second = _get(filled.client, "/coverage?page=2")
    rows += _rows(second, "crates")
    assert len(rows) == len(last) and 'rel="prev" href="/coverage?page=1"' in second
    listed = {}
    for row in rows:
        job = re.search(r'href="/build/([0-9a-f]{64})"', row).group(1)  # type: ignore[union-attr]
        listed[job] = row
    assert set(listed) == {j.job for j in last.values()}
    for job in last.values():
        assert f'class="badge {_outcome(job)}"' in listed[job.job]
    # A crate built twice: the last verdict wins, with its reason.
    rebuilt = last["crate-0-0", "0.0.0"]
    assert rebuilt.plan == "failed" and "rebuilt" in _get(filled.client, f"/build/{rebuilt.job}")
    cells = re.findall(r"<td>(.*?)</td>", listed[rebuilt.job])
    assert cells[1:4] == ["0.0.0", '<span class="badge failed">failed</span>', "nonzero-exit"]
    assert cells[5] == "2"
    again = re.findall(r"<td>(.*?)</td>", listed[last["crate-0-2", "0.0.2"].job])
    assert again[2:4] == ['<span class="badge reproduced">reproduced</span>', "—"]
    not_repro = last["crate-1-1", "0.1.1"]
    assert "outputs-differ" in listed[not_repro.job]
    for bad in ("0", "x", "01", "99999999"):
        _get(filled.client, f"/coverage?page={bad}", 400)
    assert "none of" in _get(filled.client, "/coverage?page=3")


def test_coverage_search_and_escaping(filled: FilledLog) -> None:
    last = _last_verdicts(filled.jobs)
    page = _get(filled.client, "/coverage?q=CRATE-3-")
    rows = _rows(page, "crates")
    expected = [key for key in last if key[0].startswith("crate-3-")]
    assert len(rows) == len(expected) > 0 and all(">crate-3-" in row for row in rows)
    assert f"Showing 1–{len(expected)} of {len(expected)}" in page
    exact = _rows(_get(filled.client, "/coverage?q=crate-0-0"), "crates")
    assert len(exact) == 1 and "badge failed" in exact[0]
    assert "none of 0" in _get(filled.client, "/coverage?q=no-such-crate")
    hostile = last[HOSTILE_NAME, HOSTILE_VERSION]
    for path in ("/coverage", "/coverage?q=script", "/coverage?page=1&q=%3Cscript"):
        page = _get(filled.client, path)
        assert html.escape(HOSTILE_NAME) in page and html.escape(HOSTILE_VERSION) in page
        assert "<img" not in page and "onerror=alert(1)>" not in page
    found = _rows(_get(filled.client, "/coverage?q=%3Cscript"), "crates")
    assert len(found) == 1 and f'href="/build/{hostile.job}"' in found[0]
    echoed = _get(filled.client, "/coverage?q=" + httpx.QueryParams({"x": '"><b>x'})["x"])
    assert "&quot;&gt;&lt;b&gt;x" in echoed and '"><b>x' not in echoed
