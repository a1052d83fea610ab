"""The build and diff images: minimal Debian root file systems made with debootstrap, imported.

Images are never pulled. ``ensure_build_image`` bootstraps an image once per machine and
afterwards finds it at once by its labels. An image is identified by ``rootfs_sha256``, the
``builder.fstree`` digest of the cleaned root file system (volatile files such as logs,
caches, machine ids and the host's resolver configuration removed). Its tag is
``<repository>:<rootfs_sha256[:16]>``: ``synchronicity-build`` for the build image (the
recipe pins its digest), ``synchronicity-diff`` for the image that runs diffoscope.

The cleaned tree is written as a canonical archive (:mod:`builder.envarchive`) into the cache
(``<cache>/environment/rootfs-<digest>.tar``) and imported from there; ``rootfs_archive`` makes
that archive from an imported image (``docker save``) on a host that has the image but not the
archive, and ``import_rootfs_archive`` imports an archive (fetched from a source) that this host
did not bootstrap. The repositories are ``<prefix>-build`` and ``<prefix>-env``, the prefix
``synchronicity`` unless ``SYNCHRONICITY_IMAGE_PREFIX`` says otherwise (two builders that share
one Docker engine but must not share images, such as the "other host" of a test).

Bootstrapping is ``debootstrap --variant=minbase`` followed by ``apt-get install`` of the
image's packages in a chroot. The exact Debian package versions are pinned by a lock in
``builder/images/<name>.lock`` (``name=version`` lines, the ``dpkg`` status of the finished
image): every locked version is installed explicitly and the finished image must list exactly
the lock, else bootstrapping fails naming the differences. ``update_lock`` rewrites a lock from
the archive of the day. The lock is also written into the image
(``etc/synchronicity/debian-packages.lock``). Bootstrapping needs root and ``debootstrap``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

import docker
import docker.errors

from builder import envarchive
from builder.debian import (
    BUILD_PACKAGES,
    DIFF_PACKAGES,
    installed_packages,
    lock_differences,
    lock_text,
    parse_lock,
)
from builder.envarchive import KIND_ROOTFS, ArchiveHasher, ArchiveIndex, Encoder
from builder.fstree import TreeEntry
from logserver.core import canonical_json
from logserver.core.errors import OperationalError, UsageError, VerificationError

Progress = Callable[[str], None]

IMAGE_REPOSITORY = "synchronicity-build"
DIFF_REPOSITORY = "synchronicity-diff"
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


LOCK_DIR = Path(__file__).resolve().parent / "images"
IMAGE_LOCK_PATH = "etc/synchronicity/debian-packages.lock"
PREFIX_ENV = "SYNCHRONICITY_IMAGE_PREFIX"
_PREFIX = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")


def image_prefix() -> str:
    """The first part of this builder's image repositories (``synchronicity`` by default)."""
    prefix = os.environ.get(PREFIX_ENV) or "synchronicity"
    if _PREFIX.fullmatch(prefix) is None or len(prefix) > 64:
        raise UsageError(f"{PREFIX_ENV}={prefix!r} is not a Docker repository name")
    return prefix


def build_repository() -> str:
    """The build image's repository: ``synchronicity-build`` unless the prefix differs."""
    return f"{image_prefix()}-build"


@dataclass(frozen=True)
class ImageConfig:
    """What to bootstrap. Its ``key`` labels the image so a later call can find it.

    ``lock`` is the text of the package lock (``parse_lock``); None installs the newest
    versions of the archive. ``repository`` names the image, it is not part of the key.
    """

    suite: str = "bookworm"
    variant: str = "minbase"
    packages: tuple[str, ...] = ("gcc", "libc6-dev")
    mirror: str = "http://deb.debian.org/debian"
    repository: str = field(default_factory=build_repository)
    lock: str | None = None

    @property
    def key(self) -> str:
        value: dict[str, object] = {
            "mirror": self.mirror,
            "packages": sorted(self.packages),
            "suite": self.suite,
            "variant": self.variant,
        }
        if self.lock is not None:
            value["lock_sha256"] = hashlib.sha256(self.lock.encode()).hexdigest()
        return hashlib.sha256(canonical_json.encode(value)).hexdigest()


