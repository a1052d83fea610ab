"""The build image: a minimal Debian root file system made with debootstrap, imported into Docker.

Images are never pulled. ``ensure_build_image`` bootstraps the image once per machine and
afterwards finds it at once by its labels. The image is identified by ``rootfs_sha256``, the
``builder.fstree`` digest of the cleaned root file system (volatile files such as logs,
caches, machine ids and the host's resolver configuration removed). Its tag is
``synchronicity-build:<rootfs_sha256[:16]>``. Bootstrapping needs root and the ``debootstrap``
Debian package.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from builder import fstree
from logserver.core import canonical_json
from logserver.core.errors import OperationalError

Progress = Callable[[str], None]

IMAGE_REPOSITORY = "synchronicity-build"
LABEL_ROOTFS = "synchronicity.rootfs-sha256"
LABEL_CONFIG = "synchronicity.image-config"
# Every file of the image carries this modification time (1980-01-01T00:00:00Z); the sandbox
# uses the same value for SOURCE_DATE_EPOCH.
FIXED_EPOCH = 315532800

# Paths (relative to the root) whose contents vary from one bootstrap to the next or leak the
# host, removed before the digest is taken. Directories listed here are emptied, not removed.
_EMPTIED_DIRS = (
    "dev",
    "proc",
    "sys",
    "run",
    "tmp",
    "var/tmp",
    "var/log",
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/cache/debconf",
    "var/cache/ldconfig",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
)
_REMOVED_FILES = (
    "etc/machine-id",
    "var/lib/dbus/machine-id",
    "etc/resolv.conf",
    "etc/hosts",
    "etc/mtab",
    "var/lib/dpkg/lock",
    "var/lib/dpkg/lock-frontend",
    "var/lib/dpkg/triggers/Lock",
    "var/lib/dpkg/status-old",
    "var/lib/dpkg/diversions-old",
    "var/lib/dpkg/available-old",
    "etc/passwd-",
    "etc/group-",
    "etc/shadow-",
    "etc/gshadow-",
    "root/.bash_history",
)


@dataclass(frozen=True)
class ImageConfig:
    """What to bootstrap. Its ``key`` labels the image so a later call can find it."""

    suite: str = "bookworm"
    variant: str = "minbase"
    packages: tuple[str, ...] = ("gcc", "libc6-dev")
    mirror: str = "http://deb.debian.org/debian"

    @property
    def key(self) -> str:
        value = {
            "mirror": self.mirror,
            "packages": sorted(self.packages),
            "suite": self.suite,
            "variant": self.variant,
        }
        return hashlib.sha256(canonical_json.encode(value)).hexdigest()


@dataclass(frozen=True)
class BuildImage:
    """A build image present in the local Docker engine."""

    tag: str
    rootfs_sha256: str
    image_id: str


def stderr_progress(line: str) -> None:
    print(f"[builder] {line}", file=sys.stderr, flush=True)


def docker_client() -> docker.DockerClient:
    """Connect to the local Docker engine or raise OperationalError."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://") and not os.path.exists(host.removeprefix("unix://")):
        raise OperationalError(f"Docker engine unavailable: no socket at {host}")
    try:
        client = docker.from_env(timeout=600)
    except docker.errors.DockerException as exc:
        raise OperationalError(f"Docker engine unavailable: {exc}") from exc
    try:
        client.ping()
    except docker.errors.DockerException as exc:
        client.close()
        raise OperationalError(f"Docker engine unavailable: {exc}") from exc
    return client


def image_tag(rootfs_sha256: str) -> str:
    return f"{IMAGE_REPOSITORY}:{rootfs_sha256[:16]}"


def find_build_image(
    client: docker.DockerClient,
    *,
    rootfs_sha256: str | None = None,
    config: ImageConfig | None = None,
) -> BuildImage | None:
    """Find an imported build image by root file system digest and/or configuration."""
    filters = [f"{LABEL_ROOTFS}={rootfs_sha256}" if rootfs_sha256 else LABEL_ROOTFS]
    if config is not None:
        filters.append(f"{LABEL_CONFIG}={config.key}")
    try:
        images = client.images.list(filters={"label": filters})
    except docker.errors.DockerException as exc:
        raise OperationalError(f"cannot list Docker images: {exc}") from exc
    for image in sorted(images, key=lambda image: str(image.id)):
        digest = image.labels.get(LABEL_ROOTFS, "")
        if image_tag(digest) in image.tags:
            return BuildImage(tag=image_tag(digest), rootfs_sha256=digest, image_id=str(image.id))
    return None


@contextlib.contextmanager
def _machine_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cache_dir() -> Path:
    base = os.environ.get("SYNCHRONICITY_CACHE") or os.path.expanduser("~/.cache/synchronicity")
    return Path(base)


