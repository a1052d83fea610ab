"""Benchmark: what a host variation costs a build (spec/builds.md 4.1).

Run: ``python tests/bench/bench_variation.py [NAME@VERSION] [--runs N]`` (default
serde_json@1.0.120, 3 runs). Needs Docker and crates.io.

The crate is pinned once (``resolve_recipe``) and built ``--runs`` times under each of the four
variations its job gives a network of four (all CPUs or 1, the true clock or shifted; the host
name comes with them), the variations interleaved run by run so that a change of the host's
load hits all alike. The time of a build is the sandbox's: container created to container
removed (sources are prepared before, the same for all). Each variation's median and minimum
are compared with the plain one (all CPUs, true clock). The CPU time each build's container
used (its cgroup's ``cpuacct.usage``, polled while it runs) does not depend on the host's load:
on an idle host a 1-CPU build takes about that long, and CPU time / wall time is the
parallelism a build got. The load average is printed: on a shared host, wall times say as much
about the neighbours as about the build. The bench also checks that every build gave the same
output digest: the variations cost time, never agreement. Figures first, one JSON line last.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from builder.build import build_crate, resolve_recipe  # noqa: E402
from builder.container import host_cpus  # noqa: E402
from builder.image import docker_client  # noqa: E402
from builder.sandbox import SandboxLimits  # noqa: E402
from builder.variation import Variation, assignments  # noqa: E402


def _quiet(line: str) -> None:
    del line


class CpuMeter(threading.Thread):
    """Polls the CPU time of the build containers of ``job`` (cgroup v1 cpuacct) until stopped;
    ``seconds`` is the last reading of the last one seen."""

    def __init__(self, client: docker.DockerClient, job: str) -> None:
        super().__init__(daemon=True)
        self.client, self.job = client, job
        self.seconds = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        label = {"label": f"synchronicity.build={self.job}"}
        while not self.done.is_set():
            for container in self.client.api.containers(filters=label):
                usage = Path(f"/sys/fs/cgroup/cpuacct/docker/{container['Id']}/cpuacct.usage")
                with contextlib.suppress(OSError, ValueError):  # gone, or not cgroup v1
                    self.seconds = int(usage.read_text()) / 1e9
            self.done.wait(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default="serde_json@1.0.120")
    parser.add_argument("--runs", type=int, default=3, help="builds per variation")
    args = parser.parse_args()
    client = docker_client()
    recipe = resolve_recipe(args.spec, client=client, progress=_quiet)
    by_kind: dict[tuple[bool, bool], Variation] = {}
    for variation in assignments(recipe.job_id, 4):
        by_kind[(variation.cpus == 1, variation.clock_days != 0)] = variation
    names = {
        (False, False): "all CPUs, true clock",
        (True, False): "1 CPU, true clock",
        (False, True): "all CPUs, shifted clock",
        (True, True): "1 CPU, shifted clock",
    }
    limits = SandboxLimits()
    seconds: dict[tuple[bool, bool], list[float]] = {kind: [] for kind in names}
    cpu: dict[tuple[bool, bool], list[float]] = {kind: [] for kind in names}
    digests: set[str | None] = set()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-variation-") as tmp:
        build_crate(recipe, Path(tmp) / "warm-up", client=client, progress=_quiet)
        for run in range(args.runs):
            for kind, label in names.items():
                out = Path(tmp) / f"{run}-{int(kind[0])}{int(kind[1])}"
                meter = CpuMeter(client, recipe.job_id)
                meter.start()
                result = build_crate(
                    recipe, out, limits=limits, client=client, variation=by_kind[kind],
                    progress=_quiet,
                )  # fmt: skip
                meter.done.set()
                meter.join()
                cpu[kind].append(meter.seconds)
                if not result.ok:
                    raise SystemExit(f"build failed under {by_kind[kind].spec()}: {result.detail}")
                seconds[kind].append(result.seconds)
                digests.add(result.output_digest)
                print(
                    f"run {run + 1} {label:<24} {result.seconds:6.1f} s, "
                    f"CPU {meter.seconds:6.1f} s, load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    load_after = os.getloadavg()[0]
    plain = statistics.median(seconds[(False, False)])
    plain_min = min(seconds[(False, False)])
    print(
        f"\n{recipe.spec}, {args.runs} builds per variation, host CPUs {host_cpus(client)}, "
        f"CPU limit {limits.cpus}, load average {load_before:.1f} -> {load_after:.1f}"
    )
    figures: dict[str, object] = {"crate": recipe.spec, "runs": args.runs}
    for kind, label in names.items():
        median, least = statistics.median(seconds[kind]), min(seconds[kind])
        cpu_median = statistics.median(cpu[kind])
        print(
            f"{label:<24} wall median {median:6.1f} s ({median / plain:.2f}x, "
            f"{median - plain:+.1f} s), min {least:6.1f} s ({least / plain_min:.2f}x), "
            f"max {max(seconds[kind]):6.1f} s; CPU median {cpu_median:6.1f} s"
        )
        key = label.replace(", ", "_").replace(" ", "_")
        figures[f"{key}_median_s"] = round(median, 2)
        figures[f"{key}_min_s"] = round(least, 2)
        figures[f"{key}_ratio"] = round(median / plain, 3)
        figures[f"{key}_min_ratio"] = round(least / plain_min, 3)
        figures[f"{key}_cpu_s"] = round(cpu_median, 2)
    same = len(digests) == 1
    print(f"output digests: {'one for every build' if same else sorted(map(str, digests))}")
    figures.update(
        same_digest=same,
        host_cpus=host_cpus(client),
        load_before=round(load_before, 2),
        load_after=round(load_after, 2),
        time=int(time.time()),
    )
    print(json.dumps(figures, sort_keys=True))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
