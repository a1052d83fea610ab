"""Safe extraction of tar archives (``.crate`` files, archives copied out of containers).

Only regular files and directories are extracted. A member is refused if its name is absolute,
contains ``..`` or an empty component, leaves the required top-level prefix, is a link, device
or FIFO, repeats an earlier name, or if the archive exceeds the member-count or size bounds.
Files are created with ``O_EXCL | O_NOFOLLOW`` and mode 0644 or 0755 (set-id bits never kept).
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from logserver.core.errors import FormatError

_CHUNK = 1 << 16


@dataclass(frozen=True)
class ExtractLimits:
    """Bounds on what one archive may hold."""

    max_members: int = 50_000
    max_total_bytes: int = 512 << 20
    max_file_bytes: int = 256 << 20


def member_path(name: str, strip_prefix: str | None, what: str) -> PurePosixPath | None:
    """The safe relative path of a member, or None for the stripped prefix directory itself.

    Raises FormatError for anything that could land outside the destination.
    """
    if not name or name.startswith("/") or "\\" in name or "\0" in name:
        raise FormatError(what, f"member name {name!r} is absolute or malformed")
    parts = name.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise FormatError(what, f"member name {name!r} has an empty, '.' or '..' component")
    if strip_prefix is not None:
        if parts[0] != strip_prefix:
            raise FormatError(what, f"member {name!r} is not under {strip_prefix}/")
        parts = parts[1:]
        if not parts:
            return None
    return PurePosixPath(*parts)


def safe_extract(
    source: IO[bytes],
    destination: Path,
    *,
    what: str,
    strip_prefix: str | None = None,
    compressed: bool = False,
    limits: ExtractLimits | None = None,
) -> list[PurePosixPath]:
    """Extract the tar read from ``source`` into the existing directory ``destination``.

    Returns the extracted file paths (relative). With ``strip_prefix`` every member must lie
    under that top-level directory, which is removed from the extracted paths.
    """
    limits = limits or ExtractLimits()
    destination = destination.resolve()
    seen: set[PurePosixPath] = set()
    files: list[PurePosixPath] = []
    total = 0
    try:
        with tarfile.open(fileobj=source, mode="r|gz" if compressed else "r|") as archive:
            for count, member in enumerate(archive, start=1):
                if count > limits.max_members:
                    raise FormatError(what, f"more than {limits.max_members} members")
                relative = member_path(member.name, strip_prefix, what)
                if relative is None:
                    if not member.isdir():
                        raise FormatError(what, f"{member.name!r} must be a directory")
                    continue
                if relative in seen:
                    raise FormatError(what, f"member {member.name!r} appears twice")
                seen.add(relative)
                target = destination.joinpath(*relative.parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isreg():
                    raise FormatError(what, f"member {member.name!r} is a link or special file")
                if member.size > limits.max_file_bytes:
                    raise FormatError(what, f"member {member.name!r} is too large")
                total += member.size
                if total > limits.max_total_bytes:
                    raise FormatError(what, f"unpacked size exceeds {limits.max_total_bytes}")
                handle = archive.extractfile(member)
                if handle is None:
                    raise FormatError(what, f"member {member.name!r} has no data")
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.parent.resolve() != destination.joinpath(*relative.parts[:-1]):
                    raise FormatError(what, f"member {member.name!r} escapes the destination")
                mode = 0o755 if member.mode & 0o100 else 0o644
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                descriptor = os.open(target, flags, mode)
                with os.fdopen(descriptor, "wb") as out:
                    while chunk := handle.read(_CHUNK):
                        out.write(chunk)
                os.chmod(target, mode)
                files.append(relative)
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, FileExistsError):
            raise FormatError(what, f"member collides with an existing path: {exc}") from exc
        if isinstance(exc, tarfile.TarError | EOFError):
            raise FormatError(what, f"not a valid tar archive: {exc}") from exc
        raise
    return files
