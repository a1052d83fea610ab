"""Helpers of the deploy tests: a small build environment, and the Docker API proxy as a process.

The **small environment** makes the acquisition of an environment by digest cheap enough to
test on every run: its root file system is the node image's base (Debian minbase) without what
the sandbox's script does not use (the shell, coreutils, tar, sed and grep remain: 30 MiB, one
blob, instead of the build image's 1 GiB), its toolchain two shell scripts: ``rustc`` answers
``-vV`` as a real one does (a release and commit of its own), and ``cargo build`` writes the
crate's rlib as a fixed text, so every build of a crate agrees. A recipe of a real crate with
this environment pinned (:meth:`SmallEnvironment.recipe`) is built by real sandboxes, which
obtain the environment from the export directory (``rootfs-<tree>.tar``,
``toolchain-<tree>.tar``) or from a blob store (:meth:`SmallEnvironment.blobs`: the chunks and
index of each archive).

:class:`ProxyProcess` runs ``synchronicity deploy proxy`` on this machine with a socket a
client, for tests that drive the proxy directly.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import envarchive
from builder.envarchive import (
    CHUNK_BYTES,
    KIND_ROOTFS,
    KIND_TOOLCHAIN,
    ArchiveHasher,
    ArchiveIndex,
    Encoder,
    archive_name,
)
from builder.recipe import Recipe, Toolchain
from deploy.image import base_tar, extract_base

RELEASE = "1.0.0-synchronicity-test"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
RUSTC = f"""#!/bin/sh
# A stand-in for rustc: it only answers -vV.
if [ "$1" = "-vV" ]; then
  printf 'rustc {RELEASE} ({COMMIT[:9]} 2020-01-01)\\nbinary: rustc\\n'
  printf 'commit-hash: {COMMIT}\\ncommit-date: 2020-01-01\\n'
  printf 'host: x86_64-unknown-linux-gnu\\nrelease: {RELEASE}\\n'
  exit 0
fi
echo 'a stand-in for rustc' 1>&2
exit 1
"""
CARGO = """#!/bin/sh
# A stand-in for cargo: `cargo build ... --profile P --target T` writes the crate's rlib as a
# fixed text into the profile directory, as if it were built.
target=x86_64-unknown-linux-gnu
profile=release
while [ "$#" -gt 0 ]; do
  case "$1" in
    --target) target=$2; shift ;;
    --profile) profile=$2; shift ;;
  esac
  shift
