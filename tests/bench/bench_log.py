"""Benchmark of the log: durable appends, proofs, HTTP appends and offline verification.

Run: ``python tests/bench/bench_log.py [--quick]``. It prints its figures and, last, one JSON
line. Everything runs on this machine: LMDB and SQLite files in a temporary directory, a real
log server process on 127.0.0.1 driven by a load generator in another process.

- durable_entries_per_s: entries through the sequencer in submissions of 256 (one LMDB
  transaction, one signed checkpoint and one flush per batch), in process.
- pymerkle_entries_per_s: the same entries into pymerkle's SqliteTree, 256 per transaction,
  with the root computed after each batch as our log does for its checkpoint.
- inclusion_proof_us_p50_at_1e6: an inclusion proof read from LMDB at tree size 1,000,000.
- http_add_entry_per_s / http_add_entry_p99_ms: POST /add-entry from 32 concurrent
  keep-alive connections for a fixed time, each request answered only once durable.
- offline_verify_ms: parse and verify a tlog-proof whose checkpoint carries the log's
  signature and three witness cosignatures, against a 3-of-3 policy, p50.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from logserver.core import cosignature, note, proof  # noqa: E402
from logserver.core.checkpoint import Checkpoint  # noqa: E402
from logserver.core.policy import Policy  # noqa: E402
from logserver.sequencer import Sequencer  # noqa: E402
from logserver.storage import LogStore  # noqa: E402
from synchronicity.launcher import ServerProcess  # noqa: E402

BATCH = 256
ORIGIN = "bench.test/log"


def entries(count: int, size: int = 128) -> list[bytes]:
    base = os.urandom(size)
    return [i.to_bytes(8, "big") + base[8:] for i in range(count)]


def bench_durable(tmp: Path, data: list[bytes]) -> float:
    signer = note.Signer(ORIGIN, os.urandom(32))
    store = LogStore(tmp / "durable", ORIGIN)
    seq = Sequencer(store, lambda cp: note.sign_note(cp.to_bytes(), signer), max_batch=BATCH)
    seq.start()
    started = time.perf_counter()
    futures = [seq.submit_many(data[i : i + BATCH]) for i in range(0, len(data), BATCH)]
    for f in futures:
        f.result()
    elapsed = time.perf_counter() - started
    seq.stop()
    assert store.size() == len(data)
    store.close()
    return len(data) / elapsed


def bench_pymerkle(tmp: Path, data: list[bytes]) -> float:
    from pymerkle import SqliteTree

    tree = SqliteTree(str(tmp / "pymerkle.db"))
    started = time.perf_counter()
    for i in range(0, len(data), BATCH):
        tree.append_entries(data[i : i + BATCH])
        tree.get_root()
    elapsed = time.perf_counter() - started
    tree.close()
    return len(data) / elapsed


def build_million(tmp: Path, size: int) -> tuple[LogStore, note.Signer]:
    signer = note.Signer(ORIGIN, os.urandom(32))
    store = LogStore(tmp / "million", ORIGIN)
    data = entries(size, 64)
    chunk = 4096
    for i in range(0, size, chunk):
        store.append_batch(data[i : i + chunk], lambda cp: note.sign_note(cp.to_bytes(), signer))
    return store, signer


def bench_inclusion(store: LogStore, size: int, samples: int = 5000) -> float:
    import random

    rng = random.Random(1)
    timings = []
    for _ in range(samples):
        index = rng.randrange(size)
        started = time.perf_counter()
        store.inclusion_proof(index, size)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1e6


def bench_offline_verify(store: LogStore, signer: note.Signer, size: int) -> float:
    witnesses = [cosignature.CosignatureSigner(f"w{i}.test", os.urandom(32)) for i in range(3)]
    root = store.tree_hash(size)
    body = Checkpoint(ORIGIN, size, root).to_bytes()
    signed = note.sign_note(body, signer, *witnesses)
    index = size // 3
    tlog_proof = proof.TlogProof(index, tuple(store.inclusion_proof(index, size)), signed)
    file_bytes = tlog_proof.to_bytes()
    entry = store.entry(index)
    policy = Policy.for_network(signer.vkey, [(w.name, w.vkey) for w in witnesses], 3)
    policy = Policy.parse(policy.to_bytes())
    timings = []
    for _ in range(500):
        started = time.perf_counter()
        verified = proof.verify_proof(file_bytes, entry, policy)
        timings.append(time.perf_counter() - started)
    assert len(verified.cosigners) == 3
    return statistics.median(timings) * 1000


# ----- HTTP load generator (runs in its own process) ----------------------------------------


async def _client(host: str, port: int, deadline: float, latencies: list[float], wid: int) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    sent = 0
    try:
        while time.perf_counter() < deadline:
            body = f"http bench {wid} {sent}".encode()
            head = (
                f"POST /add-entry HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            started = time.perf_counter()
            writer.write(head + body)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not status.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer {status!r}")
            sent += 1
    finally:
        writer.close()
    return sent


def _load(url: str, clients: int, seconds: float, out: multiprocessing.Queue[object]) -> None:
    host, port = url.removeprefix("http://").rsplit(":", 1)

    async def main() -> tuple[int, list[float]]:
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds
        counts = await asyncio.gather(
            *(_client(host, int(port), deadline, latencies, w) for w in range(clients))
        )
        return sum(counts), latencies

    started = time.perf_counter()
    total, latencies = asyncio.run(main())
    out.put((total, time.perf_counter() - started, latencies))


def bench_http(tmp: Path, seconds: float) -> tuple[float, float, float]:
    key = tmp / "http.key"
    key.write_text(note.generate_key(ORIGIN)[0] + "\n")
    server = ServerProcess(
        [
            *("log", "serve", "--key", str(key), "--data", str(tmp / "http")),
            *("--listen", "127.0.0.1:0", "--open", "--log-level", "warning"),
        ]
    ).start()
    try:
        out: multiprocessing.Queue[object] = multiprocessing.Queue()
        proc = multiprocessing.Process(target=_load, args=(server.url, 32, seconds, out))
        proc.start()
        result = out.get(timeout=seconds + 60)
        proc.join()
    finally:
        server.stop()
    assert isinstance(result, tuple)
    total: int = result[0]
    elapsed: float = result[1]
    latencies: list[float] = sorted(result[2])
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    return total / elapsed, p50, p99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (for a smoke run)")
    args = parser.parse_args()
    n_durable = 51_200 if args.quick else 256_000
    n_tree = 100_000 if args.quick else 1_000_000
    seconds = 3.0 if args.quick else 10.0
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-log-") as d:
        tmp = Path(d)
        data = entries(n_durable)
        figures["durable_entries_per_s"] = bench_durable(tmp, data)
        print(f"durable appends, batches of {BATCH}: {figures['durable_entries_per_s']:,.0f}/s")
        figures["pymerkle_entries_per_s"] = bench_pymerkle(tmp, data)
        print(f"pymerkle SqliteTree, same batches: {figures['pymerkle_entries_per_s']:,.0f}/s")

        started = time.perf_counter()
        store, signer = build_million(tmp, n_tree)
        print(f"built a {n_tree:,}-entry log in {time.perf_counter() - started:.1f} s")
        key = "inclusion_proof_us_p50_at_1e6"
        figures[key] = bench_inclusion(store, n_tree)
        print(f"inclusion proof at size {n_tree:,}: p50 {figures[key]:.1f} µs")
        figures["offline_verify_ms"] = bench_offline_verify(store, signer, n_tree)
        print(f"offline verify (log + 3 cosignatures): p50 {figures['offline_verify_ms']:.3f} ms")
        store.close()

        rate, p50, p99 = bench_http(tmp, seconds)
        figures["http_add_entry_per_s"] = rate
        figures["http_add_entry_p50_ms"] = p50
        figures["http_add_entry_p99_ms"] = p99
        print(f"HTTP add-entry, 32 clients: {rate:,.0f}/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    figures["tree_size_for_proofs"] = n_tree
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
