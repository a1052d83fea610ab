"""The main job as a user runs it: ``synchronicity rebuild``, then offline verification.

A real crate from crates.io is rebuilt on a local network of four builder-witness processes;
the proof file verifies a copy of the reproduced artifact and rejects it after one byte
changes. A local binary crate goes the same way, and the verdict exports as in-toto.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import httpx
import pytest

from synchronicity.localnet import LocalNetwork
from tests.support.builder_helpers import pack_fixture
from tests.support.procs import run_cli

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.network
def test_rebuild_crate_then_verify_artifact(tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "out"
    done = run_cli(
        "rebuild", "itoa@1.0.11", "--home", str(home), "--out", str(out), "--json", timeout=900
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["outcome"] == "reproduced" and len(result["agreeing"]) == 4
    for needle in ("committed", "revealed", "verdict: reproduced", "cosigned by a quorum"):
        assert needle in done.stderr
    proof, policy = result["proof"], result["policy"]
    artifact = Path(result["artifacts"][0])
    copy = tmp_path / "copy.rlib"
    shutil.copy(artifact, copy)
    ok = run_cli("verify", "--policy", policy, "--proof", proof, "--artifact", str(copy))
    assert ok.returncode == 0, ok.stderr
    assert "reproduced by 4 builders" in ok.stdout
    flip_one_byte(copy)
    bad = run_cli("verify", "--policy", policy, "--proof", proof, "--artifact", str(copy))
    assert bad.returncode == 1
    assert "not in the reproduced outputs" in bad.stderr

    statement = json.loads(run_cli("attest", "--policy", policy, "--proof", proof).stdout)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicate"]["crate"] == {"name": "itoa", "version": "1.0.11"}
    assert statement["subject"][0]["name"] == artifact.name

    # Run again: the local network is reused, and the job found in the log, not rebuilt.
    again = run_cli("rebuild", "itoa@1.0.11", "--home", str(home), "--out", str(out), timeout=900)
    assert again.returncode == 0, again.stderr
    assert "reusing the local network" in again.stderr
    assert "already holds this job" in again.stderr


def test_rebuild_local_binary_crate_and_status(tmp_path: Path) -> None:
    crate = pack_fixture("hello-bin", tmp_path)
    home, out = tmp_path / "home", tmp_path / "out"
    done = run_cli(
        "rebuild", str(crate), "--home", str(home), "--out", str(out), "--json", timeout=900
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    binaries = [Path(p) for p in result["artifacts"] if not Path(p).name.endswith(".rlib")]
    assert binaries, result["artifacts"]
    copy = tmp_path / "hello"
    shutil.copy(binaries[0], copy)
    verify = ["verify", "--policy", result["policy"], "--proof", result["proof"]]
    assert run_cli(*verify, "--artifact", str(copy)).returncode == 0
    flip_one_byte(copy)
    assert run_cli(*verify, "--artifact", str(copy)).returncode == 1

    net = LocalNetwork(home / "network").start()
    try:
        # rebuild signed its upload with the network's requester key; nobody else may upload.
        sha = hashlib.sha256(crate.read_bytes()).hexdigest()
        unsigned = httpx.put(f"{net.config.witnesses[0].url}/crate/{sha}", content=b"x")
        assert unsigned.status_code == 401, unsigned.text
        # A running network, named with --network: the job is found and proved again.
        config = str(home / "network" / "network.json")
        by_config = run_cli(
            *("rebuild", str(crate), "--network", config, "--out", str(tmp_path / "o2")),
            timeout=900,
        )
        assert by_config.returncode == 0, by_config.stderr
        assert "already holds this job" in by_config.stderr
        # A monitor replays the protocol log and recomputes its verdict.
        monitor = run_cli(
            *("monitor", "--policy", str(home / "network" / "policy"), "--once"),
            *("--state", str(tmp_path / "monitor"), "--network", config),
        )
        assert monitor.returncode == 0, monitor.stderr
        assert "1 jobs' verdicts recomputed" in monitor.stdout
        metrics = httpx.get(net.config.witnesses[0].url + "/metrics").text
        assert "witness_round" in metrics and "witness_commits_total" in metrics
        status = run_cli("status", "--network", str(home / "network" / "network.json"), "--json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["log"]["up"] and all(w["up"] for w in report["witnesses"])
        # The dashboard shows the build that the protocol log recorded.
        deadline = time.monotonic() + 30
        while "hello-bin" not in (builds := httpx.get(net.log_url + "/builds").text):
            assert time.monotonic() < deadline, builds
            time.sleep(0.2)
        page = httpx.get(f"{net.log_url}/build/{result['job']}")
        assert page.status_code == 200 and "reproduced" in page.text
    finally:
        net.stop()
    down = run_cli("status", "--network", str(home / "network" / "network.json"))
    assert down.returncode == 3 and "cannot make progress" in down.stderr


def test_rebuild_not_reproducible_exits_1_with_diff_report(tmp_path: Path) -> None:
    crate = pack_fixture("unrepro", tmp_path)
    done = run_cli(
        *("rebuild", str(crate), "--home", str(tmp_path / "h"), "--out", str(tmp_path)),
        "--json",
        timeout=900,
    )
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["outcome"] == "not-reproduced"
    assert result["diff_report"].startswith("http://127.0.0.1:")
    assert "diff report:" in done.stderr
