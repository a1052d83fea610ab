"""Benchmark of recovery: a network restarted as a whole, and a witness back from an absence.

Run: ``python tests/bench/bench_restart.py [--restarts 20] [--away 60,600] [--rate 5]``.

1. Restart: a log and four witness processes on 127.0.0.1 (the local network's timing:
   round 500 ms, at most 4 s). Each time, every process is SIGKILLed at once, all are started
   again, one entry is appended, and the time from the restart to the first published
   (quorum-cosigned) checkpoint that includes it is measured: p50 and p99 over ``--restarts``.
2. Catch-up: one witness is SIGKILLed while entries keep arriving at ``--rate`` per second;
   after ``--away`` seconds it is started again, and the time until it has co-signed the
   checkpoint published at its return is measured (with the default pruning horizon of 1,000
   rounds; an idle network spends rounds only by timeouts, so the horizon is reached by the
   entries' rounds).

Figures first, one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from logserver.core.policy import Policy  # noqa: E402
from synchronicity.localnet import LocalNetwork  # noqa: E402


def published(client: httpx.Client, policy: Policy) -> int:
    r = client.get("/checkpoint")
    return policy.verify(r.content).checkpoint.size if r.status_code == 200 else 0


def wait(condition: object, seconds: float) -> float:
    """Seconds until ``condition()`` holds (polled every 10 ms); raises on timeout."""
    began = time.monotonic()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - began > seconds:
            raise TimeoutError("condition not reached")
        time.sleep(0.01)
    return time.monotonic() - began


def restart_figures(directory: Path, restarts: int) -> list[float]:
    net = LocalNetwork.create(directory, entries="open").start()
    policy = net.config.policy()
    times: list[float] = []
    try:
        with httpx.Client(base_url=net.log_url, timeout=10) as c:
            c.post("/add-entry", content=b"first")
            wait(lambda: published(c, policy) >= 1, 60)
        for i in range(restarts):
            for w in net.witnesses:
                w.kill()
            net.log.kill()
            began = time.monotonic()
            net.start()
            with httpx.Client(base_url=net.log_url, timeout=10) as c:
                index = c.post("/add-entry", content=b"after restart %d" % i).json()["index"]
                wait(lambda index=index: published(c, policy) > index, 120)
            times.append(time.monotonic() - began)
            print(f"restart {i + 1}: published after {times[-1]:.2f} s", flush=True)
    finally:
        net.stop()
    return times


def catch_up_figure(directory: Path, away: float, rate: float) -> tuple[float, int]:
    net = LocalNetwork.create(directory, entries="open").start()
    policy = net.config.policy()
    stop = threading.Event()

    def append() -> None:
        with httpx.Client(base_url=net.log_url, timeout=10) as c:
            i = 0
            while not stop.is_set():
                c.post("/add-entry", content=b"entry %d" % i)
                i += 1
                stop.wait(1 / rate)

    appender = threading.Thread(target=append)
    appender.start()
    try:
        with httpx.Client(base_url=net.log_url, timeout=10) as c:
            wait(lambda: published(c, policy) >= 1, 60)
            absent = net.witnesses[3]
            absent.kill()
            time.sleep(away)
            target = published(c, policy)
            rounds = httpx.get(net.witnesses[0].url + "/status", timeout=5).json()["round"]
            absent.start()
            seconds = wait(
                lambda: (
                    httpx.get(absent.url + "/status", timeout=5).json()["cosigned_size"] >= target
                ),
                600,
            )
        return seconds, int(rounds)
    finally:
        stop.set()
        appender.join()
        net.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=20)
    parser.add_argument("--away", default="60,600", help="seconds away, comma-separated")
    parser.add_argument("--rate", type=float, default=5.0, help="entries per second meanwhile")
    args = parser.parse_args()
    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        times = restart_figures(Path(tmp) / "restarts", args.restarts)
        ordered = sorted(times)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        print(
            f"restart -> next published checkpoint over {len(times)} restarts: "
            f"p50 {statistics.median(times):.2f} s, p99 {p99:.2f} s, max {max(times):.2f} s"
        )
        result["restart_p50_s"] = round(statistics.median(times), 3)
        result["restart_p99_s"] = round(p99, 3)
        for away in (float(a) for a in args.away.split(",") if a):
            seconds, rounds = catch_up_figure(Path(tmp) / f"away-{away:g}", away, args.rate)
            print(
                f"witness away {away:g} s (network at round {rounds}): co-signs again "
                f"{seconds:.2f} s after its restart"
            )
            result[f"catch_up_after_{away:g}_s"] = round(seconds, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
