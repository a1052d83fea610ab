"""``rebuild`` of a crate whose build fails everywhere says why at once (issue 12).

A real local network (a log and four builder-witness processes) builds a crate whose build
script fails in the sandbox on every builder: the verdict is ``failed``, so no diff report can
come, and ``rebuild`` prints each builder's failure reason and exits 1 without waiting.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support.builder_helpers import pack_fixture
from tests.support.procs import run_cli

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_a_failed_verdict_is_explained_without_waiting(tmp_path: Path) -> None:
    crate = pack_fixture("hostile-network", tmp_path)  # its build script always panics
    started = time.monotonic()
    done = run_cli(
        *("rebuild", str(crate), "--home", str(tmp_path / "h"), "--out", str(tmp_path / "out")),
        "--json",
        timeout=900,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["outcome"] == "failed"
    assert "diff_report" not in result
    builders = [f"witness-{i}.synchronicity.local" for i in range(1, 5)]
    assert sorted(result["failures"]) == builders, done.stderr
    assert set(result["failures"].values()) == {"nonzero-exit"}
    for builder in builders:
        assert f"• {builder}: build failed: nonzero-exit" in done.stderr
    assert "no two outputs to compare, so no diff report" in done.stderr
    timings = result["timings"]
    assert timings["explain_s"] < 5, timings
    # Everything else accounts for the run: nothing waited for a report that cannot come.
    assert elapsed < sum(timings.values()) + 30, (elapsed, timings)
