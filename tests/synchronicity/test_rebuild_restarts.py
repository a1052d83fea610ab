"""The main job run again and again on one home, with the network SIGKILLed mid-job.

Five crates in a row on the same ``--home``: each ``synchronicity rebuild`` starts the local
network again from its data (so every replica restarts at once, from its durable state). Twice
every process of the network is SIGKILLed in the middle of a job — once right after the request
is logged (before the builders commit), once when the commits are closed (before the reveals) —
and the same command run again must finish that job with a verdict: the request is found in
the log, the builders' durable records carry the build, commit and reveal across the kill.
Real crates from crates.io, real Docker builds, real processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.network, pytest.mark.slow]


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [child for child, p in parents.items() if p == parent]
        found += kids
        frontier += kids
    return found


def _kill_everything(pid: int) -> None:
    """SIGKILL the network's processes (the rebuild's children) and the rebuild, at once."""
    victims = [*_children(pid), pid]
    for victim in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def _rebuild(home: Path, spec: str, out: Path, kill_at: str | None = None) -> dict[str, object]:
    """Run ``rebuild``; with ``kill_at``, SIGKILL everything when that progress line appears."""
    command = [sys.executable, "-m", "synchronicity", "rebuild", spec, "--home", str(home)]
    command += ["--out", str(out), "--json", "--timeout", "600"]
    lines: list[str] = []
    deadline = time.monotonic() + 900
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stderr is not None and proc.stdout is not None
        for line in proc.stderr:
            lines.append(line)
            if kill_at is not None and kill_at in line:
                _kill_everything(proc.pid)
                proc.wait(30)
                return {"killed": line.strip(), "log": "".join(lines)}
            assert time.monotonic() < deadline, "".join(lines[-30:])
        stdout = proc.stdout.read()
        code = proc.wait(60)
    assert code == 0, f"exit {code}\n" + "".join(lines[-40:]) + stdout
    result: dict[str, object] = json.loads(stdout)
    result["log"] = "".join(lines)
    return result


def test_five_rebuilds_in_a_row_with_two_whole_network_kills(tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "out"
    outcomes = {}

    outcomes["itoa@1.0.11"] = _rebuild(home, "itoa@1.0.11", out)

    killed = _rebuild(home, "hex@0.4.3", out, kill_at=" request hex")
    assert "killed" in killed, killed
    assert " committed" not in str(killed["log"])  # killed before any builder committed
    outcomes["hex@0.4.3"] = _rebuild(home, "hex@0.4.3", out)
    assert "already holds this job" in str(outcomes["hex@0.4.3"]["log"])

    outcomes["fnv@1.0.7"] = _rebuild(home, "fnv@1.0.7", out)

    killed = _rebuild(home, "cfg-if@1.0.0", out, kill_at="commits closed")
    assert "killed" in killed, killed
    outcomes["cfg-if@1.0.0"] = _rebuild(home, "cfg-if@1.0.0", out)
    assert "already holds this job" in str(outcomes["cfg-if@1.0.0"]["log"])

    outcomes["lazy_static@1.4.0"] = _rebuild(home, "lazy_static@1.4.0", out)

    for spec, result in outcomes.items():
        assert result["outcome"] == "reproduced", (spec, result)
        # Every builder's work survived the kills: all four agree, none missing.
        assert len(result["agreeing"]) == 4, (spec, result["agreeing"])  # type: ignore[arg-type]
        assert Path(str(result["proof"])).is_file()
