"""One locked-down Docker container, created, started, streamed and always removed (Docker I/O).

The build sandbox (:mod:`builder.sandbox`) and the diff sandbox (:mod:`builder.diff`) both run
here: no network, a read-only root, host directories mounted read-only, size-bounded tmpfs
mounts, a non-root user, every capability dropped, no-new-privileges, memory (swap included),
CPU (quota and, if given, CPU set) and PID limits, the host name it is given, a bound on the
bytes read from stdout and from stderr (the container is killed beyond either) and a wall-clock
deadline. Nothing is ever pulled (``create``, never ``run``). Containers carry the labels
``synchronicity.build`` (what they are for) and ``synchronicity.owner`` (``host:pid``);
``remove_leftover_containers`` removes those whose owner process on this host is gone.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
from docker.models.containers import Container

from logserver.core.errors import OperationalError

LABEL_BUILD = "synchronicity.build"
LABEL_OWNER = "synchronicity.owner"
SANDBOX_USER = "1000:1000"

OVERFLOW_STDOUT = "stdout"
OVERFLOW_STDERR = "stderr"


@dataclass(frozen=True)
class ContainerLimits:
    """Resource bounds of one container."""

    memory_bytes: int
    cpus: int
    pids: int
    stdout_bytes: int
    stderr_bytes: int
    wall_seconds: float
    cpuset: str | None = None  # the CPUs the container may run on, e.g. "1" or "0-1"


@dataclass(frozen=True)
class ContainerSpec:
    """What one container runs and sees. ``binds`` are (container path, host path), read-only;
    ``volumes`` (container path, Docker volume name), read-only too (no host path at all)."""

    image: str
    command: list[str]
    environment: dict[str, str]
    working_dir: str
    binds: tuple[tuple[str, Path], ...]
    tmpfs: dict[str, str]
    purpose: str  # the value of the synchronicity.build label
    user: str = SANDBOX_USER
    what: str = "build"  # for error messages
    volumes: tuple[tuple[str, str], ...] = ()
    hostname: str | None = None  # None: Docker's (the container id)


@dataclass
class ContainerRun:
    """How a container ended. ``exit_code`` is None when it was killed (deadline, overflow)."""

    exit_code: int | None
    overflow: str | None
    timed_out: bool
    stderr: bytes
    oom_killed: bool
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def owner_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def remove_leftover_containers(client: docker.DockerClient) -> int:
    """Remove labelled containers left by processes of this host that no longer exist.

    Other processes run containers at the same time and remove their own when done, so the
    listing uses the low-level API (one request, no per-container inspection that could race
    with such a removal) and a container that is already gone is simply skipped.
    """
    removed = 0
    try:
        containers = client.api.containers(all=True, filters={"label": LABEL_BUILD})
    except docker.errors.DockerException as exc:
        raise OperationalError(f"cannot list containers: {exc}") from exc
    for container in containers:
        labels = container.get("Labels") or {}
        host, _, pid = str(labels.get(LABEL_OWNER, "")).partition(":")
        ours = host == socket.gethostname() and pid.isascii() and pid.isdigit()
        if ours and _process_alive(int(pid)):
            continue
        try:
            client.api.remove_container(container["Id"], force=True)
            removed += 1
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: its removal is already in progress
                raise OperationalError(f"cannot remove container: {exc}") from exc
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Streamer(threading.Thread):
    """Drains the attach stream: stderr into a bounded buffer, stdout into a bounded file."""

    def __init__(self, stream: Any, limits: ContainerLimits, stdout: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.limits = limits
        self.stdout = stdout
        self.stderr = bytearray()
        self.stdout_size = 0
        self.overflow: str | None = None
        self.error: BaseException | None = None
        self.finished = threading.Event()

    def run(self) -> None:
        try:
            for stdout, stderr in self.stream:
                if stderr:
                    self.stderr += stderr
                    if len(self.stderr) > self.limits.stderr_bytes:
                        self.overflow = OVERFLOW_STDERR
                        return
                if stdout:
                    room = self.limits.stdout_bytes - self.stdout_size
                    self.stdout.write(stdout[: max(room, 0)])
                    self.stdout_size += len(stdout)
                    if self.stdout_size > self.limits.stdout_bytes:
                        self.overflow = OVERFLOW_STDOUT
                        return
        except (docker.errors.DockerException, OSError) as exc:
            self.error = exc
        finally:
            self.finished.set()


def host_cpus(client: docker.DockerClient) -> int:
    """How many CPUs the Docker engine's host has (a cpuset names CPUs 0 to this - 1)."""
    try:
        count = client.info().get("NCPU")
    except docker.errors.DockerException as exc:
        raise OperationalError(f"cannot ask the Docker engine for its CPUs: {exc}") from exc
    if not isinstance(count, int) or count < 1:
        raise OperationalError(f"the Docker engine reports {count!r} CPUs")
    return count


