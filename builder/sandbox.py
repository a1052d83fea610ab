"""Running one build in a locked-down Docker container (the Docker I/O edge).

The container (:mod:`builder.container`: created, never ``run``, so nothing is ever pulled;
started, streamed and always removed) has no network, a read-only root, the sources and
vendored dependencies mounted read-only (from volumes filled through the Docker API,
:mod:`builder.volumes`, or bind-mounted host directories), the toolchain in the image at
/opt/rust (the environment image, :mod:`builder.environment`) or bind-mounted,
size-bounded tmpfs mounts for the target directory and /tmp, a non-root user, no
capabilities, no-new-privileges, and memory, CPU, PID, log-size, artifact-size and
wall-clock limits. The build's own output goes to stderr (the
log); stdout carries only the tar of the top-level files of the profile directory, written by
the container's shell after a successful build (tmpfs contents cannot be copied out with
``get_archive``). Each build runs under a host variation (:mod:`builder.variation`): its CPU
count (cpuset, quota, cargo's jobs), its clock (libfaketime, for every process but rustc, which
runs through a wrapper that drops it) and its host name; the log's first line states it.
``spec/builds.md`` states the contract; ``sandbox_command``, ``sandbox_environment``,
``applied`` and ``wall_limit`` are its pure part.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from builder.archive import ExtractLimits, safe_extract
from builder.container import (
    OVERFLOW_STDERR,
    OVERFLOW_STDOUT,
    ContainerLimits,
    ContainerSpec,
    host_cpus,
    run_container,
)
from builder.image import FIXED_EPOCH
from builder.sources import SANDBOX_DEPS_DIR, STAND_INS_FILE
from builder.variation import Variation, cpu_count
from logserver.core.errors import OperationalError

TOOLCHAIN_DIR = "/opt/rust"
SRC_DIR = "/build/src"
TARGET_DIR = "/build/target"
SANDBOX_TMP = "/tmp"  # noqa: S108 (a tmpfs inside the container)
CARGO_HOME = f"{SANDBOX_TMP}/cargo-home"
STAND_INS = f"{SANDBOX_DEPS_DIR}/{STAND_INS_FILE}"
EXIT_SETUP_FAILED = 120
EXIT_NO_PROFILE_DIR = 121
EXIT_TAR_FAILED = 122
EXIT_STAND_IN_COMPILED = 123
# The clock variation: libfaketime (in the build image) preloaded into every process but rustc,
# whose start-up deadlocks under it (its allocator, jemalloc, reads the clock while libfaketime
# initialises, which allocates). So `rustc` (PATH and RUSTC) is a wrapper that drops the preload,
# in every build alike, whatever its variation.
FAKETIME_LIBRARY = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
WRAPPER_DIR = f"{TARGET_DIR}/.synchronicity/bin"
RUSTC_WRAPPER = f"{WRAPPER_DIR}/rustc"

REASON_TIMEOUT = "timeout"
REASON_OOM = "out-of-memory"
REASON_DISK_FULL = "disk-full"
REASON_PIDS = "process-limit"
REASON_LOG_LIMIT = "log-limit"
REASON_ARTIFACT_LIMIT = "artifact-limit"
REASON_EXIT = "nonzero-exit"

_LOG_TAIL_BYTES = 4000
# Where the CPU window of the next build starts: builds of one process, and the processes of
# one host (by their pids), take turns on the host's CPUs.
_next_cpu = itertools.count(os.getpid())


@dataclass(frozen=True)
class SandboxLimits:
    """Resource bounds of one build."""

    memory_bytes: int = 4 << 30
    cpus: int = 2
    pids: int = 1024
    target_bytes: int = 4 << 30
    tmp_bytes: int = 512 << 20
    log_bytes: int = 8 << 20
    artifact_bytes: int = 1 << 30
    wall_seconds: int = 1800


@dataclass(frozen=True)
class SandboxJob:
    """What to build: the prepared host directories and the recipe's build settings."""

    job_id: str
    image: str
    src_dir: Path
    deps_dir: Path
    toolchain_dir: Path | None  # None: the toolchain is in the image (the environment image)
    crate_name: str
    crate_version: str
    target: str
    profile: str = "release"
    features: tuple[str, ...] = ()
    default_features: bool = True
    all_features: bool = False
    # (container path, volume name): inputs copied into volumes (builder.volumes) instead of
    # bind-mounting src_dir and deps_dir from the host
    input_volumes: tuple[tuple[str, str], ...] = ()
    # the host conditions it builds under (builder.variation)
    variation: Variation = field(default_factory=Variation)