def lock_path(name: str) -> Path:
    return LOCK_DIR / f"{name}.lock"


def _read_lock(name: str) -> str | None:
    path = lock_path(name)
    return path.read_text() if path.exists() else None


def build_image_config() -> ImageConfig:
    """The build image: ``BUILD_PACKAGES`` at the versions of ``builder/images/build.lock``."""
    return ImageConfig(packages=BUILD_PACKAGES, lock=_read_lock("build"))


def diff_image_config() -> ImageConfig:
    """The diff image: ``DIFF_PACKAGES`` at the versions of ``builder/images/diff.lock``."""
    return ImageConfig(packages=DIFF_PACKAGES, repository=DIFF_REPOSITORY, lock=_read_lock("diff"))


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


def image_tag(rootfs_sha256: str, repository: str | None = None) -> str:
    return f"{repository or build_repository()}:{rootfs_sha256[:16]}"


def find_build_image(
    client: docker.DockerClient,
    *,
    rootfs_sha256: str | None = None,
    config: ImageConfig | None = None,
) -> BuildImage | None:
    """Find an imported image by root file system digest and/or configuration.

    Without a ``config`` only build images (``synchronicity-build``) are considered.
    """
    repository = config.repository if config is not None else build_repository()
    filters = [f"{LABEL_ROOTFS}={rootfs_sha256}" if rootfs_sha256 else LABEL_ROOTFS]
    if config is not None:
        filters.append(f"{LABEL_CONFIG}={config.key}")
    for image_id, tags, labels in list_images(client, {"label": filters}):
        digest = labels.get(LABEL_ROOTFS, "")
        tag = image_tag(digest, repository)
        if tag in tags:
            return BuildImage(tag=tag, rootfs_sha256=digest, image_id=image_id)
    return None


T = TypeVar("T")


def settled(find: Callable[[], T | None], attempts: int = 5) -> T | None:
    """``find()``, asked again a few times while it finds nothing: right after an import or a
    tag, another builder sharing the engine may be moving the same tag to its own copy."""
    for attempt in range(attempts):
        found = find()
        if found is not None or attempt == attempts - 1:
            return found
        time.sleep(0.2 * (attempt + 1))
    return None


def list_images(
    client: docker.DockerClient, filters: dict[str, list[str]]
) -> list[tuple[str, tuple[str, ...], dict[str, str]]]:
    """(id, tags, labels) of the images that match ``filters``, sorted by id, from one listing.

    Builders that share an engine (containers behind one Docker API proxy) import and tag the
    same names at once; inspecting each listed image in turn could miss a tag that moved from
    one image to another in between.
    """
    try:
        summaries = client.api.images(filters=filters)
    except docker.errors.DockerException as exc:
        raise OperationalError(f"cannot list Docker images: {exc}") from exc
    found = [
        (str(s["Id"]), tuple(s.get("RepoTags") or ()), dict(s.get("Labels") or {}))
        for s in summaries
    ]
    return sorted(found)


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


def environment_dir() -> Path:
    """Where this host keeps environment archives and their indexes (spec/builds.md 10.3)."""
    return cache_dir() / "environment"


def archive_path(kind: str, tree_sha256: str) -> Path:
    """The cached (uncompressed, verified) canonical archive of a tree."""
    return environment_dir() / envarchive.archive_name(kind, tree_sha256, compressed=False)


def index_path(kind: str, tree_sha256: str) -> Path:
    return environment_dir() / f"{kind}-{tree_sha256}.index.json"


def write_index(index: ArchiveIndex) -> None:
    path = index_path(index.kind, index.tree_sha256)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, index.to_json().decode())


def write_archive(
    entries: Iterable[envarchive.Entry], kind: str, dest: Path, expected: str | None = None
) -> ArchiveIndex:
    """Write the canonical archive of ``entries`` to ``dest`` (atomically) and its index beside
    the cached ones; with ``expected``, a tree of another digest is a VerificationError."""
    encoder, hasher = Encoder(kind), ArchiveHasher()
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}-{threading.get_ident()}.part")
    try:
        with partial.open("wb") as sink:
            for piece in encoder.encode(entries):
                hasher.update(piece)
                sink.write(piece)
            sink.flush()
            os.fsync(sink.fileno())
        assert encoder.tree_sha256 is not None
        if expected is not None and encoder.tree_sha256 != expected:
            raise VerificationError(f"the {kind} tree is {encoder.tree_sha256}, not {expected}")
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    index = hasher.index(kind, encoder.tree_sha256)
    write_index(index)
    return index