def ensure_build_image(
    client: docker.DockerClient | None = None,
    config: ImageConfig | None = None,
    *,
    progress: Progress = stderr_progress,
    work_dir: Path | None = None,
) -> BuildImage:
    """Return the build image for ``config``, bootstrapping and importing it if absent."""
    client = client or docker_client()
    config = config or ImageConfig()
    found = find_build_image(client, config=config)
    if found is not None:
        return found
    with _machine_lock(cache_dir() / "build-image.lock"):
        found = find_build_image(client, config=config)
        if found is not None:
            return found
        with tempfile.TemporaryDirectory(prefix="synchronicity-image-", dir=work_dir) as tmp:
            root = Path(tmp) / "rootfs"
            started = time.monotonic()
            bootstrap_rootfs(config, root, progress)
            progress(f"debootstrap done in {time.monotonic() - started:.1f}s")
            clean_rootfs(root)
            digest = fstree.tree_digest(root)
            progress(f"root file system sha256 {digest}")
            tar_path = Path(tmp) / "rootfs.tar"
            write_rootfs_tar(root, tar_path)
            progress(f"rootfs tar {tar_path.stat().st_size // (1 << 20)} MiB; importing")
            return _import(client, tar_path, digest, config)


def bootstrap_rootfs(config: ImageConfig, root: Path, progress: Progress) -> None:
    """Run debootstrap into ``root`` (needs root privileges and the debootstrap package)."""
    if shutil.which("debootstrap") is None:
        raise OperationalError("debootstrap is not installed (apt-get install -y debootstrap)")
    command = [
        "debootstrap",
        f"--variant={config.variant}",
        f"--include={','.join(sorted(config.packages))}",
        config.suite,
        str(root),
        config.mirror,
    ]
    progress("running " + " ".join(command))
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(FIXED_EPOCH), LC_ALL="C.UTF-8")
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as process:
        assert process.stdout is not None
        tail: list[str] = []
        for line in process.stdout:
            tail = [*tail[-19:], line.rstrip()]
            progress(line.rstrip())
        status = process.wait()
    if status != 0:
        raise OperationalError(f"debootstrap failed with status {status}: " + "\n".join(tail))


def _empty_directory(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        return
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def clean_rootfs(root: Path) -> None:
    """Remove volatile and host-specific files so the digest depends only on the packages."""
    for relative in _EMPTIED_DIRS:
        _empty_directory(root / relative)
    for relative in _REMOVED_FILES:
        (root / relative).unlink(missing_ok=True)
    (root / "etc/hostname").write_text("synchronicity\n")
    for directory, _subdirs, files in os.walk(root):
        for name in files:
            if name.endswith((".pyc", ".dpkg-old", ".dpkg-new")):
                (Path(directory) / name).unlink()


def write_rootfs_tar(root: Path, tar_path: Path) -> None:
    """Write the tree as a tar in canonical order with fixed times and numeric owners."""
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as archive:
        for entry in fstree.walk(root):
            info = tarfile.TarInfo(entry.path)
            info.mode = entry.mode
            info.uid, info.gid = entry.uid, entry.gid
            info.uname = info.gname = ""
            info.mtime = FIXED_EPOCH
            if entry.kind == "d":
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            elif entry.kind == "l":
                info.type = tarfile.SYMTYPE
                info.linkname = entry.link_target
                archive.addfile(info)
            else:
                info.size = entry.size
                with (root / entry.path).open("rb") as handle:
                    archive.addfile(info, handle)


def import_rootfs(
    client: docker.DockerClient, tar_path: Path, tag: str, changes: list[str], what: str
) -> None:
    """``docker import`` a root file system tar as ``repository:tag`` (never a pull)."""
    repository, _, version = tag.partition(":")
    try:
        client.api.import_image_from_file(
            str(tar_path), repository=repository, tag=version, changes=changes
        )
    except docker.errors.DockerException as exc:
        raise OperationalError(f"docker import of the {what} failed: {exc}") from exc


def _import(
    client: docker.DockerClient, tar_path: Path, digest: str, config: ImageConfig
) -> BuildImage:
    tag = image_tag(digest)
    changes = [
        f"LABEL {LABEL_ROOTFS}={digest}",
        f"LABEL {LABEL_CONFIG}={config.key}",
        f"LABEL synchronicity.suite={config.suite}",
        f"LABEL synchronicity.packages={','.join(sorted(config.packages))}",
    ]
    import_rootfs(client, tar_path, tag, changes, "build image")
    found = find_build_image(client, rootfs_sha256=digest, config=config)
    if found is None:
        raise OperationalError(f"imported build image {tag} not found afterwards")
    return found
