"""Benchmark of many jobs at once: a campaign of 20 crates against 20 sequential rebuilds.

Run: ``python tests/bench/bench_campaign.py [--crates N] [--max-builds N] [--skip-sequential]``

With a warm build image and the crates and indexes cached (every crate is pinned once first):

- sequential: ``synchronicity rebuild NAME@VERSION --json`` for each crate, one after the
  other, each on the local network of one home (each run starts and stops that network, as a
  user's runs do); the sum of their wall times, and the sum without the network starts;
- campaign: ``synchronicity campaign`` of the same crates on a new local network of four
  builders (``--max-builds`` each; with more than 1, run by ``network up``), its wall time,
  and each builder's utilisation: the share of 0.25 s samples of its ``/metrics`` in which
  ``witness_builds_running`` was at least 1, over the whole campaign and over the span from
  the first build to the last, and its ``witness_build_seconds_total`` over the wall time.

Figures first, one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from builder.build import resolve_recipe  # noqa: E402
from builder.image import ensure_build_image  # noqa: E402
from synchronicity.localnet import LocalNetwork  # noqa: E402

CRATES = [
    "itoa@1.0.11",
    "fnv@1.0.7",
    "cfg-if@1.0.0",
    "lazy_static@1.5.0",
    "static_assertions@1.1.0",
    "scopeguard@1.2.0",
    "matches@0.1.10",
    "byteorder@1.5.0",
    "ryu@1.0.18",
    "heck@0.5.0",
    "autocfg@1.4.0",
    "version_check@0.9.5",
    "adler@1.0.2",
    "strsim@0.11.1",
    "unicode-width@0.1.13",
    "memchr@2.7.4",
    "glob@0.3.1",
    "shlex@1.3.0",
    "percent-encoding@2.3.1",
    "unicode-ident@1.0.12",
]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "synchronicity", *args], capture_output=True, text=True, check=False
    )


class Load:
    """The machine's mean 1-minute load average over a phase (others' work skews figures)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(5.0):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        return round(sum(self.samples) / max(1, len(self.samples)), 2)


def sequential(crates: list[str], home: Path) -> tuple[float, float, list[float]]:
    """(sum of wall times, the same without network starts, each wall time)."""
    walls, without_start = [], 0.0
    for spec in crates:
        started = time.monotonic()
        done = cli("rebuild", spec, "--home", str(home), "--out", str(home / "out"), "--json")
        wall = time.monotonic() - started
        if done.returncode != 0:
            raise SystemExit(f"rebuild {spec} failed ({done.returncode}): {done.stderr[-2000:]}")
        timings = json.loads(done.stdout)["timings"]
        walls.append(wall)
        without_start += wall - timings["network_s"]
        split = ", ".join(f"{k.removesuffix('_s')} {v:.1f}" for k, v in timings.items())
        print(f"  rebuild {spec}: {wall:.1f} s ({split})", flush=True)
    return sum(walls), without_start, walls


