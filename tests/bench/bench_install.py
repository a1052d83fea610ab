"""Benchmark: ``synchronicity install`` of a reproduced binary against ``cargo install``.

Run: ``python tests/bench/bench_install.py [NAME@VERSION] [--runs N]`` (default names@0.14.0,
a small crates.io binary crate: clap 3 and rand). Needs Docker and crates.io.

A new local network (a log and four builder-witness processes) rebuilds the crate once
(``rebuild --network``: the warm-up, timed but not the point). Then, on that warm network,
``synchronicity install NAME@VERSION --network CONFIG --root TMP`` runs ``--runs`` times, each
into a new root: index look-up, proof, offline verification, download and check of the binary,
atomic install; each time the installed binary is run once (``--help``) to show it works.
Against it, ``cargo install --root TMP NAME@VERSION`` with a new target directory (it compiles;
crates.io downloads are cached after its first run, so its second run is measured too). Wall
times of the whole commands, process start included. Figures first, one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from synchronicity.localnet import LocalNetwork  # noqa: E402


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env, cwd=ROOT)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default="names@0.14.0")
    parser.add_argument("--runs", type=int, default=5, help="installs to time")
    parser.add_argument(
        "--features",
        default="application",
        help="features for the rebuild (default %(default)s: names' docs.rs metadata asks for no "
        "default features, which builds no binary; cargo install takes the defaults, the same); "
        "'' for none",
    )
    args = parser.parse_args()
    name = args.spec.partition("@")[0]
    figures: dict[str, float] = {}
    synchronicity = [sys.executable, "-m", "synchronicity"]
    with tempfile.TemporaryDirectory(prefix="bench-install-") as d:
        work = Path(d)
        net = LocalNetwork.create(work / "network").start()
        config = str(work / "network" / "network.json")
        try:
            features = ["--features", args.features] if args.features else []
            figures["rebuild_warmup_s"], _ = timed(
                [*synchronicity, "rebuild", args.spec, "--network", config, *features]
                + ["--out", str(work / "rebuilt"), "--json"]
            )
            print(f"warm-up: rebuild {args.spec} on a new local network: "
                  f"{figures['rebuild_warmup_s']:.1f} s", flush=True)  # fmt: skip
            installs = []
            for run in range(args.runs):
                root = work / f"root-{run}"
                elapsed, _ = timed(
                    [*synchronicity, "install", args.spec, "--network", config, "--root", str(root)]
                )
                installs.append(elapsed)
                timed([str(root / "bin" / name), "--help"])
            figures["install_median_s"] = statistics.median(installs)
            figures["install_min_s"] = min(installs)
            figures["install_max_s"] = max(installs)
            startup, _ = timed([*synchronicity, "--help"])
            figures["command_start_s"] = startup
            print(
                f"synchronicity install (fetch + verify + install), {args.runs} runs: median "
                f"{figures['install_median_s']:.2f} s, min {figures['install_min_s']:.2f} s, "
                f"max {figures['install_max_s']:.2f} s (of which starting the command: "
                f"{startup:.2f} s)",
                flush=True,
            )
        finally:
            net.stop()
        for label in ("cargo_install_first_s", "cargo_install_again_s"):
            target = work / f"target-{label}"
            env = {**os.environ, "CARGO_TARGET_DIR": str(target)}
            cargo = ["cargo", "install", "--root", str(work / f"cargo-{label}"), args.spec]
            figures[label], _ = timed(cargo, env)
    first, again = figures["cargo_install_first_s"], figures["cargo_install_again_s"]
    print(
        f"cargo install --root TMP {args.spec} (compiles, new target directory): "
        f"{first:.1f} s, then {again:.1f} s with crates.io downloads cached"
    )
    print(f"install is {again / figures['install_median_s']:.0f}x faster than cargo install")
    print(
        json.dumps(
            {"crate": args.spec, "runs": args.runs, "cpus": os.cpu_count()}
            | {k: round(v, 3) for k, v in figures.items()}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
