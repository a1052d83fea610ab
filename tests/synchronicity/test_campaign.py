"""A real campaign: ten small crates from crates.io on a local network of four builders.

``network up --max-builds 2`` runs in the background; the campaign is interrupted twice
(SIGINT after its first verdict: exit 130; SIGKILL midway) and run a third time to the end:

- every line has an outcome: the ten crates are reproduced, the crate that does not exist is
  ``failed`` with the reason, without a request; ``summary.json`` adds up and is the last line
  of stdout with ``--json``; ``summary.md`` has a row per crate;
- nothing is requested twice: the log holds one request per job, and the campaign's count of
  requests it logged is one per crate across the three runs;
- every proof verifies offline with ``synchronicity verify`` and the policy in DIR;
- builds ran two at a time on a builder (its ``witness_builds_running`` gauge showed 2).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from logserver.client import LogClient
from logserver.protocol.entries import Request
from synchronicity.client import logged_entries
from tests.support.network_up import read_up, start_up
from tests.support.procs import run_cli

pytestmark = [pytest.mark.docker, pytest.mark.network, pytest.mark.slow]

# Small crates that build in seconds with their default (or docs.rs) features; heck without a
# version: the newest that is not yanked.
CRATES = [
    "itoa@1.0.11",
    "fnv@1.0.7",
    "cfg-if@1.0.0",
    "lazy_static@1.5.0",
    "static_assertions@1.1.0",
    "scopeguard@1.2.0",
    "matches@0.1.10",
    "byteorder@1.5.0",
    "ryu@1.0.18",
    "heck",
]
MISSING = "no-such-crate-synchronicity-test"


class BuildsSampler:
    """The most builds each witness ran at once, from its /metrics, sampled every 100 ms."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.most = dict.fromkeys(urls, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=2.0) as http:
            while not self._stop.wait(0.1):
                for url in self.urls:
                    try:
                        text = http.get(url + "/metrics").text
                    except httpx.HTTPError:
                        continue
                    for line in text.splitlines():
                        if line.startswith("witness_builds_running "):
                            self.most[url] = max(self.most[url], float(line.split()[1]))

    def __enter__(self) -> BuildsSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def outcomes(out: Path) -> int:
    try:
        state = json.loads((out / "campaign.json").read_text())
    except (OSError, ValueError):
        return 0
    return sum(1 for c in state["crates"] if c["outcome"] is not None and c["job"])


def start_campaign(listing: Path, home: Path, out: Path, log: Path) -> subprocess.Popen[str]:
    with log.open("w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "synchronicity", "campaign", str(listing)]
            + ["--home", str(home), "--out", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )


def interrupt_after(
    proc: subprocess.Popen[str], out: Path, done: int, signum: signal.Signals
) -> int:
    """Send ``signum`` once ``done`` crates have an outcome; the exit code."""
    deadline = time.monotonic() + 600
    while outcomes(out) < done:
        assert proc.poll() is None, f"the campaign ended early: {proc.returncode}"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signum)
    return proc.wait(60)


def test_a_campaign_of_ten_crates_survives_interrupts_and_proves_every_verdict(
    tmp_path: Path, background: list[subprocess.Popen[str]]
) -> None:
    home, out = tmp_path / "home", tmp_path / "out"
    listing = tmp_path / "crates.txt"
    listing.write_text("# a campaign\n" + "\n".join(CRATES) + f"\n\n{MISSING}  # none such\n")
    up = start_up(home, "--max-builds", "2")
    background.append(up)
    config = json.loads(Path(read_up(up)["network"]).read_text())

    with BuildsSampler([w["url"] for w in config["witnesses"]]) as sampler:
        first = start_campaign(listing, home, out, tmp_path / "run1.log")
        assert interrupt_after(first, out, 1, signal.SIGINT) == 130
        said = (tmp_path / "run1.log").read_text()
        assert "using the running network" in said and "Traceback" not in said
        summary = json.loads((out / "summary.json").read_text())
        assert summary["pending"] > 0 and summary["total"] == 11

        second = start_campaign(listing, home, out, tmp_path / "run2.log")
        assert interrupt_after(second, out, 5, signal.SIGKILL) == -signal.SIGKILL

        third = run_cli(
            *("campaign", str(listing), "--home", str(home), "--out", str(out), "--json"),
            timeout=900,
        )
    assert third.returncode == 0, third.stderr
    assert "following" in third.stderr or "following" in (tmp_path / "run2.log").read_text()

    summary = json.loads(third.stdout.strip().splitlines()[-1])
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["total"] == 11 and summary["pending"] == 0
    assert summary["reproduced"] + summary["not_reproduced"] + summary["failed"] == 11
    by_line = {c["line"]: c for c in summary["crates"]}
    assert list(by_line) == [*CRATES, MISSING]
    assert all(by_line[spec]["outcome"] == "reproduced" for spec in CRATES), summary
    assert summary["reproduced"] == 10 and summary["failed"] == 1
    missing = by_line[MISSING]
    assert missing["outcome"] == "failed" and missing["job"] is None
    assert "no recipe" in missing["reason"] and MISSING in missing["reason"]
    heck = by_line["heck"]
    assert heck["version"] and heck["crate"] == f"heck@{heck['version']}"
    table = (out / "summary.md").read_text()
    assert all(f"| {c['crate']} | {c['outcome']} |" in table for c in summary["crates"])

    # Nothing requested twice: one request per job in the log, one logged by the campaign.
    state = {c["spec"]: c for c in json.loads((out / "campaign.json").read_text())["crates"]}
    assert [state[spec]["requests"] for spec in CRATES] == [1] * 10
    assert state[MISSING]["requests"] == 0
    with LogClient(config["log"]["url"]) as log:
        requested = [
            e.entry.job for e in logged_entries(log, 0, log.size()) if isinstance(e.entry, Request)
        ]
    assert sorted(requested) == sorted(by_line[spec]["job"] for spec in CRATES)

    # Every proof verifies offline against the policy in DIR.
    policy = out / summary["policy"]
    for spec in CRATES:
        proof = out / by_line[spec]["proof"]
        assert proof.name == f"{by_line[spec]['name']}-{by_line[spec]['version']}.tlog-proof"
        checked = run_cli("verify", "--policy", str(policy), "--proof", str(proof))
        assert checked.returncode == 0, checked.stderr
        assert "reproduced by 4 builders" in checked.stdout

    assert max(sampler.most.values()) == 2, sampler.most  # two builds at once on a builder
    up.send_signal(signal.SIGTERM)
    assert up.wait(60) == 0
