"""Benchmark: the whole build protocol on 4 builders against the same 4 builds run bare.

Run: ``python tests/bench/bench_protocol.py [CRATE@VERSION]`` (default serde_json@1.0.120).
Bare: four sandboxed ``cargo build`` runs of the pinned recipe, started together in the same
image (what the four builders do, without the log). Protocol: a local network of one log and
four builder-witness processes; the wall time from the request's submission to its verdict
(builds, commits, close, reveals and verdict, each step acting only on cosigned checkpoints).
The overhead is the difference. Figures first, one JSON line last.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from builder.build import build_crate, resolve_recipe  # noqa: E402
from builder.recipe import Recipe  # noqa: E402
from logserver.client import LogClient  # noqa: E402
from synchronicity.client import BuilderClient, follow  # noqa: E402
from synchronicity.localnet import LocalNetwork  # noqa: E402


def bare(recipe: Recipe, tmp: Path) -> float:
    errors: list[str] = []

    def one(i: int) -> None:
        result = build_crate(recipe, tmp / f"bare-{i}", progress=lambda line: None)
        if not result.ok:
            errors.append(str(result.reason))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"bare build failed: {errors}")
    return time.monotonic() - started


def protocol(recipe: Recipe, tmp: Path) -> float:
    net = LocalNetwork.create(tmp / "net").start()
    try:
        with (
            LogClient(net.log_url, timeout=60.0) as log,
            BuilderClient(net.config.witnesses[0].url) as builder,
        ):
            started = time.monotonic()
            job, index = builder.request(recipe)
            _, verdict = follow(log, job, index, 3600, lambda line: None)
            elapsed = time.monotonic() - started
            outcome = getattr(verdict.entry, "outcome", None)
            if outcome != "reproduced":
                raise SystemExit(f"verdict {outcome}")
            return elapsed
    finally:
        net.stop()


def main() -> int:
    spec = sys.argv[1] if len(sys.argv) > 1 else "serde_json@1.0.120"
    with tempfile.TemporaryDirectory(prefix="bench-protocol-") as d:
        tmp = Path(d)
        recipe = resolve_recipe(spec, progress=lambda line: None)
        build_crate(recipe, tmp / "warm-up", progress=lambda line: None)  # caches sources
        bare_s = bare(recipe, tmp)
        print(f"{spec}: 4 bare sandboxed builds together: {bare_s:.2f} s", flush=True)
        protocol_s = protocol(recipe, tmp)
        print(f"{spec}: request to verdict on 4 builders: {protocol_s:.2f} s")
    overhead = protocol_s - bare_s
    print(f"protocol overhead: {overhead:.2f} s ({100 * overhead / bare_s:.1f}% of the builds)")
    print(
        json.dumps(
            {
                "crate": spec,
                "bare_4_builds_s": round(bare_s, 3),
                "protocol_s": round(protocol_s, 3),
                "overhead_s": round(overhead, 3),
                "overhead_pct": round(100 * overhead / bare_s, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
