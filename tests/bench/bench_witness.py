"""Benchmark of the witness network: add-entry to quorum-cosigned checkpoint, and the simulator.

Run: ``python tests/bench/bench_witness.py [--sizes 4,7,16] [--seconds 10] [--rate 1000]``.
For each network size n it starts a real log and n witness processes on 127.0.0.1, waits for a
first published checkpoint (the steady state, not start-up, is measured), appends at
a steady rate from another process, and measures, for every acknowledged entry, the time from
sending ``POST /add-entry`` to the first published checkpoint (verified against the policy:
log signature plus a witness quorum) that includes it. Then it runs the consensus simulator
(n = 4, one twin) and reports scenarios per second. Figures first, one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import subprocess
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


async def _appender(url: str, rate: float, seconds: float, conns: int) -> list[tuple[int, float]]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sent: list[tuple[int, float]] = []
    interval = conns / rate

    async def one(wid: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        deadline = time.time() + seconds
        next_at = time.time() + wid * interval / conns
        i = 0
        while time.time() < deadline:
            await asyncio.sleep(max(0.0, next_at - time.time()))
            next_at += interval
            body = f"bench {wid} {i}".encode()
            i += 1
            started = time.time()
            head = f"POST /add-entry HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
            writer.write(head.encode() + body)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            payload = await reader.readexactly(length)
            if status.startswith(b"HTTP/1.1 200"):
                sent.append((json.loads(payload)["index"], started))
        writer.close()

    await asyncio.gather(*(one(w) for w in range(conns)))
    return sent


def _load(url: str, rate: float, seconds: float, out: multiprocessing.Queue[object]) -> None:
    out.put(asyncio.run(_appender(url, rate, seconds, 16)))


def _watch(url: str, policy: Policy, stop: threading.Event, seen: list[tuple[int, float]]) -> None:
    last = -1
    with httpx.Client(base_url=url, timeout=5) as c:
        while not stop.is_set():
            r = c.get("/checkpoint")
            now = time.time()
            if r.status_code == 200:
                size = policy.verify_checkpoint(r.content).size
                if size > last:
                    seen.append((size, now))
                    last = size
            time.sleep(0.002)


def _warm_up(net: LocalNetwork) -> None:
    """Measure the steady state: wait until the network has published a first checkpoint."""
    policy = net.config.policy()
    with httpx.Client(base_url=net.log_url, timeout=5) as c:
        c.post("/add-entry", content=b"warm-up")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r = c.get("/checkpoint")
            if r.status_code == 200 and policy.verify_checkpoint(r.content).size >= 1:
                return
            time.sleep(0.05)
    raise SystemExit("the network published nothing within 60 s")


def measure(n: int, seconds: float, rate: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"bench-witness-{n}-") as d:
        round_ms = 500 if n <= 7 else 1000
        net = LocalNetwork.create(Path(d), witnesses=n, round_ms=round_ms, entries="open")
        net.start()
        try:
            _warm_up(net)
            seen: list[tuple[int, float]] = []
            stop = threading.Event()
            watcher = threading.Thread(
                target=_watch, args=(net.log_url, net.config.policy(), stop, seen)
            )
            watcher.start()
            out: multiprocessing.Queue[object] = multiprocessing.Queue()
            proc = multiprocessing.Process(target=_load, args=(net.log_url, rate, seconds, out))
            proc.start()
            result = out.get(timeout=seconds + 120)
            proc.join()
            time.sleep(min(10.0, 2.0 * n))  # let the last appends get cosigned
            stop.set()
            watcher.join()
        finally:
            net.stop()
    assert isinstance(result, list)
    latencies = []
    for index, sent_at in result:
        published = next((t for size, t in seen if size > index), None)
        if published is not None:
            latencies.append(published - sent_at)
    latencies.sort()
    missing = len(result) - len(latencies)
    p50 = latencies[len(latencies) // 2] * 1000 if latencies else float("nan")
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else float("nan")
    return {
        f"n{n}_appends_per_s": len(result) / seconds,
        f"n{n}_cosigned_p50_ms": p50,
        f"n{n}_cosigned_p99_ms": p99,
        f"n{n}_never_cosigned": float(missing),
    }


def simulator_rate(scenarios: int) -> float:
    done = subprocess.run(
        [sys.executable, "-m", "synchronicity", "witness", "simulate", "--n", "4", "--twins", "1"]
        + ["--scenarios", str(scenarios), "--seed", "7", "--rounds", "8"],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return float(summary["scenarios_per_s"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,7,16")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--scenarios", type=int, default=2000)
    args = parser.parse_args()
    figures: dict[str, float] = {}
    for n in (int(x) for x in args.sizes.split(",")):
        got = measure(n, args.seconds, args.rate)
        figures |= got
        print(
            f"n={n}: {got[f'n{n}_appends_per_s']:.0f} appends/s, add-entry to quorum-cosigned "
            f"checkpoint p50 {got[f'n{n}_cosigned_p50_ms']:.0f} ms, "
            f"p99 {got[f'n{n}_cosigned_p99_ms']:.0f} ms",
            flush=True,
        )
    figures["simulator_scenarios_per_s"] = simulator_rate(args.scenarios)
    print(f"simulator (n=4, one twin, 8 rounds): {figures['simulator_scenarios_per_s']:.0f}/s")
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
