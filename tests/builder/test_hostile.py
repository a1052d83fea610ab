"""Hostile crates are contained by the sandbox and reported as failed with a clear reason.

Each fixture's build script misbehaves in one way; short limits make each finish in seconds.
Needs a running Docker engine (fails, never skips, without one); no network.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from builder.build import build_crate
from builder.container import LABEL_BUILD, LABEL_OWNER, remove_leftover_containers
from builder.image import docker_client, ensure_build_image
from builder.sandbox import (
    REASON_DISK_FULL,
    REASON_EXIT,
    REASON_LOG_LIMIT,
    REASON_OOM,
    REASON_PIDS,
    REASON_TIMEOUT,
    SandboxLimits,
)
from builder.toolchain import find_toolchain_dir
from logserver.core.errors import OperationalError
from tests.support.builder_helpers import pack_fixture

pytestmark = [pytest.mark.docker, pytest.mark.slow]

HOSTILE_LIMITS = SandboxLimits(
    memory_bytes=512 << 20,
    cpus=1,
    pids=128,
    target_bytes=128 << 20,
    tmp_bytes=32 << 20,
    log_bytes=1 << 20,
    wall_seconds=60,
)


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    connection = docker_client()
    yield connection
    connection.close()


def _quiet(line: str) -> None:
    del line


def _build(client: docker.DockerClient, name: str, tmp_path: Path, limits: SandboxLimits):  # type: ignore[no-untyped-def]
    crate = pack_fixture(name, tmp_path)
    result = build_crate(crate, tmp_path / "out", limits=limits, client=client, progress=_quiet)
    assert not result.ok
    assert result.manifest is None and result.output_digest is None
    assert not client.containers.list(all=True, filters={"label": LABEL_BUILD})
    assert (tmp_path / "out" / "build.log").read_bytes() == result.log
    return result


def test_network_is_unreachable(client: docker.DockerClient, tmp_path: Path) -> None:
    accepted: list[object] = []
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 47123))  # the test checks nothing reaches it
    listener.listen()
    listener.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(listener.accept())
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        result = _build(client, "hostile-network", tmp_path, HOSTILE_LIMITS)
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert result.reason == REASON_EXIT
    assert "HOSTILE: network unreachable" in result.detail
    assert "HOSTILE: connected" not in result.log.decode()
    assert accepted == []


def test_writes_outside_the_target_directory_are_refused(
    client: docker.DockerClient, tmp_path: Path
) -> None:
    toolchain = find_toolchain_dir("1.95.0")
    result = _build(client, "hostile-write", tmp_path, HOSTILE_LIMITS)
    assert result.reason == REASON_EXIT
    log = result.log.decode()
    assert "HOSTILE: every write refused" in log
    for path in ("/build/src/pwned", "/build/deps/pwned", "/opt/rust/pwned", "/etc/pwned"):
        assert f"{path}: Read-only file system" in log
    assert not (toolchain / "pwned").exists()
    assert not Path("/etc/pwned").exists()


def test_fork_bomb_hits_the_process_limit(client: docker.DockerClient, tmp_path: Path) -> None:
    result = _build(client, "hostile-forkbomb", tmp_path, HOSTILE_LIMITS)
    assert result.reason == REASON_PIDS
    assert "process limit" in result.detail
    assert "HOSTILE: fork failed after" in result.log.decode()


def test_memory_hog_is_killed(client: docker.DockerClient, tmp_path: Path) -> None:
    result = _build(client, "hostile-memory", tmp_path, HOSTILE_LIMITS)
    assert result.reason == REASON_OOM
    assert "memory limit" in result.detail
    log = result.log.decode()
    assert "SIGKILL" in log
    assert "allocated 1024 MiB" not in log


def test_disk_filler_hits_the_target_size_limit(
    client: docker.DockerClient, tmp_path: Path
) -> None:
    result = _build(client, "hostile-disk", tmp_path, HOSTILE_LIMITS)
    assert result.reason == REASON_DISK_FULL
    assert "No space left on device" in result.log.decode()


def test_endless_build_is_killed_at_the_deadline(
    client: docker.DockerClient, tmp_path: Path
) -> None:
    limits = SandboxLimits(
        memory_bytes=512 << 20, cpus=1, pids=128, target_bytes=128 << 20, wall_seconds=6
    )
    started = time.monotonic()
    result = _build(client, "hostile-forever", tmp_path, limits)
    assert result.reason == REASON_TIMEOUT
    assert "6s wall-clock limit" in result.detail
    assert time.monotonic() - started < 40


def test_log_flood_is_cut_at_the_log_limit(client: docker.DockerClient, tmp_path: Path) -> None:
    limits = SandboxLimits(memory_bytes=512 << 20, cpus=1, pids=128, log_bytes=100, wall_seconds=60)
    result = _build(client, "hostile-network", tmp_path, limits)
    assert result.reason == REASON_LOG_LIMIT
    assert len(result.log) == 100


def test_leftover_containers_of_dead_processes_are_removed(client: docker.DockerClient) -> None:
    image = ensure_build_image(client, progress=_quiet)
    host = socket.gethostname()
    dead = client.containers.create(
        image.tag, ["true"], labels={LABEL_BUILD: "leftover", LABEL_OWNER: f"{host}:999999999"}
    )
    alive = client.containers.create(
        image.tag, ["true"], labels={LABEL_BUILD: "running", LABEL_OWNER: f"{host}:{os.getpid()}"}
    )
    try:
        assert remove_leftover_containers(client) >= 1
        remaining = {c.id for c in client.containers.list(all=True, filters={"label": LABEL_BUILD})}
        assert dead.id not in remaining
        assert alive.id in remaining
    finally:
        alive.remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):
            dead.remove(force=True)


def test_docker_unavailable_is_an_operational_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(OperationalError, match="Docker engine unavailable"):
        docker_client()
