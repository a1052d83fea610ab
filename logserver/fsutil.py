"""Atomic state files: write a temporary file, fsync it, rename it over the old one, fsync the
directory. A reader sees the old contents or the new, never a mix.

Files are private (0600) unless the caller asks for another mode: state files hold secrets
(a builder's commitment nonces, keys), and a file made readable by mistake leaks them for good.
The mode is set with ``fchmod`` on the temporary file before any byte is written, so neither
the umask nor a temporary file left over by a crash can widen it, and the rename replaces the
old file with a new one: a file that was 0644 before is 0600 after.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE = 0o600


def atomic_write(path: Path, data: bytes, mode: int = PRIVATE) -> None:
    """Replace ``path`` with ``data`` atomically and durably; the new file has ``mode``."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, PRIVATE)
    try:
        os.fchmod(fd, mode)  # whatever the umask, and even if tmp was left by a crash
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
