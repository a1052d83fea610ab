"""``synchronicity network up``: one network per home, shared with rebuild and campaign.

With real processes and a real rebuild of a crates.io crate:

- a ``rebuild`` without ``network up`` runs the home's network for itself, and ``network up``
  on that home meanwhile refuses (exit 3, naming the rebuild): never two networks on one home;
- ``network up`` prints the dashboard's URL (which serves) and the config's path; a
  ``rebuild`` of that home uses its network (it says so, and no fifth witness or second log
  process appears), and a second ``network up`` refuses;
- a node of it that dies (SIGKILL) is started again;
- SIGTERM stops ``network up`` with exit 0, and no process of the home's network is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.network_up import network_processes, node_pids, read_up, start_up
from tests.support.procs import run_cli

pytestmark = [pytest.mark.docker, pytest.mark.network, pytest.mark.slow]


class Sampler:
    """The most log and witness processes of a home seen at once, sampled every 50 ms."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.most = {"log": 0, "witness": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for kind, count in network_processes(self.home).items():
                self.most[kind] = max(self.most[kind], count)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_network_up_serves_rebuild_and_stops_cleanly(
    tmp_path: Path, background: list[subprocess.Popen[str]]
) -> None:
    home, out = tmp_path / "home", tmp_path / "out"
    # 1. A rebuild runs the home's network for itself; network up on that home refuses.
    rebuild = subprocess.Popen(
        [sys.executable, "-m", "synchronicity", "rebuild", "itoa@1.0.11"]
        + ["--home", str(home), "--out", str(out), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    background.append(rebuild)
    deadline = time.monotonic() + 120
    while not (home / "running.json").exists():
        assert rebuild.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    refused = run_cli("network", "up", "--home", str(home))
    assert refused.returncode == 3, refused.stderr
    assert "synchronicity rebuild" in refused.stderr
    _, stderr = rebuild.communicate(timeout=900)
    assert rebuild.returncode == 0, stderr
    assert "starting the log and the builder-witnesses" in stderr
    assert network_processes(home) == {"log": 0, "witness": 0}

    # 2. network up: the dashboard serves, a rebuild uses its network, a second one refuses.
    up = start_up(home)
    background.append(up)
    said = read_up(up)
    assert said["network"] == str(home / "network" / "network.json")
    config = json.loads(Path(said["network"]).read_text())
    assert said["dashboard"] == config["log"]["url"] + "/"
    page = httpx.get(said["dashboard"], timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert json.loads((home / "running.json").read_text())["command"] == "network up"
    with Sampler(home) as sampler:
        done = run_cli(
            *("rebuild", "fnv@1.0.7", "--home", str(home), "--out", str(out)), timeout=900
        )
    assert done.returncode == 0, done.stderr
    assert "using the running network" in done.stderr
    assert "starting the log" not in done.stderr
    assert sampler.most == {"log": 1, "witness": 4}
    assert (out / "fnv-1.0.7.tlog-proof").exists()
    again = run_cli("network", "up", "--home", str(home))
    assert again.returncode == 3 and "already run by `synchronicity network up`" in again.stderr
    builds = httpx.get(config["log"]["url"] + "/builds", timeout=10).text
    assert "fnv" in builds and "itoa" in builds  # one log, both rebuilds

    # A node that dies is started again.
    (victim,) = node_pids(home, "witness-4.key")
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while node_pids(home, "witness-4.key") in ([], [victim]):
        assert time.monotonic() < deadline, "witness-4 was not started again"
        time.sleep(0.2)
    while not ready(config["witnesses"][3]["url"]):
        assert time.monotonic() < deadline, "witness-4 did not come back"
        time.sleep(0.2)

    # 3. SIGTERM: exit 0, nothing left running, the home free again.
    up.send_signal(signal.SIGTERM)
    assert up.wait(60) == 0
    assert network_processes(home) == {"log": 0, "witness": 0}
    assert not (home / "running.json").exists()
