"""``/latest-checkpoint?after=N&wait_ms=M``: waiters sleep until the sequencer wakes them.

The log used to poll LMDB every 5 ms for each waiting request, on the event loop: 200 waiters
cost a quarter of a core while nothing happened. Now they cost nothing while they wait, and all
of them answer as soon as an entry is integrated.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_log
from tests.support.rawhttp import Connection, request_bytes

WAITERS = 200
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK  # utime, stime


@pytest.mark.slow
def test_waiters_cost_no_cpu_and_wake_at_once(tmp_path: Path) -> None:
    log = start_log(tmp_path)
    waiters = [Connection(log.url) for _ in range(WAITERS)]
    try:
        assert log.proc.proc is not None
        pid = log.proc.proc.pid
        with httpx.Client(base_url=log.url) as c:
            assert c.post("/add-entry", content=b"first").status_code == 200
        for conn in waiters:
            conn.send(request_bytes("GET", "/latest-checkpoint?after=1&wait_ms=5000"))
        time.sleep(0.5)  # every request has reached its handler and waits
        before, started = cpu_seconds(pid), time.monotonic()
        time.sleep(2.0)
        used = cpu_seconds(pid) - before
        share = used / (time.monotonic() - started)
        print(f"\n{WAITERS} waiters: {used:.2f} s CPU in 2 s ({share:.1%} of a core)")
        assert share < 0.05, f"{WAITERS} idle waiters cost {share:.1%} of a core"

        appended = time.monotonic()
        with httpx.Client(base_url=log.url) as c:
            assert c.post("/add-entry", content=b"second").status_code == 200
        for conn in waiters:
            answer = conn.read()
            assert answer.status == 200, answer
            assert answer.body.startswith(b"example.test/log\n2\n")  # the tree of size 2
        woke = time.monotonic() - appended
        print(f"all {WAITERS} woke {woke * 1000:.0f} ms after the append")
        assert woke < 1.0
    finally:
        for conn in waiters:
            conn.close()
        log.proc.stop()


def test_waiting_times_out_and_answers_at_once_when_grown(tmp_path: Path) -> None:
    log = start_log(tmp_path)
    try:
        with httpx.Client(base_url=log.url, timeout=10) as c:
            assert c.get("/latest-checkpoint?after=0&wait_ms=100").status_code == 404  # empty
            assert c.post("/add-entry", content=b"first").status_code == 200
            started = time.monotonic()
            r = c.get("/latest-checkpoint", params={"after": 0, "wait_ms": 5000})
            assert r.status_code == 200 and time.monotonic() - started < 0.5
            started = time.monotonic()
            r = c.get("/latest-checkpoint", params={"after": 1, "wait_ms": 300})
            waited = time.monotonic() - started
            assert r.status_code == 200 and b"\n1\n" in r.content and 0.25 < waited < 2
            r = c.get("/latest-checkpoint", params={"after": 1, "wait_ms": 10**9})
            assert r.status_code == 200  # capped at 5 s, not refused
    finally:
        log.proc.stop()


def test_too_many_waiters_are_answered_at_once(tmp_path: Path) -> None:
    """Beyond ``--max-waiters`` a request does not wait: it gets the latest checkpoint now."""
    log = start_log(tmp_path, extra=["--open", "--max-waiters", "3"])
    try:
        with httpx.Client(base_url=log.url) as c:
            assert c.post("/add-entry", content=b"first").status_code == 200
        holding = [Connection(log.url) for _ in range(3)]
        for conn in holding:
            conn.send(request_bytes("GET", "/latest-checkpoint?after=1&wait_ms=5000"))
        time.sleep(0.3)
        started = time.monotonic()
        with httpx.Client(base_url=log.url) as c:
            r = c.get("/latest-checkpoint", params={"after": 1, "wait_ms": 5000})
            assert r.status_code == 200 and time.monotonic() - started < 1.0
            assert c.post("/add-entry", content=b"second").status_code == 200
        for conn in holding:
            answer = conn.read()
            assert answer.status == 200 and b"\n2\n" in answer.body
            conn.close()
    finally:
        log.proc.stop()
