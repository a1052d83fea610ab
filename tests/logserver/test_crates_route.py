"""``GET /crates/<name>[/<version>]`` on a real ``log serve --network`` process.

The answers come from the leaves (the scenario of ``tests.support.crate_fixtures``), only those
below the published size (or ``?size=``), and the index follows new leaves as the sequencer
stores them. Bad input is a problem+json 4xx, never a 5xx; a log that does not run the build
protocol has no index.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from logserver.core import canonical_json
from logserver.protocol import entries, signed
from synchronicity.launcher import ServerProcess
from tests.support.crate_fixtures import CrateLog, start_crate_log
from tests.support.procs import keygen


@pytest.fixture(scope="module")
def crate_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrateLog]:
    running = start_crate_log(tmp_path_factory.mktemp("crates"))
    try:
        yield running
    finally:
        running.stop()


def test_a_crate_and_a_version(crate_log: CrateLog) -> None:
    r = httpx.get(f"{crate_log.url}/crates/hello-tool")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    answer = r.json()
    assert answer["name"] == "hello-tool" and answer["network"] == "dashboard-test"
    assert [v["version"] for v in answer["versions"]] == ["1.1.0-rc.1", "1.0.0", "0.9.0"]
    assert all(v["reproduced_total"] == 1 for v in answer["versions"])
    version = httpx.get(f"{crate_log.url}/crates/hidden/1.0.0").json()
    assert [row["outcome"] for row in version["verdicts"]] == ["reproduced", "not-reproduced"]
    assert version["size"] == answer["size"] == crate_log.log.size
    first = version["verdicts"][0]["index"]
    older = httpx.get(f"{crate_log.url}/crates/hidden/1.0.0", params={"size": first + 1}).json()
    assert [row["index"] for row in older["verdicts"]] == [first]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/crates/nothing-here", 404),
        ("/crates/hello-tool/9.9.9", 404),
        ("/crates/hello-tool?size=3", 404),  # requests only below leaf 3: no verdict yet
        ("/crates/hello-tool?size=99999", 404),  # beyond the published checkpoint
        ("/crates/hello-tool?size=01", 400),
        ("/crates/hello-tool?size=-1", 400),
        ("/crates/hello-tool?size=%C2%B2", 400),
        ("/crates/hello-tool?size=99999999999999999999", 400),
        ("/crates/bad%00name", 400),
        ("/crates/%2e%2e", 400),
        ("/crates/..%2Fetc", 400),
        ("/crates/" + "a" * 65, 400),
        ("/crates/%C3%A9", 400),
        ("/crates/hello-tool/1.0", 400),
        ("/crates/hello-tool/" + "1." * 80 + "0", 400),
        ("/crates/hello-tool/1.0.0/extra", 404),
        ("/crates/", 404),
    ],
)
def test_bad_input_is_a_problem_never_a_5xx(crate_log: CrateLog, path: str, status: int) -> None:
    r = httpx.get(crate_log.url + path)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == status and r.json()["detail"]


def test_the_index_follows_new_leaves(crate_log: CrateLog) -> None:
    """A build logged through POST /add-entry: the log appends its close and verdict, and the
    index has the new version once a quorum publishes the checkpoint."""
    fixture = crate_log.log.fixture
    size = httpx.get(f"{crate_log.url}/readyz").json()["size"]
    leaves, _ = fixture.builds(size, [("hello-tool", "2.0.0", "failed")])
    with httpx.Client(base_url=crate_log.url, timeout=30) as client:
        for data in leaves:
            leaf = signed.Leaf.parse(data)
            if isinstance(leaf.entry.entry, entries.Close | entries.Verdict):
                continue  # the log appends its own
            r = client.post("/add-entry", content=canonical_json.encode(leaf.entry.to_json()))
            assert r.status_code == 200, r.text
        deadline = time.monotonic() + 30
        while True:
            crate_log.log.cosign()
            r = client.get("/crates/hello-tool/2.0.0")
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status_code == 200, r.text
        assert [row["outcome"] for row in r.json()["verdicts"]] == ["failed"]
        assert client.get("/crates/hello-tool").json()["versions"][0]["version"] == "2.0.0"


def test_a_log_without_the_protocol_has_no_index(tmp_path: Path) -> None:
    key, _ = keygen(tmp_path, "example.test/open")
    proc = ServerProcess(
        ["log", "serve", "--key", str(key), "--data", str(tmp_path / "d"), "--open"]
        + ["--listen", "127.0.0.1:0"]
    )
    proc.start()
    try:
        for path in ("/crates/serde", "/crates/serde/1.0.0"):
            r = httpx.get(proc.url + path)
            assert r.status_code == 404 and "build protocol" in r.json()["detail"]
    finally:
        proc.stop()
