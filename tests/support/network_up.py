"""``synchronicity network up`` as tests run it: in the background, read what it prints, count
the processes of a home's network."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def network_processes(home: Path) -> dict[str, int]:
    """The log and witness processes whose command line names ``home``."""
    found = {"log": 0, "witness": 0}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = [a.decode(errors="replace") for a in args]
        if not any(str(home) in a for a in text):
            continue
        if "serve" in text and "log" in text:
            found["log"] += 1
        elif "run" in text and "witness" in text:
            found["witness"] += 1
    return found


def start_up(home: Path, *extra: str) -> subprocess.Popen[str]:
    """``network up`` in the background: stdout piped, stderr into ``<home>.up.log``."""
    home.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{home}.up.log", "w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "synchronicity", "network", "up", "--home", str(home), *extra],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )


def read_up(proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, str]:
    """The ``key: value`` lines ``network up`` prints once the network is up."""
    assert proc.stdout is not None
    said: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while len(said) < 3:
        assert time.monotonic() < deadline, said
        line = proc.stdout.readline()
        assert line, f"network up ended: {proc.poll()}"
        key, _, value = line.strip().partition(": ")
        said[key] = value
    return said


def node_pids(home: Path, needle: str) -> list[int]:
    """The pids of the processes whose command line names ``home`` and holds ``needle``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            text = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, UnicodeDecodeError):
            continue
        if str(home) in text and needle in text:
            found.append(int(pid))
    return found