def ensure_build_image(
    client: docker.DockerClient | None = None,
    config: ImageConfig | None = None,
    *,
    progress: Progress = stderr_progress,
    work_dir: Path | None = None,
) -> BuildImage:
    """Return the image for ``config`` (default: the build image), bootstrapping it if absent."""
    client = client or docker_client()
    config = config or build_image_config()
    found = find_build_image(client, config=config)
    if found is not None:
        return found
    with _machine_lock(cache_dir() / "build-image.lock"):
        found = find_build_image(client, config=config)
        if found is not None:
            return found
        return _bootstrap_and_import(client, config, progress, work_dir)


def update_lock(
    name: str,
    config: ImageConfig,
    client: docker.DockerClient | None = None,
    *,
    progress: Progress = stderr_progress,
    work_dir: Path | None = None,
) -> BuildImage:
    """Bootstrap ``config`` unpinned, write its package listing to ``builder/images/<name>.lock``.

    The image is imported under the configuration that the new lock gives, so that
    ``ensure_build_image`` finds it at once afterwards.
    """
    client = client or docker_client()
    unpinned = dataclasses.replace(config, lock=None)
    with _machine_lock(cache_dir() / "build-image.lock"):
        return _bootstrap_and_import(client, unpinned, progress, work_dir, write_lock=name)


def _bootstrap_and_import(
    client: docker.DockerClient,
    config: ImageConfig,
    progress: Progress,
    work_dir: Path | None,
    *,
    write_lock: str | None = None,
) -> BuildImage:
    with tempfile.TemporaryDirectory(prefix="synchronicity-image-", dir=work_dir) as tmp:
        root = Path(tmp) / "rootfs"
        started = time.monotonic()
        lock = install_rootfs(config, root, progress)
        progress(f"bootstrap done in {time.monotonic() - started:.1f}s")
        if write_lock is not None:
            LOCK_DIR.mkdir(parents=True, exist_ok=True)
            _write_atomically(lock_path(write_lock), lock)
            progress(f"wrote {lock_path(write_lock)}")
            config = dataclasses.replace(config, lock=lock)
        clean_rootfs(root)
        staged = environment_dir() / f".rootfs-bootstrap-{os.getpid()}.tar"
        index = write_archive(envarchive.tree_entries(root, KIND_ROOTFS), KIND_ROOTFS, staged)
        digest = index.tree_sha256
        progress(f"root file system sha256 {digest}")
        tar_path = archive_path(KIND_ROOTFS, digest)
        os.replace(staged, tar_path)
        progress(f"rootfs archive {tar_path} ({index.size >> 20} MiB); importing")
        return _import(client, tar_path, digest, config)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    with temporary.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _chroot_env() -> dict[str, str]:
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LC_ALL": "C.UTF-8",
        "DEBIAN_FRONTEND": "noninteractive",
        "SOURCE_DATE_EPOCH": str(FIXED_EPOCH),
    }


def _run_logged(command: list[str], progress: Progress, what: str, env: dict[str, str]) -> None:
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
        raise OperationalError(f"{what} failed with status {status}:\n" + "\n".join(tail))