def _create(client: docker.DockerClient, spec: ContainerSpec, limits: ContainerLimits) -> Container:
    mounts = [
        docker.types.Mount(target, str(source), type="bind", read_only=True)
        for target, source in spec.binds
    ]
    mounts += [
        docker.types.Mount(target, name, type="volume", read_only=True, no_copy=True)
        for target, name in spec.volumes
    ]
    try:
        return client.containers.create(
            spec.image,
            spec.command,
            use_config_proxy=False,
            detach=True,
            network_mode="none",
            read_only=True,
            mounts=mounts,
            tmpfs=spec.tmpfs,
            user=spec.user,
            working_dir=spec.working_dir,
            environment=spec.environment,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            mem_limit=limits.memory_bytes,
            memswap_limit=limits.memory_bytes,
            nano_cpus=limits.cpus * 1_000_000_000,
            cpuset_cpus=limits.cpuset,
            hostname=spec.hostname,
            pids_limit=limits.pids,
            shm_size=16 << 20,
            ipc_mode="private",
            labels={LABEL_BUILD: spec.purpose, LABEL_OWNER: owner_label()},
            stdin_open=False,
            tty=False,
        )
    except docker.errors.ImageNotFound as exc:
        raise OperationalError(f"{spec.what} image {spec.image} is not present: {exc}") from exc
    except docker.errors.DockerException as exc:
        raise OperationalError(f"cannot create the {spec.what} container: {exc}") from exc


def run_container(
    client: docker.DockerClient, spec: ContainerSpec, limits: ContainerLimits, stdout: IO[bytes]
) -> ContainerRun:
    """Run ``spec`` to its end, a limit or its deadline; stdout goes to ``stdout`` (bounded).

    The container is removed whatever happens. A lost output stream is an OperationalError.
    """
    started = time.monotonic()
    container = _create(client, spec, limits)
    try:
        stream = client.api.attach(
            str(container.id), stdout=True, stderr=True, stream=True, logs=True, demux=True
        )
        streamer = _Streamer(stream, limits, stdout)
        exit_code: int | None = None
        timed_out = False
        try:
            container.start()
            streamer.start()
            finished = streamer.finished.wait(timeout=limits.wall_seconds)
            if not finished or streamer.overflow is not None:
                timed_out = not finished
                _kill(container)
                streamer.finished.wait(timeout=30)
            else:
                exit_code = _wait_exit(container, spec.what)
        finally:
            _close_stream(stream)
        if streamer.error is not None and exit_code is not None:
            raise OperationalError(f"lost the {spec.what} container's output: {streamer.error}")
        return ContainerRun(
            exit_code=exit_code,
            overflow=streamer.overflow,
            timed_out=timed_out,
            stderr=bytes(streamer.stderr[: limits.stderr_bytes]),
            oom_killed=_oom_killed(container),
            seconds=time.monotonic() - started,
        )
    finally:
        _remove(container, spec.what)


def _close_stream(stream: Any) -> None:
    """Close an attach stream and its HTTP response (docker-py leaves the socket open)."""
    stream.close()
    response = getattr(stream, "_response", None)
    if response is not None:
        response.close()


def _wait_exit(container: Container, what: str) -> int:
    try:
        result = container.wait(timeout=60)
    except (docker.errors.DockerException, OSError) as exc:
        raise OperationalError(f"waiting for the {what} container failed: {exc}") from exc
    return int(result.get("StatusCode", -1))


def _oom_killed(container: Container) -> bool:
    try:
        container.reload()
    except docker.errors.DockerException:
        return False
    return bool(container.attrs.get("State", {}).get("OOMKilled", False))


def _kill(container: Container) -> None:
    with contextlib.suppress(docker.errors.APIError):  # already stopped
        container.kill()


def _remove(container: Container, what: str) -> None:
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.DockerException as exc:
        raise OperationalError(f"cannot remove {what} container {container.id}: {exc}") from exc
