"""The dashboard of a log whose leaves no build protocol checked shows no builds.

An ``--open`` log (or a network log with ``"entries": "open"``) takes any bytes, so anyone can
append leaves that look like a whole build with a ``reproduced`` verdict, signed by a random key
named like a builder. Such a log's dashboard shows only what the log itself vouches for (its
size, checkpoints and witnesses): the build pages answer 404 and the overview has no builds.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx

from logserver.protocol import entries as e
from logserver.protocol.signed import KeyRef, Leaf, SignedEntry
from synchronicity.cmd_network import init_network
from tests.conftest import start_log
from tests.support.dashboard_fixtures import recipe
from tests.support.procs import ServerProcess


def _forged(entry: e.Entry, name: str, time_ms: int) -> bytes:
    """A leaf whose entry claims ``name`` as its signer, with a signature by nobody's key."""
    signer = KeyRef(name, int.from_bytes(os.urandom(4), "big"))
    return Leaf(SignedEntry(entry, signer, os.urandom(64)), time_ms).to_bytes()


def _forge_a_reproduced_build(client: httpx.Client, log: str, witness: str) -> tuple[str, int]:
    """The leaves of a ``reproduced`` build: a request named as by a witness, and a verdict
    named as by the log."""
    request = e.Request(recipe("forged-crate", "6.6.6"))
    output = hashlib.sha256(b"backdoored binary").hexdigest()
    verdict = e.Verdict(
        job=request.job,
        reason="all-revealed",
        outcome="reproduced",
        threshold=1,
        output_digest=output,
        agreeing=(witness,),
        groups=(e.Group(output, (witness,)),),
    )
    leaves = [
        _forged(request, witness, 1_700_000_000_000),
        _forged(verdict, log, 1_700_000_000_001),
    ]
    for data in leaves:
        assert client.post("/add-entry", content=data).status_code == 200
    return request.job, len(leaves)


def _assert_no_builds(client: httpx.Client, job: str, size: int) -> None:
    overview = client.get("/")
    assert overview.status_code == 200
    page = overview.text
    assert f'<span class="stat" id="stat-tree-size"><b>{size}</b>' in page
    assert "forged-crate" not in page
    assert "badge reproduced" not in page and "stat-reproduced" not in page
    assert 'href="/builds"' not in page and 'name="q"' not in page
    assert 'href="/coverage"' not in page
    assert "no build protocol" in page
    for path in ("/builds", "/builds?q=forged", f"/build/{job}", "/coverage", "/coverage?q=f"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert "forged-crate" not in r.text and "no build protocol" in r.text
    assert client.get("/checkpoints").status_code == 200  # the log's own history stays


def test_open_log_never_shows_a_forged_verdict(tmp_path: Path) -> None:
    log = start_log(tmp_path)  # --open
    try:
        with httpx.Client(base_url=log.url, timeout=30) as client:
            job, size = _forge_a_reproduced_build(client, log.origin, "witness-1.example")
            _assert_no_builds(client, job, size)
            assert f'<b id="published-size">{size}</b>' in client.get("/").text
    finally:
        log.proc.stop()


def test_network_log_with_open_entries_shows_no_builds(tmp_path: Path) -> None:
    config = init_network(tmp_path, entries="open")
    proc = ServerProcess(
        ["log", "serve", "--key", str(tmp_path / "log.key"), "--data", str(tmp_path / "data")]
        + ["--network", str(tmp_path / "network.json"), "--open", "--listen", "127.0.0.1:0"]
    ).start()
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            witness = config.witnesses[0].name
            job, size = _forge_a_reproduced_build(client, config.log.origin, witness)
            _assert_no_builds(client, job, size)
            assert 'id="wits"' in client.get("/").text  # the witnesses are still shown
    finally:
        proc.stop()
