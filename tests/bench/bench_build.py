"""Benchmark of the builder: image bootstrap, toolchain identity, and crate builds.

Run: ``python tests/bench/bench_build.py [--skip-cold]`` (needs root, debootstrap, Docker, the
rustup toolchain 1.95.0 and crates.io). It prints its figures and, last, one JSON line.

- image_cold_s: debootstrap + clean + digest + tar + ``docker import`` of a fresh root file
  system (imported under a throwaway tag, then removed); also reports whether its digest equals
  the installed image's (``rootfs_digest_reproducible``).
- image_cached_s: ``ensure_build_image`` when the image is present.
- toolchain_cold_s / toolchain_warm_s: hashing the toolchain's files / the cached lookup.
- itoa_build_s / hello_bin_build_s: one sandboxed build each (sources cached, image present),
  and whether a second build reproduced the output digest.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from builder import fstree  # noqa: E402
from builder.build import build_crate, resolve_recipe  # noqa: E402
from builder.image import (  # noqa: E402
    ImageConfig,
    bootstrap_rootfs,
    clean_rootfs,
    docker_client,
    ensure_build_image,
    write_rootfs_tar,
)
from builder.toolchain import find_toolchain_dir, toolchain_identity  # noqa: E402
from tests.support.builder_helpers import pack_fixture  # noqa: E402


def _quiet(line: str) -> None:
    del line


def cold_bootstrap(installed_digest: str) -> dict[str, object]:
    client = docker_client()
    with tempfile.TemporaryDirectory(prefix="bench-image-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "rootfs"
        started = time.monotonic()
        bootstrap_rootfs(ImageConfig(), root, _quiet)
        debootstrap_s = time.monotonic() - started
        clean_rootfs(root)
        digest = fstree.tree_digest(root)
        tar_path = Path(tmp) / "rootfs.tar"
        write_rootfs_tar(root, tar_path)
        client.api.import_image_from_file(
            str(tar_path), repository="synchronicity-bench", tag="cold"
        )
        total_s = time.monotonic() - started
        client.images.remove("synchronicity-bench:cold", force=True)
    client.close()
    return {
        "image_cold_s": round(total_s, 1),
        "debootstrap_s": round(debootstrap_s, 1),
        "rootfs_digest_reproducible": digest == installed_digest,
    }


def timed_build(spec: str | Path, out: Path) -> dict[str, object]:
    client = docker_client()
    recipe = resolve_recipe(spec, client=client, progress=_quiet)
    started = time.monotonic()
    first = build_crate(recipe, out / "one", client=client, progress=_quiet)
    elapsed = time.monotonic() - started
    second = build_crate(recipe, out / "two", client=client, progress=_quiet)
    client.close()
    if not first.ok:
        raise SystemExit(f"build of {spec} failed: {first.detail}")
    return {
        "seconds": round(elapsed, 2),
        "reproduced": first.output_digest == second.output_digest,
        "output_digest": first.output_digest,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold bootstrap")
    arguments = parser.parse_args()
    figures: dict[str, object] = {}

    started = time.monotonic()
    image = ensure_build_image(progress=_quiet)
    figures["image_cached_s"] = round(time.monotonic() - started, 3)
    print(f"build image {image.tag}, cached lookup {figures['image_cached_s']}s")
    if not arguments.skip_cold:
        figures.update(cold_bootstrap(image.rootfs_sha256))
        print(
            f"cold bootstrap {figures['image_cold_s']}s (debootstrap {figures['debootstrap_s']}s),"
            f" digest reproducible: {figures['rootfs_digest_reproducible']}"
        )

    toolchain_dir = find_toolchain_dir("1.95.0")
    started = time.monotonic()
    fstree.tree_digest(toolchain_dir, owners=False)
    figures["toolchain_cold_s"] = round(time.monotonic() - started, 2)
    toolchain_identity(toolchain_dir)
    started = time.monotonic()
    toolchain_identity(toolchain_dir)
    figures["toolchain_warm_s"] = round(time.monotonic() - started, 3)
    print(
        f"toolchain digest cold {figures['toolchain_cold_s']}s, warm {figures['toolchain_warm_s']}s"
    )

    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        itoa = timed_build("itoa@1.0.11", Path(tmp) / "itoa")
        figures["itoa_build_s"] = itoa["seconds"]
        figures["itoa_reproduced"] = itoa["reproduced"]
        print(f"itoa@1.0.11 build {itoa['seconds']}s, reproduced: {itoa['reproduced']}")
        crate = pack_fixture("hello-bin", Path(tmp))
        hello = timed_build(crate, Path(tmp) / "hello")
        figures["hello_bin_build_s"] = hello["seconds"]
        figures["hello_bin_reproduced"] = hello["reproduced"]
        print(f"hello-bin build {hello['seconds']}s, reproduced: {hello['reproduced']}")

    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
