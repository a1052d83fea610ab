"""The explain step: a report of how two builds' outputs differ.

``diff_outputs(left, right)`` compares two artifact directories. With diffoscope installed
(Debian package ``diffoscope-minimal``) it runs it with a time limit and a report-size limit;
otherwise, or when diffoscope fails, it writes a built-in report: every file of either side
with its size and SHA-256, marked same, different, or missing on one side, plus the offset of
the first differing byte. ``builtin_report`` is the pure core.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from builder.fstree import file_sha256

DEFAULT_TIMEOUT_SECONDS = 300
DEFAULT_MAX_REPORT_BYTES = 4 << 20


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


def diff_outputs(
    left: Path,
    right: Path,
    *,
    use_diffoscope: bool = True,
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS,
    max_report_bytes: int = DEFAULT_MAX_REPORT_BYTES,
) -> bytes:
    """Report how the artifact directories ``left`` and ``right`` differ."""
    diffoscope = shutil.which("diffoscope") if use_diffoscope else None
    if diffoscope is not None:
        command = [
            diffoscope,
            "--text",
            "-",
            "--no-progress",
            "--exclude-directory-metadata=yes",
            f"--max-report-size={max_report_bytes}",
            f"--timeout={timeout_seconds}",
            str(left),
            str(right),
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, check=False, timeout=timeout_seconds + 30
            )
        except subprocess.TimeoutExpired:
            done = None
        # diffoscope exits 0 when equal and 1 when it found differences.
        if done is not None and done.returncode in (0, 1):
            header = b"diffoscope report\n\n"
            return (header + done.stdout)[:max_report_bytes]
    return _builtin(left, right)[:max_report_bytes]