@dataclass(frozen=True)
class Applied:
    """How a variation is applied on this host: the CPU count (cpuset size, CPU quota and
    cargo's jobs), which of the host's CPUs, and how many the host has."""

    cpus: int
    cpuset: str
    host_cpus: int

    def to_value(self, variation: Variation) -> dict[str, object]:
        """What ``variation.json`` records as applied."""
        return {
            "cpus": self.cpus,
            "cpuset": self.cpuset,
            "host_cpus": self.host_cpus,
            "faketime": faketime(variation),
            "hostname": variation.hostname,
        }


def applied(variation: Variation, limit_cpus: int, host: int, first_cpu: int = 0) -> Applied:
    """The CPUs of a build: ``cpu_count`` of them, a window of the host's CPUs starting at
    ``first_cpu`` (modulo the host's count; which CPUs is not part of the variation)."""
    try:
        count = cpu_count(variation, limit_cpus, host)
    except ValueError as e:
        raise OperationalError(f"cannot build under this variation here: {e}") from e
    chosen = sorted((first_cpu + i) % host for i in range(count))
    return Applied(cpus=count, cpuset=",".join(str(cpu) for cpu in chosen), host_cpus=host)


def wall_limit(limits: SandboxLimits, conditions: Applied) -> int:
    """The wall-clock limit of a build with fewer CPUs than the limit: scaled up by the ratio,
    so that a build gets the same CPU time whatever its variation."""
    return -(-limits.wall_seconds * max(limits.cpus, conditions.cpus) // conditions.cpus)


def faketime(variation: Variation) -> str | None:
    """libfaketime's FAKETIME for the variation's clock: ``+Nd``, or None for the true clock."""
    return f"+{variation.clock_days}d" if variation.clock_days else None


@dataclass
class SandboxResult:
    """The outcome: ``ok`` is True only for exit status 0 with every artifact copied out."""

    ok: bool
    exit_code: int | None
    reason: str | None
    detail: str
    log: bytes
    artifacts_dir: Path | None
    seconds: float
    log_truncated: bool = False
    oom_killed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def profile_dir_name(profile: str) -> str:
    return "debug" if profile == "dev" else profile


def sandbox_environment(job: SandboxJob, cpus: int | None = None) -> dict[str, str]:
    """The complete environment of the build: fixed, but for its variation (``cpus``, the CPU
    count it gets, defaults to the variation's or the default limit)."""
    remaps = [
        f"--remap-path-prefix={SRC_DIR}=/rust/src/{job.crate_name}-{job.crate_version}",
        f"--remap-path-prefix={SANDBOX_DEPS_DIR}/vendor=/rust/deps",
        f"--remap-path-prefix={CARGO_HOME}=/rust/cargo",
        f"--remap-path-prefix={TOOLCHAIN_DIR}=/rust/toolchain",
    ]
    environment = {
        "PATH": f"{WRAPPER_DIR}:{TOOLCHAIN_DIR}/bin:/usr/local/bin:/usr/bin:/bin",
        "RUSTC": RUSTC_WRAPPER,
        "HOME": SANDBOX_TMP,
        "CARGO_HOME": CARGO_HOME,
        "CARGO_TARGET_DIR": TARGET_DIR,
        "CARGO_INCREMENTAL": "0",
        "CARGO_TERM_COLOR": "never",
        "CARGO_TERM_PROGRESS_WHEN": "never",
        "RUSTFLAGS": " ".join(remaps),
        "SOURCE_DATE_EPOCH": str(FIXED_EPOCH),
        "TZ": "UTC",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "CARGO_BUILD_JOBS": str(cpus or job.variation.cpus or SandboxLimits.cpus),
    }
    shift = faketime(job.variation)
    if shift is not None:
        environment["LD_PRELOAD"] = FAKETIME_LIBRARY
        environment["FAKETIME"] = shift
        # Only the wall clock differs between hosts; a monotonic clock has no meaning to share.
        environment["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
    return environment


def _selection(job: SandboxJob) -> list[str]:
    """The arguments shared by ``cargo build`` and ``cargo tree``: lock, target, features."""
    arguments = [
        "--target",
        job.target,
        "--config",
        f"{SANDBOX_DEPS_DIR}/config.toml",
    ]
    if job.all_features:
        arguments.append("--all-features")
    if not job.default_features:
        arguments.append("--no-default-features")
    if job.features:
        arguments += ["--features", ",".join(job.features)]
    return arguments


def cargo_arguments(job: SandboxJob) -> list[str]:
    return ["cargo", "build", "--locked", "--offline", "--profile", job.profile, *_selection(job)]


def stand_in_check(job: SandboxJob) -> list[str]:
    """Shell lines that refuse a build compiling a stand-in (a package not fetched)."""
    tree = ["cargo", "tree", "--locked", "--offline", *_selection(job)]
    tree += ["-e", "normal,build", "--prefix", "none"]
    listing, needed = f"{SANDBOX_TMP}/cargo-tree.txt", f"{SANDBOX_TMP}/stand-ins-needed.txt"
    return [
        f"if [ -s {STAND_INS} ]; then",
        "  echo 'synchronicity: manifest-only stand-ins for locked packages that could not be"
        " fetched:' 1>&2",
        f"  cat {STAND_INS} 1>&2",
        f"  {shlex.join(tree)} --format '{{p}}' >{listing} || exit $?",
        f"  sed 's/ (\\*)$//' {listing} | grep -F -x -f {STAND_INS} >{needed}",
        f"  if [ -s {needed} ]; then",
        "    echo 'synchronicity: the build compiles locked packages that could not be"
        " fetched:' 1>&2",
        f"    cat {needed} 1>&2",
        f"    exit {EXIT_STAND_IN_COMPILED}",
        "  fi",
        "fi",
    ]


def variation_line(job: SandboxJob, conditions: Applied | None = None) -> str:
    """The shell line that starts the build log: the variation, how it is applied, and what
    the sandbox sees (CPUs for nproc, the clock, the host name)."""
    variation = job.variation
    cpus = conditions.cpus if conditions else variation.cpus or SandboxLimits.cpus
    how = f"{cpus} CPU{'' if cpus == 1 else 's'}"
    if conditions is not None:
        how += f" of the host's {conditions.host_cpus}: cpuset {conditions.cpuset}, quota {cpus},"
    shift = faketime(variation)
    how += f" cargo jobs {cpus}; clock: {'true' if shift is None else 'libfaketime ' + shift}"
    stated = f"synchronicity: host variation {variation.spec()} ({how})"
    assert not set(stated) & set('"$`\\'), stated  # a literal inside double quotes
    seen = "nproc $(nproc), date $(date -u +%Y-%m-%dT%H:%M:%SZ), host name $(uname -n)"
    return f'echo "{stated}; the sandbox sees: {seen}" 1>&2'


def rustc_wrapper() -> list[str]:
    """Shell lines writing the ``rustc`` wrapper: the compiler without libfaketime."""
    return [
        f"mkdir -p {WRAPPER_DIR} || exit {EXIT_SETUP_FAILED}",
        f"cat >{RUSTC_WRAPPER} <<'EOF' || exit {EXIT_SETUP_FAILED}",
        "#!/bin/sh",
        "unset LD_PRELOAD",
        f'exec {TOOLCHAIN_DIR}/bin/rustc "$@"',
        "EOF",
        f"chmod 0755 {RUSTC_WRAPPER} || exit {EXIT_SETUP_FAILED}",
    ]


def sandbox_command(job: SandboxJob, conditions: Applied | None = None) -> list[str]:
    """The container command: build with output on stderr, then tar the artifacts to stdout."""
    profile_dir = f"{TARGET_DIR}/{job.target}/{profile_dir_name(job.profile)}"
    script = "\n".join(
        [
            "umask 022",
            variation_line(job, conditions),
            f"mkdir -p {CARGO_HOME} || exit {EXIT_SETUP_FAILED}",
            *rustc_wrapper(),
            *stand_in_check(job),
            shlex.join(cargo_arguments(job)) + " 1>&2",
            "status=$?",
            'if [ "$status" -ne 0 ]; then exit "$status"; fi',
            f"cd {shlex.quote(profile_dir)} || exit {EXIT_NO_PROFILE_DIR}",
            "set --",
            'for f in *; do if [ -f "$f" ] && [ ! -L "$f" ]; then set -- "$@" "$f"; fi; done',
            'if [ "$#" -gt 0 ]; then',
            "  tar --create --file=- --no-recursion --numeric-owner --owner=0 --group=0"
            f' -- "$@" || exit {EXIT_TAR_FAILED}',
            "fi",
            "exit 0",
        ]
    )
    return ["/bin/sh", "-c", script]


def _spec(job: SandboxJob, limits: SandboxLimits, conditions: Applied) -> ContainerSpec:
    return ContainerSpec(
        image=job.image,
        command=sandbox_command(job, conditions),
        environment=sandbox_environment(job, conditions.cpus),
        working_dir=SRC_DIR,
        binds=_binds(job),
        volumes=job.input_volumes,
        tmpfs={
            TARGET_DIR: (
                f"rw,exec,nosuid,nodev,size={limits.target_bytes},uid=1000,gid=1000,mode=0755"
            ),
            SANDBOX_TMP: f"rw,noexec,nosuid,nodev,size={limits.tmp_bytes},mode=1777",
        },
        purpose=job.job_id,
        hostname=job.variation.hostname,
    )


def _binds(job: SandboxJob) -> tuple[tuple[str, Path], ...]:
    """The host paths mounted: none for what the image or an input volume holds."""
    in_volumes = {target for target, _ in job.input_volumes}
    wanted: list[tuple[str, Path | None]] = [
        (TOOLCHAIN_DIR, job.toolchain_dir),
        (SRC_DIR, job.src_dir),
        (SANDBOX_DEPS_DIR, job.deps_dir),
    ]
    return tuple(
        (target, path) for target, path in wanted if path is not None and target not in in_volumes
    )


def _classify(log: bytes, exit_code: int | None, oom_killed: bool) -> str:
    if oom_killed:
        return REASON_OOM
    text = log.decode("utf-8", errors="replace")
    if "No space left on device" in text or "os error 28" in text:
        return REASON_DISK_FULL
    if "Resource temporarily unavailable" in text or "os error 11" in text:
        return REASON_PIDS
    if exit_code == 137 or "SIGKILL" in text:
        return REASON_OOM
    return REASON_EXIT


def run_in_sandbox(
    job: SandboxJob,
    out_dir: Path,
    *,
    limits: SandboxLimits | None = None,
    client: docker.DockerClient,
) -> SandboxResult:
    """Build ``job`` in a fresh container; copy the artifacts into ``out_dir``/artifacts."""
    limits = limits or SandboxLimits()
    out_dir.mkdir(parents=True, exist_ok=True)
    spool_path = out_dir / "artifacts.tar"
    conditions = applied(job.variation, limits.cpus, host_cpus(client), next(_next_cpu))
    limits = dataclasses.replace(limits, wall_seconds=wall_limit(limits, conditions))
    bounds = ContainerLimits(
        memory_bytes=limits.memory_bytes,
        cpus=conditions.cpus,
        pids=limits.pids,
        stdout_bytes=limits.artifact_bytes,
        stderr_bytes=limits.log_bytes,
        wall_seconds=limits.wall_seconds,
        cpuset=conditions.cpuset,
    )
    extra: dict[str, Any] = {"applied": conditions.to_value(job.variation)}
    try:
        with spool_path.open("wb") as spool:
            run = run_container(client, _spec(job, limits, conditions), bounds, spool)
        log = run.stderr
        reason: str | None = None
        if run.timed_out:
            reason = REASON_TIMEOUT
        elif run.overflow == OVERFLOW_STDERR:
            reason = REASON_LOG_LIMIT
        elif run.overflow == OVERFLOW_STDOUT:
            reason = REASON_ARTIFACT_LIMIT
        elif run.exit_code != 0:
            reason = _classify(log, run.exit_code, run.oom_killed)
        if reason is not None:
            return SandboxResult(
                ok=False,
                exit_code=run.exit_code,
                reason=reason,
                detail=_describe(reason, run.exit_code, limits, log),
                log=log,
                artifacts_dir=None,
                seconds=run.seconds,
                log_truncated=reason == REASON_LOG_LIMIT,
                oom_killed=run.oom_killed,
                extra=extra,
            )
        artifacts_dir = out_dir / "artifacts"
        artifacts_dir.mkdir()
        if spool_path.stat().st_size:
            with spool_path.open("rb") as spool:
                safe_extract(
                    spool,
                    artifacts_dir,
                    what="artifact archive from the sandbox",
                    limits=ExtractLimits(max_total_bytes=limits.artifact_bytes),
                )
        return SandboxResult(
            ok=True,
            exit_code=0,
            reason=None,
            detail="build succeeded",
            log=log,
            artifacts_dir=artifacts_dir,
            seconds=run.seconds,
            extra=extra,
        )
    finally:
        spool_path.unlink(missing_ok=True)


def _describe(reason: str, exit_code: int | None, limits: SandboxLimits, log: bytes) -> str:
    tail = log[-_LOG_TAIL_BYTES:].decode("utf-8", errors="replace")
    headline = {
        REASON_TIMEOUT: f"killed after the {limits.wall_seconds}s wall-clock limit",
        REASON_OOM: f"killed for exceeding the {limits.memory_bytes} byte memory limit",
        REASON_DISK_FULL: f"the {limits.target_bytes} byte target directory or /tmp filled up",
        REASON_PIDS: f"hit the {limits.pids} process limit",
        REASON_LOG_LIMIT: f"killed for writing more than {limits.log_bytes} bytes of log",
        REASON_ARTIFACT_LIMIT: f"artifacts exceed {limits.artifact_bytes} bytes",
        REASON_EXIT: f"build exited with status {exit_code}",
    }[reason]
    return f"{headline}\n--- end of build log ---\n{tail}"
