"""A campaign paces itself when builders ask it to, rather than fail.

Real processes and real builds: a network whose witnesses admit one job waiting for a verdict
at a time (``--max-pending-jobs 1``: every further request is 503 with ``Retry-After: 30``)
gets a campaign of two crates, given with ``--network``, that asks for both at once. The
campaign waits out the refusals, requests each crate once, and ends with both verdicts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from logserver.client import LogClient
from logserver.protocol.entries import Request
from synchronicity.client import logged_entries
from synchronicity.localnet import LocalNetwork
from tests.support.procs import run_cli

pytestmark = [pytest.mark.docker, pytest.mark.network, pytest.mark.slow]

CRATES = ["itoa@1.0.11", "fnv@1.0.7"]


def test_a_campaign_waits_out_503s_and_gets_every_verdict(tmp_path: Path) -> None:
    LocalNetwork.create(tmp_path / "net")
    net = LocalNetwork(tmp_path / "net", extra_witness_args=["--max-pending-jobs", "1"])
    listing, out = tmp_path / "crates.txt", tmp_path / "out"
    listing.write_text("\n".join(CRATES) + "\n")
    net.start()
    try:
        done = run_cli(
            *("campaign", str(listing), "--network", str(net.dir / "network.json")),
            *("--out", str(out), "--in-flight", "2", "--json"),
            timeout=900,
        )
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert summary["reproduced"] == 2 and summary["pending"] == 0, summary
        assert summary["requests_paced"] > 0
        assert "asks to be asked later" in done.stderr
        with LogClient(net.log_url) as log:
            requested = [
                e.entry.job
                for e in logged_entries(log, 0, log.size())
                if isinstance(e.entry, Request)
            ]
        assert sorted(requested) == sorted(c["job"] for c in summary["crates"])
    finally:
        net.stop()