@contextlib.contextmanager
def _proc_mounted(root: Path) -> Iterator[None]:
    """/proc inside the chroot for package scripts; lazily unmounted so removal is safe."""
    proc = root / "proc"
    done = subprocess.run(
        ["mount", "-t", "proc", "proc", str(proc)], check=False, capture_output=True
    )
    if done.returncode != 0:
        raise OperationalError(f"cannot mount /proc in {root}: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "--lazy", str(proc)], check=False)


def install_rootfs(config: ImageConfig, root: Path, progress: Progress) -> str:
    """debootstrap minbase, then ``apt-get install`` the packages (pinned by the lock) in a chroot.

    Returns the lock text of what is installed; with ``config.lock`` it equals that lock, or
    OperationalError names the packages that differ.
    """
    if shutil.which("debootstrap") is None:
        raise OperationalError("debootstrap is not installed (apt-get install -y debootstrap)")
    pins = parse_lock(config.lock) if config.lock is not None else None
    if pins is not None:
        missing = sorted(set(config.packages) - set(pins))
        if missing:
            raise OperationalError(
                f"the {config.repository} lock does not pin {', '.join(missing)}: "
                "run `synchronicity image bootstrap --update-lock`"
            )
    env = dict(_chroot_env(), PATH=os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
    command = ["debootstrap", f"--variant={config.variant}", config.suite, str(root), config.mirror]
    progress("running " + " ".join(command))
    _run_logged(command, progress, "debootstrap", env)
    wanted = [f"{n}={v}" for n, v in pins.items()] if pins else sorted(config.packages)
    chroot = ["chroot", str(root)]
    with _proc_mounted(root):
        _run_logged(chroot + ["apt-get", "update"], progress, "apt-get update", _chroot_env())
        install = ["apt-get", "install", "--yes", "--no-install-recommends", "--allow-downgrades"]
        progress(f"installing {len(wanted)} packages")
        try:
            _run_logged(chroot + install + wanted, progress, "apt-get install", _chroot_env())
        except OperationalError as exc:
            if pins is None:
                raise
            raise OperationalError(
                f"cannot install the locked Debian packages of the {config.repository} image "
                "(the archive may have moved on: share the image tar of your network, or run "
                f"`synchronicity image bootstrap --update-lock`): {exc}"
            ) from exc
        _run_logged(chroot + ["apt-get", "clean"], progress, "apt-get clean", _chroot_env())
    # apt's record of which packages were installed only as dependencies: not needed, and it
    # differs between an install by name and an install of every locked version.
    (root / "var/lib/apt/extended_states").unlink(missing_ok=True)
    installed = installed_packages((root / "var/lib/dpkg/status").read_text())
    architecture = subprocess.run(
        chroot + ["dpkg", "--print-architecture"],
        capture_output=True,
        text=True,
        check=True,
        env=_chroot_env(),
    ).stdout.strip()
    text = lock_text(
        config.repository,
        installed,
        suite=config.suite,
        variant=config.variant,
        architecture=architecture,
        packages=config.packages,
    )
    if pins is not None:
        differences = lock_differences(pins, installed)
        if differences:
            raise OperationalError(
                f"the {config.repository} image does not match its lock:\n" + "\n".join(differences)
            )
        text = config.lock or text
    (root / IMAGE_LOCK_PATH).parent.mkdir(parents=True, exist_ok=True)
    (root / IMAGE_LOCK_PATH).write_text(text)
    return text


def bootstrap_rootfs(config: ImageConfig, root: Path, progress: Progress) -> None:
    """Run ``debootstrap --include=<packages>`` into ``root`` (root privileges, debootstrap).

    The node image's base (``deploy.image``) is made this way; the build and diff images
    with ``install_rootfs``.
    """
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
    """Write the tree as its canonical archive: canonical order, fixed times, numeric owners."""
    with tar_path.open("wb") as sink:
        for piece in Encoder(KIND_ROOTFS).encode(envarchive.tree_entries(root, KIND_ROOTFS)):
            sink.write(piece)


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
    tag = image_tag(digest, config.repository)
    changes = [
        f"LABEL {LABEL_ROOTFS}={digest}",
        f"LABEL {LABEL_CONFIG}={config.key}",
        f"LABEL synchronicity.suite={config.suite}",
        f"LABEL synchronicity.packages={','.join(sorted(config.packages))}",
    ]
    import_rootfs(client, tar_path, tag, changes, f"{config.repository} image")
    found = find_build_image(client, rootfs_sha256=digest, config=config)
    if found is None:
        raise OperationalError(f"imported image {tag} not found afterwards")
    return found


def rootfs_archive(client: docker.DockerClient, image: BuildImage, progress: Progress) -> Path:
    """The cached canonical archive of an imported build image's root file system.

    Made once, from ``docker save``: the image's one layer is read in canonical order and its
    tree digest must be the image's label, else VerificationError.
    """
    dest = archive_path(KIND_ROOTFS, image.rootfs_sha256)
    if dest.is_file():
        return dest
    environment_dir().mkdir(parents=True, exist_ok=True)
    progress(f"writing the archive of {image.tag} from docker save")
    with tempfile.TemporaryDirectory(prefix="save-", dir=environment_dir()) as tmp:
        saved = Path(tmp) / "image.tar"
        try:
            with saved.open("wb") as sink:
                for piece in client.images.get(image.tag).save(chunk_size=1 << 20):
                    sink.write(piece)
        except docker.errors.DockerException as exc:
            raise OperationalError(f"docker save {image.tag} failed: {exc}") from exc
        with tarfile.open(saved) as outer:
            layer = _single_layer(outer, image.tag)
            with tarfile.open(fileobj=layer, mode="r:") as tree:
                write_archive(_layer_entries(tree), KIND_ROOTFS, dest, image.rootfs_sha256)
    return dest


def _single_layer(outer: tarfile.TarFile, tag: str) -> IO[bytes]:
    manifest_file = outer.extractfile("manifest.json")
    if manifest_file is None:
        raise OperationalError(f"docker save of {tag} has no manifest.json")
    layers = json.load(manifest_file)[0]["Layers"]
    layer = outer.extractfile(layers[0]) if len(layers) == 1 else None
    if layer is None:
        raise OperationalError(f"{tag} is not an imported image of one layer")
    return layer


def _layer_entries(tree: tarfile.TarFile) -> Iterator[envarchive.Entry]:
    """A layer's members as tree entries in canonical order (hard links as separate files)."""
    members: dict[str, tarfile.TarInfo] = {}
    for member in tree.getmembers():
        name = member.name.removeprefix("./").rstrip("/")
        if name and name != ".":
            members[name] = member
    for name in sorted(members, key=lambda n: n.encode("utf-8", "surrogateescape")):
        member = members[name]
        source = member
        if member.islnk():
            source = members[member.linkname.removeprefix("./").rstrip("/")]
        kind = "d" if member.isdir() else "l" if member.issym() else "f" if source.isreg() else "?"
        mode = 0o777 if kind == "l" else member.mode & 0o7777
        size = source.size if kind == "f" else 0
        link = member.linkname if kind == "l" else ""
        entry = TreeEntry(name, kind, mode, member.uid, member.gid, size, "", link)
        yield entry, (_member_pieces(tree, source) if kind == "f" else ())


def _member_pieces(tree: tarfile.TarFile, member: tarfile.TarInfo) -> Iterator[bytes]:
    handle = tree.extractfile(member)
    assert handle is not None
    with handle:
        while piece := handle.read(1 << 20):
            yield piece


def import_rootfs_archive(
    client: docker.DockerClient, path: Path, rootfs_sha256: str, progress: Progress
) -> BuildImage:
    """Import a cached rootfs archive as this host's build image ``<prefix>-build:<digest16>``.

    The archive is read and checked again on its way to Docker (canonical, the tree digest at
    its end); a mismatch aborts the import.
    """
    tag = image_tag(rootfs_sha256)
    repository, _, version = tag.partition(":")
    encoder = Encoder(KIND_ROOTFS)

    def pieces() -> Iterator[bytes]:
        with path.open("rb") as handle:
            yield from encoder.encode(envarchive.read_archive(handle), end=False)
        if encoder.tree_sha256 != rootfs_sha256:
            raise VerificationError(f"{path} holds the rootfs {encoder.tree_sha256}")
        yield b"\0" * (2 * 10240)  # the tar's end, sent only once the tree is verified

    progress(f"importing the root file system {rootfs_sha256[:16]} as {tag}")
    changes = [f"LABEL {LABEL_ROOTFS}={rootfs_sha256}"]
    try:
        client.api.import_image_from_stream(
            pieces(), repository=repository, tag=version, changes=changes
        )
    except docker.errors.DockerException as exc:
        raise OperationalError(f"docker import of {path} failed: {exc}") from exc
    found = settled(lambda: find_build_image(client, rootfs_sha256=rootfs_sha256))
    if found is None:
        raise OperationalError(f"imported image {tag} not found afterwards")
    return found
