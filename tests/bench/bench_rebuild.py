"""Benchmark of the main job: ``synchronicity rebuild`` end to end, cold and warm.

Run: ``python tests/bench/bench_rebuild.py [CRATE@VERSION] [--keep-image]``
(default itoa@1.0.11, the Quick-start crate).

Cold: the build image is removed from Docker first (unless --keep-image) and bootstrapped
again (debootstrap + import), then ``rebuild`` runs on a new local network. Warm: the image and
the crate are cached, and ``rebuild`` runs on another new local network. Each run is split into
image, network start, recipe (fetch and pin), build + protocol (request to verdict) and publish
(verdict to a quorum-cosigned checkpoint). Figures first, one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from builder.image import docker_client, ensure_build_image  # noqa: E402


def remove_build_images() -> None:
    client = docker_client()
    for image in client.images.list(name="synchronicity-build"):
        client.images.remove(str(image.id), force=True)


def rebuild(spec: str, home: Path) -> dict[str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "synchronicity", "rebuild", spec]
        + ["--home", str(home), "--out", str(home / "out"), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"rebuild failed ({done.returncode}): {done.stderr[-2000:]}")
    timings: dict[str, float] = json.loads(done.stdout)["timings"]
    timings["total_s"] = time.monotonic() - started
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default="itoa@1.0.11")
    parser.add_argument("--keep-image", action="store_true", help="do not measure bootstrap")
    args = parser.parse_args()
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-rebuild-") as d:
        if not args.keep_image:
            remove_build_images()
        started = time.monotonic()
        ensure_build_image(progress=lambda line: None)
        figures["cold_image_s"] = time.monotonic() - started
        for label, home in (("cold", Path(d) / "cold"), ("warm", Path(d) / "warm")):
            timings = rebuild(args.spec, home)
            for key, value in timings.items():
                figures[f"{label}_{key}"] = value
            print(
                f"{label}: {timings['total_s']:.1f} s in all = network {timings['network_s']:.1f}"
                f" + recipe/fetch {timings['recipe_s']:.1f}"
                f" + build and protocol {timings['build_and_protocol_s']:.1f}"
                f" + publish {timings['publish_s']:.1f} (+ process start and stop)",
                flush=True,
            )
    figures["cold_total_with_image_s"] = figures["cold_image_s"] + figures["cold_total_s"]
    print(f"cold image bootstrap: {figures['cold_image_s']:.1f} s")
    print(json.dumps({"crate": args.spec} | {k: round(v, 3) for k, v in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
