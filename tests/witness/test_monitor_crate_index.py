"""``synchronicity monitor --network`` checks the crate index a real log serves against its
leaves: an honest log passes; the same log behind a proxy whose ``/crates/...`` answers hide a
``not-reproduced`` verdict behind an older ``reproduced`` one is caught (exit 1, one line naming
the crate and what differs). A client alone cannot tell: ``install`` through the lying proxy
takes the older build, which is why monitors check the index.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.crate_fixtures import CrateLog, start_crate_log
from tests.support.lying_proxy import LyingProxy, hide_newest_verdict
from tests.support.procs import run_cli


@pytest.fixture(scope="module")
def crate_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrateLog]:
    running = start_crate_log(tmp_path_factory.mktemp("crates"))
    try:
        yield running
    finally:
        running.stop()


def _monitor(crate_log: CrateLog, url: str, state: Path) -> list[str]:
    network = str(crate_log.log.dir / "network.json")
    return [
        *("monitor", "--policy", str(crate_log.policy), "--network", network),
        *("--log", url, "--state", str(state), "--once"),
    ]


def test_an_honest_index_passes(crate_log: CrateLog, tmp_path: Path) -> None:
    done = run_cli(*_monitor(crate_log, crate_log.url, tmp_path / "m"))
    assert done.returncode == 0, done.stderr
    assert "crate index checked (4 of 4 crates asked)" in done.stdout


def test_a_lying_index_is_caught(crate_log: CrateLog, tmp_path: Path) -> None:
    proxy = LyingProxy(crate_log.url, hide_newest_verdict("hidden")).start()
    try:
        done = run_cli(*_monitor(crate_log, proxy.url, tmp_path / "m"))
        assert done.returncode == 1, done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert "crate index differs from its leaves: hidden@1.0.0" in lines[0]
        assert "not-reproduced" in lines[0]
        # What the lie buys the log: a client alone takes the older reproduced build.
        fooled = run_cli(
            *("install", "hidden@1.0.0", "--root", str(tmp_path / "root")),
            *("--policy", str(crate_log.policy), "--log", proxy.url),
        )
        assert fooled.returncode == 0, fooled.stderr
        # Through the honest log, install refuses it.
        honest = run_cli(
            *("install", "hidden@1.0.0", "--root", str(tmp_path / "root2")),
            *crate_log.source(),
        )
        assert honest.returncode == 1 and "newest verdict for hidden@1.0.0 is not-reproduced" in (
            honest.stderr
        )
    finally:
        proxy.stop()