done
[ "$profile" = dev ] && profile=debug
name=$(sed -n 's/^name = "\\(.*\\)"$/\\1/p' Cargo.toml | head -n 1 | tr - _)
dir="$CARGO_TARGET_DIR/$target/$profile"
mkdir -p "$dir" || exit 1
printf 'the rlib of %s, made by a stand-in for cargo\\n' "$name" >"$dir/lib$name.rlib"
echo "stand-in cargo: wrote lib$name.rlib" 1>&2
"""


# What the sandbox's script does not use, removed from the base (121 MiB) to make the root file
# system 32 MiB: a blob of the log's store, fetched and imported by four nodes at once.
UNUSED = (
    "usr/share/*", "usr/lib/python3*", "usr/bin/python*", "usr/bin/perl*", "usr/sbin/*",
    "usr/lib/x86_64-linux-gnu/perl*", "usr/lib/x86_64-linux-gnu/libpython*",
    "usr/lib/x86_64-linux-gnu/gconv", "usr/lib/apt", "usr/bin/apt*", "usr/bin/dpkg*",
    "var/lib/dpkg", "var/cache/*", "usr/bin/openssl", "usr/bin/gpgv", "usr/bin/bash",
    *(f"usr/lib/x86_64-linux-gnu/lib{name}*" for name in (
        "crypto", "ssl", "db-", "sqlite", "apt", "gnutls", "p11", "unistring", "stdc++",
        "gcrypt", "mvec",
    )),
)  # fmt: skip


@dataclass(frozen=True)
class SmallEnvironment:
    """The archives of the small environment, in ``export_dir`` as an export lays them out."""

    export_dir: Path
    rootfs: ArchiveIndex
    toolchain: ArchiveIndex

    def recipe(self, base: Recipe) -> Recipe:
        """``base`` (a real crate's recipe) with this environment pinned."""
        toolchain = Toolchain(
            rustc_version=RELEASE,
            commit_hash=COMMIT,
            files_sha256=self.toolchain.tree_sha256,
            archive_sha256=self.toolchain.digest,
        )
        return dataclasses.replace(
            base,
            toolchain=toolchain,
            rootfs_sha256=self.rootfs.tree_sha256,
            rootfs_archive_sha256=self.rootfs.digest,
        )

    def blobs(self) -> Iterator[bytes]:
        """Every blob a blob store needs to hand out both archives: chunks, then each index."""
        for index in (self.rootfs, self.toolchain):
            path = self.export_dir / archive_name(index.kind, index.tree_sha256, compressed=False)
            with path.open("rb") as handle:
                while chunk := handle.read(CHUNK_BYTES):
                    yield chunk
            yield index.to_json()


def make_small_environment(directory: Path) -> SmallEnvironment:
    """Write the two archives into ``directory`` (made if absent)."""
    directory.mkdir(parents=True, exist_ok=True)
    tools = directory / "toolchain-tree"
    (tools / "bin").mkdir(parents=True)
    for name, text in (("rustc", RUSTC), ("cargo", CARGO)):
        (tools / "bin" / name).write_text(text)
        (tools / "bin" / name).chmod(0o755)
    toolchain = _write_archive(tools, KIND_TOOLCHAIN, directory)
    shutil.rmtree(tools)

    tree = directory / "rootfs-tree"
    extract_base(base_tar(lambda line: None), tree)  # the node image's base (needs root)
    for pattern in UNUSED:
        for path in tree.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    rootfs = _write_archive(tree, KIND_ROOTFS, directory)
    shutil.rmtree(tree)
    return SmallEnvironment(directory, rootfs, toolchain)


def _write_archive(tree: Path, kind: str, directory: Path) -> ArchiveIndex:
    """The canonical archive of ``tree`` as ``directory/<kind>-<tree sha256>.tar``."""
    encoder, hasher = Encoder(kind), ArchiveHasher()
    staged = directory / f"{kind}.part"
    with staged.open("wb") as sink:
        for piece in encoder.encode(envarchive.tree_entries(tree, kind)):
            hasher.update(piece)
            sink.write(piece)
    assert encoder.tree_sha256 is not None
    index = hasher.index(kind, encoder.tree_sha256)
    staged.rename(directory / archive_name(kind, index.tree_sha256, compressed=False))
    return index


class ProxyProcess:
    """``synchronicity deploy proxy`` on this machine: one socket a client in ``directory``,
    its JSON log in ``directory/proxy.jsonl``."""

    def __init__(self, directory: Path, clients: list[str], image_prefix: str) -> None:
        self.directory = directory
        self.sockets = {name: directory / name / "docker.sock" for name in clients}
        self.log_path = directory / "proxy.jsonl"
        command = [sys.executable, "-m", "synchronicity", "deploy", "proxy"]
        command += ["--image-prefix", image_prefix, "--log", str(self.log_path)]
        for name, path in self.sockets.items():
            path.parent.mkdir(parents=True)
            path.parent.chmod(0o755)  # a node in a container (uid 10001) reaches its socket
            command += ["--client", f"{name}={path}"]
        self.stderr_path = directory / "proxy.err"
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 20
        while not all(path.exists() for path in self.sockets.values()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the proxy did not start: {self.stderr_path.read_text()}")
            time.sleep(0.05)

    def url(self, client: str) -> str:
        return f"unix://{self.sockets[client]}"

    def events(self) -> list[dict[str, Any]]:
        """The calls the proxy decided, in order."""
        lines = self.log_path.read_text().splitlines() if self.log_path.exists() else []
        return [event for event in map(json.loads, lines) if "decision" in event]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
