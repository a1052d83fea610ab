"""Benchmark of the dashboard: page latency over real HTTP with a log of 100,000 entries.

Run: ``python tests/bench/bench_dashboard.py [--entries N] [--requests R]``. It prints its figures
and, last, one JSON line.

1. Makes real build-protocol leaves (``tests.dashboard_fixtures``: signed requests, commits,
   closes, reveals, verdicts and diff reports of many builds, checked by the protocol rules)
   and stores them in LMDB in process through the sequencer, 256 a batch.
2. Starts a real log server process with the dashboard on that data, as the log of a network
   whose entries are the build protocol (``tests.support.protocol_log``: only such a log shows
   builds), and times how long it takes to fold the whole log at start-up, through the
   protocol's rules and into the dashboard's index (``startup_index_s``).
3. Requests every page ``R`` times from one keep-alive connection and reports p50 and p99 in
   milliseconds: the overview, the newest and a deep page of builds, a search by crate name, a
   random build page, the newest and a random older page of checkpoints.
4. Submits one more build request over HTTP, signed by a builder, and times until the pages
   show it (``follow_ms``: the sequencer listener keeps the index level).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from logserver.core import canonical_json, note  # noqa: E402
from logserver.protocol import entries, signed  # noqa: E402
from logserver.sequencer import Sequencer  # noqa: E402
from logserver.storage import LogStore  # noqa: E402
from tests.support.dashboard_fixtures import BuiltJob, Plan, ProtocolFixture, recipe  # noqa: E402
from tests.support.dashboard_runner import RunnerProcess, wait_indexed  # noqa: E402
from tests.support.protocol_log import NETWORK_ID, ProtocolLog  # noqa: E402

BATCH = 256
WAVE = 40  # builds per wave of the fixture
MIX: tuple[Plan, ...] = ("reproduced",) * 6 + ("not-reproduced", "failed", "misbehaviour", "open")


def make_leaves(fixture: ProtocolFixture, count: int) -> tuple[list[bytes], list[BuiltJob]]:
    leaves: list[bytes] = []
    jobs: list[BuiltJob] = []
    wave = 0
    while len(leaves) < count:
        specs = [
            (f"crate-{(wave * WAVE + i) % 3000}", f"{wave}.{i}.0", MIX[i % len(MIX)])
            for i in range(WAVE)
        ]
        more, built = fixture.builds(len(leaves), specs)
        leaves += more
        jobs += built
        wave += 1
    return leaves, jobs


def store_leaves(data: Path, signer: note.Signer, leaves: list[bytes]) -> float:
    store = LogStore(data, signer.name)
    seq = Sequencer(store, lambda cp: note.sign_note(cp.to_bytes(), signer), max_batch=BATCH)
    seq.start()
    started = time.perf_counter()
    futures = [seq.submit_many(leaves[i : i + BATCH]) for i in range(0, len(leaves), BATCH)]
    for fut in futures:
        fut.result()
    elapsed = time.perf_counter() - started
    seq.stop()
    store.close()
    return elapsed


def rss_mb(proc: RunnerProcess) -> float:
    """The server process's resident memory (Linux), index included."""
    assert proc.proc is not None
    status = Path(f"/proc/{proc.proc.pid}/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(kib) / 1024


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_pages(
    client: httpx.Client, paths: dict[str, list[str]], requests: int
) -> dict[str, float]:
    figures: dict[str, float] = {}
    for name, choices in paths.items():
        samples = []
        for i in range(requests):
            started = time.perf_counter()
            r = client.get(choices[i % len(choices)])
            samples.append((time.perf_counter() - started) * 1000)
            assert r.status_code == 200, (name, r.status_code, r.text[:200])
        figures[f"{name}_p50_ms"] = statistics.median(samples)
        figures[f"{name}_p99_ms"] = percentile(samples, 0.99)
        print(
            f"{name:18} p50 {figures[f'{name}_p50_ms']:7.2f} ms"
            f"   p99 {figures[f'{name}_p99_ms']:7.2f} ms"
        )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000, help="log size to fill")
    parser.add_argument("--requests", type=int, default=300, help="requests per page kind")
    args = parser.parse_args()
    rng = random.Random(7)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        log = ProtocolLog(tmp)
        signer, fixture = log.signer, log.fixture
        started = time.perf_counter()
        leaves, jobs = make_leaves(fixture, args.entries)
        figures["entries"] = len(leaves)
        figures["builds"] = len(jobs)
        print(f"made {len(leaves)} leaves of {len(jobs)} builds in", end=" ")
        print(f"{time.perf_counter() - started:.1f} s")
        figures["store_s"] = store_leaves(log.data, signer, leaves)
        print(f"stored them durably in {figures['store_s']:.1f} s")

        proc = log.proc
        started = time.perf_counter()
        proc.start(timeout=120)
        try:
            wait_indexed(proc.url, len(leaves), timeout=600)
            figures["startup_index_s"] = time.perf_counter() - started
            print(f"server up and index folded {len(leaves)} leaves in", end=" ")
            print(f"{figures['startup_index_s']:.1f} s")
            figures["server_rss_mb"] = rss_mb(proc)
            print(f"server resident memory {figures['server_rss_mb']:.0f} MB")
            sample = rng.sample(jobs, min(len(jobs), 200))
            with httpx.Client(base_url=proc.url, timeout=30) as client:
                size = len(leaves)
                paths = {
                    "overview": ["/"],
                    "builds": ["/builds"],
                    "builds_deep": [f"/builds?page={len(jobs) // 50 - 1}"],
                    "search": [f"/builds?q=crate-{rng.randrange(3000)}" for _ in range(50)],
                    "build": [f"/build/{job.job}" for job in sample],
                    "checkpoints": ["/checkpoints"],
                    "checkpoints_old": [
                        f"/checkpoints?before={rng.randrange(1000, size)}" for _ in range(50)
                    ],
                }
                figures |= time_pages(client, paths, args.requests)
                request = entries.Request(recipe("late-crate", "1.0.0"))
                entry = signed.sign_entry(request, fixture.builders["builder-1"], NETWORK_ID)
                started = time.perf_counter()
                r = client.post("/add-entry", content=canonical_json.encode(entry.to_json()))
                assert r.status_code == 200, r.text
                wait_indexed(proc.url, size + 1)
                figures["follow_ms"] = (time.perf_counter() - started) * 1000
                print("a new build request appended and indexed in", end=" ")
                print(f"{figures['follow_ms']:.0f} ms")
        finally:
            proc.stop()
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
