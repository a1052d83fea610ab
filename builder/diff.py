"""The explain step: a report of how two builds' outputs differ.

``diff_outputs(left, right)`` compares two artifact directories. The artifacts were made by
untrusted builds, so diffoscope, which unpacks and parses them, never runs on the host: it runs
in the diff image (``synchronicity-diff``, bootstrapped locally like the build image, see
:mod:`builder.image`) in a container as locked down as a build's (:mod:`builder.container`):
no network, read-only root and inputs, non-root, no capabilities, no-new-privileges, memory,
PID, /tmp-size, report-size and time limits, always removed. When diffoscope hits a limit or
fails, or cannot run at all, the report says so in a few lines and continues with the built-in
comparison: every file of either side with its size and SHA-256, marked same, different, or
missing on one side, plus the offset of the first differing byte (computed on the host by
reading bytes, never by parsing them). ``builtin_report`` and ``diffoscope_command`` are the
pure core.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import docker

from builder.container import ContainerLimits, ContainerRun, ContainerSpec, run_container
from builder.fstree import file_sha256
from builder.image import (
    FIXED_EPOCH,
    Progress,
    diff_image_config,
    docker_client,
    ensure_build_image,
    stderr_progress,
)
from builder.volumes import Volumes, input_volumes
from logserver.core.errors import OperationalError

DEFAULT_TIMEOUT_SECONDS = 300
DEFAULT_MAX_REPORT_BYTES = 4 << 20
LEFT_DIR = "/diff/left"
RIGHT_DIR = "/diff/right"
SCRATCH_DIR = "/tmp"  # noqa: S108 (a tmpfs inside the container)
_STDERR_TAIL = 2000


@dataclass(frozen=True)
class DiffLimits:
    """Bounds of one diffoscope run. ``wall_seconds`` is a hard deadline (the container is
    killed); diffoscope's own ``--timeout`` (half of it) stops it recursing into archives."""

    memory_bytes: int = 1 << 30
    cpus: int = 1
    pids: int = 64
    tmp_bytes: int = 512 << 20
    report_bytes: int = DEFAULT_MAX_REPORT_BYTES
    log_bytes: int = 1 << 20
    wall_seconds: int = DEFAULT_TIMEOUT_SECONDS


@dataclass(frozen=True)
class FileFacts:
    """What the built-in report knows of one file."""

    size: int
    sha256: str


def _facts(directory: Path) -> dict[str, FileFacts]:
    facts = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.is_symlink():
            relative = path.relative_to(directory).as_posix()
            facts[relative] = FileFacts(size=path.stat().st_size, sha256=file_sha256(path))
    return facts


def builtin_report(
    left: dict[str, FileFacts],
    right: dict[str, FileFacts],
    first_difference: dict[str, int] | None = None,
    *,
    left_name: str = "left",
    right_name: str = "right",
) -> bytes:
    """A plain-text per-file comparison of two file listings."""
    first_difference = first_difference or {}
    lines = [f"synchronicity output comparison: {left_name} vs {right_name}", ""]
    differing = 0
    for path in sorted(set(left) | set(right)):
        a, b = left.get(path), right.get(path)
        if a is None and b is not None:
            differing += 1
            lines.append(f"only in {right_name}: {path} size={b.size} sha256={b.sha256}")
        elif b is None and a is not None:
            differing += 1
            lines.append(f"only in {left_name}: {path} size={a.size} sha256={a.sha256}")
        elif a is not None and b is not None and a == b:
            lines.append(f"same: {path} size={a.size} sha256={a.sha256}")
        elif a is not None and b is not None:
            differing += 1
            lines.append(f"DIFFERENT: {path}")
            lines.append(f"  {left_name}: size={a.size} sha256={a.sha256}")
            lines.append(f"  {right_name}: size={b.size} sha256={b.sha256}")
            if path in first_difference:
                lines.append(f"  first differing byte at offset {first_difference[path]}")
    lines += ["", f"{differing} of {len(set(left) | set(right))} files differ", ""]
    return "\n".join(lines).encode("utf-8")


def _first_difference(left: Path, right: Path) -> int:
    offset = 0
    with left.open("rb") as a, right.open("rb") as b:
        while True:
            chunk_a, chunk_b = a.read(1 << 16), b.read(1 << 16)
            if chunk_a != chunk_b:
                for index, (byte_a, byte_b) in enumerate(zip(chunk_a, chunk_b, strict=False)):
                    if byte_a != byte_b:
                        return offset + index
                return offset + min(len(chunk_a), len(chunk_b))
            if not chunk_a:
                return -1
            offset += len(chunk_a)


def _builtin(left: Path, right: Path) -> bytes:
    left_facts, right_facts = _facts(left), _facts(right)
    firsts = {
        path: _first_difference(left / path, right / path)
        for path in set(left_facts) & set(right_facts)
        if left_facts[path] != right_facts[path]
    }
    return builtin_report(
        left_facts, right_facts, firsts, left_name=str(left), right_name=str(right)
    )


