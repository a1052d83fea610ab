"""Benchmark of the content-addressed build environment: sizes, export, upload, cold imports.

Run: ``python tests/bench/bench_environment.py [--cold dir,log]`` (needs Docker, this host's build
image and the rustup toolchain 1.95.0). It prints its figures and, last, one JSON line.

- rootfs_*/toolchain_*: the canonical archives (plain) and their gzip exports, in MiB, and the
  number of 32 MiB chunks each is in a blob store;
- export_s: ``image export`` of both archives (gzip, two threads);
- upload_s: both archives into a local log's blob store (chunks signed by a builder);
- cold_dir_s / cold_log_s: a cold host (its own cache and image repositories, no toolchain)
  obtaining the environment from the export directory / from the log's blob store, verifying
  it and building the environment image; with the steps' times (fetch+verify of each archive,
  rootfs import, toolchain bake and the rustc check).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from builder.build import DEFAULT_TOOLCHAIN  # noqa: E402
from builder.envarchive import KIND_ROOTFS, KIND_TOOLCHAIN, ArchiveIndex  # noqa: E402
from builder.environment import (  # noqa: E402
    EnvironmentOptions,
    EnvironmentSpec,
    archive_index,
    ensure_environment,
    environment_pins,
    export_environment,
    upload_environment,
)
from builder.envsource import BlobSource, DirectorySource, EnvironmentSource  # noqa: E402
from builder.image import docker_client, ensure_build_image  # noqa: E402
from builder.toolchain import find_toolchain_dir  # noqa: E402
from logserver.client import LogClient  # noqa: E402
from logserver.core import note  # noqa: E402
from synchronicity.localnet import LocalNetwork  # noqa: E402

MIB = 1 << 20


def _quiet(line: str) -> None:
    del line


class Steps:
    """Progress lines with their times, to tell the steps of a cold import apart."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.lines: list[tuple[float, str]] = []

    def __call__(self, line: str) -> None:
        self.lines.append((time.monotonic() - self.started, line))

    def at(self, pattern: str) -> float:
        return next(t for t, line in self.lines if re.search(pattern, line))


def cold_import(
    spec: EnvironmentSpec, sources: tuple[EnvironmentSource, ...], tmp: Path, name: str
) -> dict[str, float]:
    """ensure_environment as a cold host: own cache and image prefix, no local toolchain."""
    saved = {
        key: os.environ.get(key) for key in ("SYNCHRONICITY_CACHE", "SYNCHRONICITY_IMAGE_PREFIX")
    }
    prefix = f"bench{name}{os.getpid()}"
    os.environ["SYNCHRONICITY_CACHE"] = str(tmp / f"cache-{name}")
    os.environ["SYNCHRONICITY_IMAGE_PREFIX"] = prefix
    client = docker_client()
    steps = Steps()
    try:
        options = EnvironmentOptions(sources=sources, toolchain_dir=tmp / "no-toolchain")
        ensure_environment(spec, client=client, options=options, progress=steps)
        total = time.monotonic() - steps.started
        fetched_rootfs = steps.at("the rootfs .* verified")
        imported = steps.at("fetching the toolchain")
        fetched_toolchain = steps.at("the toolchain .* verified")
        return {
            f"cold_{name}_s": round(total, 1),
            f"cold_{name}_rootfs_fetch_verify_s": round(fetched_rootfs, 1),
            f"cold_{name}_rootfs_import_s": round(imported - fetched_rootfs, 1),
            f"cold_{name}_toolchain_fetch_verify_s": round(fetched_toolchain - imported, 1),
            f"cold_{name}_bake_and_check_s": round(total - fetched_toolchain, 1),
        }
    finally:
        for image in client.images.list():
            for tag in image.tags:
                if tag.startswith(f"{prefix}-"):
                    client.images.remove(tag)
        client.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def timed(call: Callable[[], object]) -> tuple[object, float]:
    started = time.monotonic()
    result = call()
    return result, round(time.monotonic() - started, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", default="dir,log", help="cold imports to measure: dir, log")
    cold = set(parser.parse_args().cold.split(","))
    client = docker_client()
    image = ensure_build_image(client, progress=_quiet)
    spec = environment_pins(client, image, find_toolchain_dir(DEFAULT_TOOLCHAIN), _quiet)
    figures: dict[str, object] = {}
    indexes: dict[str, ArchiveIndex] = {
        kind: archive_index(kind, spec, client=client, progress=_quiet)
        for kind in (KIND_ROOTFS, KIND_TOOLCHAIN)
    }
    with tempfile.TemporaryDirectory(prefix="bench-env-", dir="/var/tmp") as tmp_name:
        tmp = Path(tmp_name)
        paths, figures["export_s"] = timed(
            lambda: export_environment(spec, tmp / "export", client=client, progress=_quiet)
        )
        assert isinstance(paths, list)
        for kind, path in zip((KIND_ROOTFS, KIND_TOOLCHAIN), paths, strict=True):
            figures[f"{kind}_plain_mib"] = round(indexes[kind].size / MIB)
            figures[f"{kind}_gzip_mib"] = round(path.stat().st_size / MIB)
            figures[f"{kind}_chunks"] = len(indexes[kind].chunks)
        if "dir" in cold:
            figures.update(cold_import(spec, (DirectorySource(tmp / "export"),), tmp, "dir"))
        if "log" not in cold:
            return report(figures)
        net = LocalNetwork.create(tmp / "net")
        net.log.start()
        try:
            key = note.parse_private_key((tmp / "net" / "witness-1.key").read_text().strip())
            signer = note.Signer(key.name, key.key)
            with LogClient(net.log_url, timeout=300.0) as log:
                _, figures["upload_s"] = timed(
                    lambda: upload_environment(
                        spec,
                        lambda data: log.put_blob(data, signer),
                        lambda name: False,
                        client=client,
                        progress=_quiet,
                    )
                )
                figures.update(cold_import(spec, (BlobSource(log.blob),), tmp, "log"))
        finally:
            net.log.stop()
    return report(figures)


def report(figures: dict[str, object]) -> int:
    for name, value in figures.items():
        print(f"{name:40} {value}")
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