class Utilisation:
    """Samples each witness's running builds and build seconds every 0.25 s."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.samples: list[tuple[float, list[float]]] = []
        self.build_seconds: dict[str, list[float]] = {url: [] for url in urls}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _metric(self, text: str, name: str) -> float | None:
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def _run(self) -> None:
        with httpx.Client(timeout=1.0) as http:
            while not self._stop.wait(0.25):
                running = []
                for url in self.urls:
                    try:
                        text = http.get(url + "/metrics").text
                    except httpx.HTTPError:
                        running.append(0.0)
                        continue
                    running.append(self._metric(text, "witness_builds_running") or 0.0)
                    seconds = self._metric(text, "witness_build_seconds_total")
                    if seconds is not None:
                        self.build_seconds[url].append(seconds)
                self.samples.append((time.monotonic(), running))

    def __enter__(self) -> Utilisation:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self, wall: float) -> list[dict[str, float]]:
        busy_any = [i for i, (_, r) in enumerate(self.samples) if any(r)]
        span = self.samples[busy_any[0] : busy_any[-1] + 1] if busy_any else []
        per_builder = []
        for k, url in enumerate(self.urls):
            seconds = self.build_seconds[url]
            per_builder.append(
                {
                    "busy_share": round(_share(self.samples, k), 3),
                    "busy_share_while_building": round(_share(span, k), 3),
                    "mean_running": round(
                        sum(r[k] for _, r in self.samples) / max(1, len(self.samples)), 2
                    ),
                    "build_seconds_over_wall": round(
                        (seconds[-1] - seconds[0]) / wall if len(seconds) > 1 else 0.0, 3
                    ),
                }
            )
        return per_builder


def _share(samples: list[tuple[float, list[float]]], k: int) -> float:
    return sum(1 for _, r in samples if r[k] >= 1) / max(1, len(samples))


def campaign(
    crates: list[str], home: Path, max_builds: int
) -> tuple[float, list[dict[str, float]]]:
    net = LocalNetwork.create(home / "network")
    up = None
    if max_builds > 1:
        up = subprocess.Popen(
            [sys.executable, "-m", "synchronicity", "network", "up", "--home", str(home)]
            + ["--max-builds", str(max_builds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert up.stdout is not None
        for _ in range(3):
            up.stdout.readline()
    listing = home / "crates.txt"
    listing.write_text("\n".join(crates) + "\n")
    out = home / "out"
    try:
        with Utilisation([w.url for w in net.config.witnesses]) as sampler:
            started = time.monotonic()
            done = cli("campaign", str(listing), "--home", str(home), "--out", str(out), "--json")
            wall = time.monotonic() - started
    finally:
        if up is not None:
            up.terminate()
            up.communicate(timeout=60)
    if done.returncode != 0:
        raise SystemExit(f"campaign failed ({done.returncode}): {done.stderr[-3000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    if summary["reproduced"] != len(crates):
        raise SystemExit(f"not all reproduced: {json.dumps(summary)[:3000]}")
    return wall, sampler.report(wall)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crates", type=int, default=20, help="how many of the list (<= 20)")
    parser.add_argument("--max-builds", type=int, default=1, help="builds a builder runs at once")
    parser.add_argument("--skip-sequential", action="store_true", help="the campaign only")
    args = parser.parse_args()
    crates = CRATES[: args.crates]
    ensure_build_image(progress=lambda line: None)
    for spec in crates:  # warm: the crates, their indexes and lockfile resolution
        resolve_recipe(spec, progress=lambda line: None)
    figures: dict[str, object] = {"crates": len(crates), "max_builds": args.max_builds}
    with tempfile.TemporaryDirectory(prefix="bench-campaign-") as d:
        if not args.skip_sequential:
            print(f"{len(crates)} sequential rebuilds:", flush=True)
            with Load() as load:
                total, without_start, walls = sequential(crates, Path(d) / "sequential")
            figures |= {
                "sequential_sum_s": round(total, 1),
                "sequential_sum_without_network_start_s": round(without_start, 1),
                "sequential_median_s": round(sorted(walls)[len(walls) // 2], 1),
                "sequential_mean_load": load.mean,
            }
            print(
                f"sum of {len(crates)} rebuilds: {total:.1f} s ({without_start:.1f} s without "
                f"their network starts; mean load average {load.mean})",
                flush=True,
            )
        with Load() as load:
            wall, builders = campaign(crates, Path(d) / "campaign", args.max_builds)
    figures |= {"campaign_s": round(wall, 1), "campaign_mean_load": load.mean}
    figures["utilisation"] = builders
    print(
        f"campaign of {len(crates)} crates (--max-builds {args.max_builds}): {wall:.1f} s "
        f"(mean load average {load.mean})"
    )
    if "sequential_sum_s" in figures:
        speedup = float(str(figures["sequential_sum_s"])) / wall
        figures["speedup"] = round(speedup, 2)
        print(f"speed-up over the sequential sum: {speedup:.2f}x")
    for k, builder in enumerate(builders):
        print(
            f"builder {k + 1}: busy {builder['busy_share']:.0%} of the campaign, "
            f"{builder['busy_share_while_building']:.0%} from the first build to the last; "
            f"mean running {builder['mean_running']}; build seconds / wall "
            f"{builder['build_seconds_over_wall']}"
        )
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
