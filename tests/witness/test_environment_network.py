"""A network builder that lacks the build environment gets it from the log's blob store.

- the worker turns a build environment it cannot obtain into the committed failure
  ``environment-unavailable`` (a fake log, no Docker);
- on a real network of four builder-witnesses (real Docker, crates.io), one witness runs as
  another host: its own ``SYNCHRONICITY_CACHE``, its own image repositories, no rustup. Before
  the environment is in the log's blob store it reveals ``environment-unavailable`` and the
  three others still reproduce the crate; after builder 1 uploaded it
  (``synchronicity image export --to-log``: 32 MiB chunks and an index, signed with its key), it
  fetches the environment from the blob store, verifies and imports it, and takes part in a
  verdict reproduced by all four.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from builder.build import resolve_recipe
from builder.envarchive import KIND_ROOTFS, archive_name
from builder.envsource import EnvironmentUnavailable
from builder.image import docker_client
from builder.recipe import Recipe
from logserver.client import LogClient
from logserver.protocol.entries import Reveal, Verdict
from synchronicity.client import BuilderClient, LoggedEntry, follow
from synchronicity.localnet import LocalNetwork
from tests.witness.test_worker import ME, FakeLog, LogClock, make_worker, wait_for
from witness.worker import ENVIRONMENT_UNAVAILABLE, BuildWorker


def test_an_environment_not_obtained_is_the_failure_environment_unavailable(
    tmp_path: Path,
) -> None:
    log = FakeLog([ME], LogClock())
    job = log.request("1.0.0")

    def build(recipe: Recipe, out_dir: Path, **_: object) -> object:
        raise EnvironmentUnavailable("no source has the rootfs 0123456789abcdef (...)")

    worker: BuildWorker = make_worker(log, tmp_path, build)
    worker.start()
    try:
        wait_for(lambda: log.verdict(job))
    finally:
        worker.stop(wait=5)
    verdict = log.verdict(job)
    assert verdict is not None and verdict.outcome == "failed"
    reveal = next(r for r in log.entries(Reveal) if r.job == job)
    assert reveal.failure == ENVIRONMENT_UNAVAILABLE == "environment-unavailable"


# ----- a real network ----------------------------------------------------------------------


def _quiet(line: str) -> None:
    del line


def run_job(net: LocalNetwork, log: LogClient, spec: str) -> tuple[list[LoggedEntry], Verdict]:
    recipe = resolve_recipe(spec, progress=_quiet)
    with BuilderClient(net.config.witnesses[0].url) as builder:
        job, index = builder.request(recipe)
    seen, verdict = follow(log, job, index, 1500, _quiet)
    assert isinstance(verdict.entry, Verdict)
    return seen, verdict.entry


@pytest.fixture
def other_host(tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    """The environment of a witness process that acts as another host, and its image prefix."""
    prefix = f"netotherhost{os.getpid()}x{os.urandom(3).hex()}"
    home = tmp_path / "other-host"
    env = {
        "PATH": "/usr/bin:/bin",
        "RUSTUP_HOME": str(home / "nowhere"),
        "CARGO_HOME": str(home / "nowhere"),
        "SYNCHRONICITY_CACHE": str(home / "cache"),
        "SYNCHRONICITY_IMAGE_PREFIX": prefix,
    }
    yield env, prefix
    client = docker_client()
    try:
        for image in client.images.list():
            for tag in image.tags:
                if tag.startswith((f"{prefix}-build:", f"{prefix}-env:")):
                    with contextlib.suppress(docker.errors.APIError):
                        client.images.remove(tag)
    finally:
        client.close()


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.network
def test_a_builder_without_the_environment_gets_it_from_the_log(
    tmp_path: Path, other_host: tuple[dict[str, str], str]
) -> None:
    env, prefix = other_host
    net = LocalNetwork.create(tmp_path / "net")
    net.witnesses[3].env = env  # witness-4: another host
    other = net.config.witnesses[3].name
    net.start()
    try:
        with LogClient(net.log_url, timeout=60.0) as log:
            seen, verdict = run_job(net, log, "itoa@1.0.11")
            assert verdict.outcome == "reproduced" and other not in verdict.agreeing, verdict
            failures = {
                e.entry.builder: e.entry.failure for e in seen if isinstance(e.entry, Reveal)
            }
            assert failures[other] == ENVIRONMENT_UNAVAILABLE

            upload = [sys.executable, "-m", "synchronicity", "image", "export", "--to-log"]
            upload += ["--network", str(net.dir / "network.json")]
            upload += ["--key", str(net.dir / "witness-1.key")]
            done = subprocess.run(upload, capture_output=True, text=True, check=False)
            assert done.returncode == 0, done.stderr[-3000:]
            assert "rootfs archive" in done.stdout and "toolchain archive" in done.stdout

            _, verdict = run_job(net, log, "itoa@1.0.10")
            assert verdict.outcome == "reproduced", verdict
            assert len(verdict.agreeing) == 4 and other in verdict.agreeing, verdict
        recipe = resolve_recipe("itoa@1.0.10", progress=_quiet)
        cached = Path(env["SYNCHRONICITY_CACHE"]) / "environment"
        assert (
            cached / archive_name(KIND_ROOTFS, recipe.rootfs_sha256, compressed=False)
        ).is_file()
        client = docker_client()
        try:
            tags = [tag for image in client.images.list() for tag in image.tags]
        finally:
            client.close()
        assert any(tag.startswith(f"{prefix}-env:") for tag in tags)
    finally:
        net.stop()
