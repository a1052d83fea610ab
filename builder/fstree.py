"""Canonical digests of directory trees (the build image's root file system, the toolchain).

A tree is walked in sorted order of its relative paths (as UTF-8 bytes); each entry becomes one
line, the canonical JSON array ``[path, type, mode, uid, gid, size, sha256, link_target]``
(type ``d``/``f``/``l``; mode the permission bits; size and sha256 only for files, else 0 and
""; link_target only for symlinks). The digest is the SHA-256 of the lines, each ending in a
newline. Modification times are never part of it. Hard links count as separate files; devices,
FIFOs and sockets are refused.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from logserver.core import canonical_json
from logserver.core.errors import FormatError

_CHUNK = 1 << 20


@dataclass(frozen=True)
class TreeEntry:
    """One path of a walked tree, relative to its root."""

    path: str
    kind: str  # "d", "f" or "l"
    mode: int
    uid: int
    gid: int
    size: int
    sha256: str
    link_target: str

    def line(self) -> bytes:
        value = [
            self.path,
            self.kind,
            self.mode,
            self.uid,
            self.gid,
            self.size,
            self.sha256,
            self.link_target,
        ]
        return canonical_json.encode(value, "tree entry") + b"\n"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sorted_paths(root: Path) -> list[str]:
    paths: list[str] = []
    for directory, subdirs, files in os.walk(root, followlinks=False):
        relative_dir = os.path.relpath(directory, root)
        for name in subdirs + files:
            relative = name if relative_dir == "." else f"{relative_dir}/{name}"
            try:
                relative.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise FormatError("file tree", f"path {relative!r} is not UTF-8") from exc
            if "\n" in relative:
                raise FormatError("file tree", f"path {relative!r} contains a newline")
            paths.append(relative)
    paths.sort(key=lambda path: path.encode("utf-8"))
    return paths


def walk(root: Path, *, owners: bool = True, hash_files: bool = True) -> Iterator[TreeEntry]:
    """Yield the canonical entries of the tree under ``root`` (``root`` itself excluded).

    With ``hash_files=False`` a file's ``sha256`` is left empty (a caller that reads the file
    anyway, such as the archive writer of :mod:`builder.envarchive`, hashes it itself).

    With ``owners=False`` uid and gid are recorded as 0 and the mode is reduced to whether the
    owner may execute (0o755 or 0o644 for files, 0o755 for directories): right for trees
    such as a toolchain whose ownership and umask vary between machines.
    """
    for relative in _sorted_paths(root):
        full = root / relative
        info = full.lstat()
        mode = stat.S_IMODE(info.st_mode)
        uid, gid = (info.st_uid, info.st_gid) if owners else (0, 0)
        if stat.S_ISLNK(info.st_mode):
            yield TreeEntry(relative, "l", 0o777, uid, gid, 0, "", os.readlink(full))
        elif stat.S_ISDIR(info.st_mode):
            yield TreeEntry(relative, "d", mode if owners else 0o755, uid, gid, 0, "", "")
        elif stat.S_ISREG(info.st_mode):
            if not owners:
                mode = 0o755 if mode & stat.S_IXUSR else 0o644
            digest = file_sha256(full) if hash_files else ""
            yield TreeEntry(relative, "f", mode, uid, gid, info.st_size, digest, "")
        else:
            raise FormatError("file tree", f"{relative} is a device, FIFO or socket")


def tree_digest(root: Path, *, owners: bool = True) -> str:
    """Hex SHA-256 over the canonical entries of the tree under ``root``."""
    digest = hashlib.sha256()
    for entry in walk(root, owners=owners):
        digest.update(entry.line())
    return digest.hexdigest()


def listing_key(root: Path) -> str:
    """A cheap fingerprint of a tree: SHA-256 over (path, size, mtime_ns) of every entry."""
    digest = hashlib.sha256()
    for relative in _sorted_paths(root):
        info = (root / relative).lstat()
        digest.update(f"{relative}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()
