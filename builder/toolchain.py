"""The Rust toolchain's identity: ``rustc -vV`` release and commit, and a digest of its files.

The toolchain lives on the host (installed by rustup) and is mounted read-only into the build
sandbox. Its files digest is ``builder.fstree.tree_digest(dir, owners=False)``; hashing a
toolchain takes seconds, so the digest is cached on disk keyed by the cheap (path, size,
mtime) listing of the directory, and a warm lookup costs only the listing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from pathlib import Path

from builder import fstree
from builder.image import cache_dir
from builder.recipe import Toolchain
from logserver.core.errors import FormatError, OperationalError


def find_toolchain_dir(toolchain: str | None = None) -> Path:
    """The real directory of a rustup toolchain (``rustup which rustc``, symlinks resolved)."""
    command = ["rustup", "which", "rustc"]
    if toolchain is not None:
        command += ["--toolchain", toolchain]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OperationalError(f"cannot run rustup: {exc}") from exc
    if done.returncode != 0:
        raise OperationalError(f"rustup which rustc failed: {done.stderr.strip()}")
    return Path(os.path.realpath(done.stdout.strip())).parent.parent


def parse_rustc_version(text: str) -> tuple[str, str]:
    """Return (release, commit-hash) from the output of ``rustc -vV``."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, separator, value = line.partition(": ")
        if separator:
            fields[key.strip()] = value.strip()
    release = fields.get("release", "")
    commit = fields.get("commit-hash", "")
    if not re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?", release):
        raise FormatError("rustc -vV output", f"release {release!r} is not a version")
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise FormatError("rustc -vV output", f"commit-hash {commit!r} is not a git commit")
    return release, commit


def toolchain_digest(directory: Path) -> str:
    """The files digest of a toolchain directory, cached by its (path, size, mtime) listing."""
    key = fstree.listing_key(directory)
    cache_file = cache_dir() / "toolchain-digests" / f"{key}.json"
    if cache_file.exists():
        try:
            cached = json.loads(cache_file.read_text())
        except (OSError, ValueError) as exc:
            raise OperationalError(f"corrupt toolchain digest cache {cache_file}: {exc}") from exc
        if isinstance(cached, dict) and isinstance(cached.get("files_sha256"), str):
            return str(cached["files_sha256"])
        raise OperationalError(f"corrupt toolchain digest cache {cache_file}")
    digest = fstree.tree_digest(directory, owners=False)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    temporary = cache_file.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
    with temporary.open("w") as handle:
        json.dump({"directory": str(directory), "files_sha256": digest}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, cache_file)
    return digest


def toolchain_identity(directory: Path) -> Toolchain:
    """Identify the toolchain in ``directory`` (which holds bin/rustc and bin/cargo)."""
    rustc = directory / "bin" / "rustc"
    try:
        done = subprocess.run(
            [str(rustc), "-vV"], capture_output=True, text=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OperationalError(f"cannot run {rustc}: {exc}") from exc
    if done.returncode != 0:
        raise OperationalError(f"{rustc} -vV failed: {done.stderr.strip()}")
    release, commit = parse_rustc_version(done.stdout)
    return Toolchain(
        rustc_version=release, commit_hash=commit, files_sha256=toolchain_digest(directory)
    )