def diffoscope_command(limits: DiffLimits) -> list[str]:
    """diffoscope's command line in the diff container (text report on stdout)."""
    return [
        "diffoscope",
        "--text",
        "-",
        "--no-progress",
        "--exclude-directory-metadata=yes",
        f"--max-text-report-size={limits.report_bytes}",
        f"--timeout={max(1, limits.wall_seconds // 2)}",
        LEFT_DIR,
        RIGHT_DIR,
    ]


def _diff_spec(image: str, volumes: Volumes, limits: DiffLimits) -> ContainerSpec:
    """The diff container: the two staged directories come in volumes (builder.volumes), so
    that a builder in a container, whose paths the engine's host does not have, can diff."""
    return ContainerSpec(
        image=image,
        command=diffoscope_command(limits),
        environment={
            "PATH": "/usr/bin:/bin",
            "HOME": SCRATCH_DIR,
            "TMPDIR": SCRATCH_DIR,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TZ": "UTC",
            "PYTHONDONTWRITEBYTECODE": "1",
            "SOURCE_DATE_EPOCH": str(FIXED_EPOCH),
        },
        working_dir=SCRATCH_DIR,
        binds=(),
        volumes=volumes,
        tmpfs={SCRATCH_DIR: f"rw,noexec,nosuid,nodev,size={limits.tmp_bytes},mode=1777"},
        purpose="diff",
        what="diff",
    )


def _stage(source: Path, destination: Path) -> None:
    """Copy the regular files of ``source`` (never links) with modes any user may read."""
    destination.mkdir(mode=0o755)
    for path in sorted(source.rglob("*")):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            continue
        target = destination / path.relative_to(source)
        if path.is_dir():
            target.mkdir(mode=0o755, exist_ok=True)
        else:
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            target.chmod(0o644)


def _limit_hit(run: ContainerRun, limits: DiffLimits) -> str | None:
    """Why diffoscope did not finish with a report, or None if it did."""
    stderr = run.stderr.decode("utf-8", errors="replace")
    if run.timed_out:
        return f"stopped at the {limits.wall_seconds} s time limit"
    if run.oom_killed or run.exit_code == 137:
        return f"killed at the {limits.memory_bytes} byte memory limit"
    if run.overflow == "stderr":
        return f"stopped for writing more than {limits.log_bytes} bytes of errors"
    if "No space left on device" in stderr or "os error 28" in stderr:
        return f"filled its {limits.tmp_bytes} byte scratch space (/tmp)"
    if "Resource temporarily unavailable" in stderr:
        return f"hit the {limits.pids} process limit"
    if run.exit_code not in (0, 1) and run.overflow is None:
        return f"exited with status {run.exit_code}"
    return None


def _contained_diffoscope(
    left: Path,
    right: Path,
    limits: DiffLimits,
    client: docker.DockerClient | None,
    progress: Progress,
) -> bytes:
    client = client or docker_client()
    image = ensure_build_image(client, diff_image_config(), progress=progress)
    with tempfile.TemporaryDirectory(prefix="synchronicity-diff-") as tmp:
        staged_left, staged_right = Path(tmp) / "left", Path(tmp) / "right"
        _stage(left, staged_left)
        _stage(right, staged_right)
        report_path = Path(tmp) / "report"
        bounds = ContainerLimits(
            memory_bytes=limits.memory_bytes,
            cpus=limits.cpus,
            pids=limits.pids,
            stdout_bytes=limits.report_bytes,
            stderr_bytes=limits.log_bytes,
            wall_seconds=limits.wall_seconds,
        )
        inputs = {LEFT_DIR: staged_left, RIGHT_DIR: staged_right}
        with (
            input_volumes(client, image.tag, "diff", inputs) as volumes,
            report_path.open("wb") as report,
        ):
            run = run_container(client, _diff_spec(image.tag, volumes, limits), bounds, report)
        header = (
            f"diffoscope report, run in a sandbox ({image.tag}, "
            f"root file system sha256 {image.rootfs_sha256})\n\n"
        ).encode()
        why = _limit_hit(run, limits)
        if why is not None:
            tail = run.stderr[-_STDERR_TAIL:].decode("utf-8", errors="replace")
            note = f"diffoscope did not finish: {why}.\n"
            if tail.strip():
                note += f"--- end of diffoscope's errors ---\n{tail}\n"
            return header + note.encode() + b"\n" + _builtin(left, right)
        body = report_path.read_bytes()
        if run.overflow == "stdout":
            cut = f"\n[report cut at the {limits.report_bytes} byte limit]\n".encode()
            return header + body[: limits.report_bytes - len(header) - len(cut)] + cut
        return header + body


def diff_outputs(
    left: Path,
    right: Path,
    *,
    use_diffoscope: bool = True,
    limits: DiffLimits | None = None,
    client: docker.DockerClient | None = None,
    progress: Progress = stderr_progress,
) -> bytes:
    """Report how the artifact directories ``left`` and ``right`` differ (at most
    ``limits.report_bytes`` bytes). diffoscope runs only in the diff sandbox."""
    limits = limits or DiffLimits()
    if not use_diffoscope:
        return _builtin(left, right)[: limits.report_bytes]
    try:
        report = _contained_diffoscope(left, right, limits, client, progress)
    except OperationalError as exc:
        note = f"diffoscope could not run in its sandbox: {exc}\n\n".encode()
        report = note + _builtin(left, right)
    return report[: limits.report_bytes]
