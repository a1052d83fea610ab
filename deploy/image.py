"""The node image: Debian bookworm, Python 3.11 and ``synchronicity[server,builder]``; no pulls.

``ensure_node_image`` builds it without any registry and returns at once when it exists:

1. the base root file system (debootstrap, minbase, ``python3`` and ``python3-venv``) is made
   with ``builder.image`` and kept as a tar in the cache directory, so that a code change
   costs a venv install, not a second debootstrap;
2. the project's wheel is built (``pip wheel --no-deps``) and the node's dependencies are
   pinned to the versions installed here (``deploy.pins``); their wheels are downloaded from
   PyPI for CPython 3.11 on manylinux;
3. inside a chroot, the image's own Python makes a venv at ``/opt/synchronicity`` and the
   image's own pip (the Debian ``python3-pip-whl`` wheel, run from the wheel file, so the venv
   holds no pip) installs the pinned wheels offline;
4. a ``synchronicity`` user (uid 10001) owns ``/data``; the tree is cleaned and its
   ``builder.fstree`` digest names the image ``synchronicity-node:<digest[:16]>``, imported
   with ``synchronicity`` as the entry point.

The build key (base configuration, lock and wheel digest) labels the image: the same wheel
and lock find the same image. Progress goes to stderr. ``synchronicity deploy image`` builds
it and prints the tag. Needs root, ``debootstrap`` and a Docker engine.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
from packaging.utils import canonicalize_name

from builder import fstree
from builder.image import (
    FIXED_EPOCH,
    ImageConfig,
    Progress,
    bootstrap_rootfs,
    cache_dir,
    clean_rootfs,
    docker_client,
    import_rootfs,
    write_rootfs_tar,
)
from builder.image import _machine_lock as machine_lock
from deploy.pins import Installed, lock_text, resolve_pins
from logserver.core import canonical_json
from logserver.core.errors import OperationalError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
IMAGE_REPOSITORY = "synchronicity-node"
LABEL_ROOTFS = "synchronicity.rootfs-sha256"
LABEL_NODE_KEY = "synchronicity.node-build-key"
LABEL_IMPORTED = "synchronicity.imported-at"  # Unix time of the import (image times are fixed)
PRUNE_AFTER_SECONDS = 3600
BASE_CONFIG = ImageConfig(packages=("python3", "python3-venv"))
VENV = "/opt/synchronicity"
# The witness is also a builder: its node imports the Docker client (``builder``).
NODE_EXTRAS = ("server", "builder")
NODE_UID = 10001
DATA_DIR = "/data"
CONFIG_DIR = "/config"
# Bump when the steps below change what ends up in the image.
LAYOUT_VERSION = 1
_STAGE = "/root/wheels"  # where the wheels wait inside the chroot during the install
_MANYLINUX = ("manylinux2014", "manylinux_2_17", "manylinux_2_28", "manylinux_2_31")


@dataclass(frozen=True)
class NodeImage:
    """A node image present in the local Docker engine."""

    tag: str
    rootfs_sha256: str
    image_id: str
    build_key: str


def stderr_progress(line: str) -> None:
    print(f"[deploy.image] {line}", file=sys.stderr, flush=True)


def image_tag(rootfs_sha256: str) -> str:
    return f"{IMAGE_REPOSITORY}:{rootfs_sha256[:16]}"


def _installed(name: str) -> Installed | None:
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    return Installed(dist.version, tuple(dist.requires or ()))


def server_lock(project: Path = PROJECT_ROOT) -> str:
    """Pins for the project's base dependencies and ``NODE_EXTRAS``, as installed here."""
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    roots = list(meta["dependencies"])
    for extra in NODE_EXTRAS:
        roots += list(meta["optional-dependencies"][extra])
    pins = resolve_pins(roots, _installed)
    pins.pop(canonicalize_name(meta["name"]), None)
    return lock_text(pins)


def build_wheel(project: Path, out_dir: Path, progress: Progress) -> Path:
    """``pip wheel --no-deps`` of the project (hatchling builds reproducible wheels)."""
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out_dir)]
    if importlib.util.find_spec("hatchling") is not None:
        command.append("--no-build-isolation")  # build here without fetching a build environment
    _run(command + [str(project)], progress, "pip wheel")
    wheels = sorted(out_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise OperationalError(f"pip wheel produced {len(wheels)} wheels in {out_dir}")
    return wheels[0]


def build_key(wheel_sha256: str, lock: str) -> str:
    value = {
        "base": BASE_CONFIG.key,
        "layout": LAYOUT_VERSION,
        "lock": lock,
        "wheel": wheel_sha256,
    }
    return hashlib.sha256(canonical_json.encode(value)).hexdigest()


def find_node_image(client: docker.DockerClient, key: str) -> NodeImage | None:
    try:
        images = client.images.list(filters={"label": [f"{LABEL_NODE_KEY}={key}"]})
    except docker.errors.DockerException as exc:
        raise OperationalError(f"cannot list Docker images: {exc}") from exc
    for image in sorted(images, key=lambda image: str(image.id)):
        digest = image.labels.get(LABEL_ROOTFS, "")
        if image_tag(digest) in image.tags:
            return NodeImage(image_tag(digest), digest, str(image.id), key)
    return None


def ensure_node_image(
    client: docker.DockerClient | None = None,
    *,
    project: Path = PROJECT_ROOT,
    progress: Progress = stderr_progress,
    work_dir: Path | None = None,
) -> NodeImage:
    """Return the node image for the project as it is now, building it if absent."""
    client = client or docker_client()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="synchronicity-node-", dir=work_dir) as tmp:
        wheels = Path(tmp) / "wheels"
        wheel = build_wheel(project, wheels, progress)
        lock = server_lock(project)
        key = build_key(fstree.file_sha256(wheel), lock)
        found = find_node_image(client, key)
        if found is not None:
            progress(f"{found.tag} is up to date ({time.monotonic() - started:.1f}s)")
            return found
        with machine_lock(cache_dir() / "node-image.lock"):
            found = find_node_image(client, key)
            if found is not None:
                return found
            root = Path(tmp) / "rootfs"
            extract_base(base_tar(progress, work_dir), root)
            download_wheels(lock, wheels, progress)
            install_venv(root, wheels, wheel, lock, progress)
            add_node_user(root)
            clean_rootfs(root)
            digest = fstree.tree_digest(root)
            progress(f"root file system sha256 {digest}")
            tar_path = Path(tmp) / "rootfs.tar"
            write_rootfs_tar(root, tar_path)
            progress(f"rootfs tar {tar_path.stat().st_size >> 20} MiB; importing")
            image = _import(client, tar_path, digest, key)
            progress(f"built {image.tag} in {time.monotonic() - started:.1f}s")
            prune_node_images(client, keep=image, progress=progress)
            return image


def prune_node_images(client: docker.DockerClient, keep: NodeImage, progress: Progress) -> None:
    """Remove node images no container uses, imported over an hour ago (a code change makes a
    new image; another test session may still be about to use a recent one)."""
    try:
        images = client.images.list(filters={"label": [LABEL_NODE_KEY]})
    except docker.errors.DockerException as exc:
        raise OperationalError(f"cannot list Docker images: {exc}") from exc
    for image in images:
        created = image.labels.get(LABEL_IMPORTED, "")
        if image.id == keep.image_id or not (created.isascii() and created.isdigit()):
            continue
        if time.time() - int(created) < PRUNE_AFTER_SECONDS:
            continue
        try:
            client.images.remove(str(image.id), noprune=False)
        except docker.errors.APIError as exc:  # in use by a container: keep it
            progress(f"kept {image.tags}: {exc.explanation}")
        else:
            progress(f"removed older node image {image.tags}")


def base_tar(progress: Progress, work_dir: Path | None = None) -> Path:
    """The cached tar of the cleaned base root file system, bootstrapped on first use."""
    path = cache_dir() / f"node-base-{BASE_CONFIG.key[:16]}.tar"
    if path.exists():
        return path
    with tempfile.TemporaryDirectory(prefix="synchronicity-base-", dir=work_dir) as tmp:
        root = Path(tmp) / "rootfs"
        started = time.monotonic()
        bootstrap_rootfs(BASE_CONFIG, root, progress)
        progress(f"debootstrap done in {time.monotonic() - started:.1f}s")
        clean_rootfs(root)
        partial = path.with_suffix(".partial")
        write_rootfs_tar(root, partial)
        os.replace(partial, path)
    return path


def extract_base(tar_path: Path, root: Path) -> None:
    root.mkdir()
    _run(["tar", "-xpf", str(tar_path), "--numeric-owner", "-C", str(root)], None, "tar")


def download_wheels(lock: str, wheels: Path, progress: Progress) -> None:
    """Wheels of every pin for CPython 3.11 on manylinux of this machine's architecture."""
    (wheels / "requirements.lock").write_text(lock)
    machine = platform.machine()
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels)]
    command += ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp"]
    for abi in ("cp311", "abi3", "none"):
        command += ["--abi", abi]
    for tag in _MANYLINUX:
        command += ["--platform", f"{tag}_{machine}"]
    _run(command + ["-r", str(wheels / "requirements.lock")], progress, "pip download")


def install_venv(root: Path, wheels: Path, wheel: Path, lock: str, progress: Progress) -> None:
    """Make the venv with the image's Python and install the wheels offline, in a chroot."""
    staged = root / _STAGE.lstrip("/")
    shutil.copytree(wheels, staged)
    pips = sorted((root / "usr/share/python-wheels").glob("pip-*.whl"))
    if not pips:
        raise OperationalError("the base image has no pip wheel (python3-pip-whl)")
    dev_null = root / "dev/null"
    os.mknod(dev_null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.chmod(dev_null, 0o666)  # noqa: S103  (it is /dev/null)
    try:
        chroot_command = shutil.which("chroot")
        if chroot_command is None:
            raise OperationalError("chroot is not installed (coreutils)")
        chroot = [chroot_command, str(root)]
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root"}
        env["SOURCE_DATE_EPOCH"] = str(FIXED_EPOCH)
        _run(chroot + ["python3", "-m", "venv", "--without-pip", VENV], progress, "venv", env)
        # The venv's Python runs pip straight from the wheel file: pip installs into the venv.
        command = chroot + [f"{VENV}/bin/python", f"/usr/share/python-wheels/{pips[-1].name}/pip"]
        command += ["install"]
        command += ["--no-index", "--no-deps", "--no-compile", "--no-cache-dir", "-q"]
        command += ["--disable-pip-version-check", "--find-links", _STAGE]
        command += ["-r", f"{_STAGE}/requirements.lock", f"{_STAGE}/{wheel.name}"]
        _run(command, progress, "pip install", env)
    finally:
        dev_null.unlink()
    shutil.rmtree(staged)
    (root / VENV.lstrip("/") / "requirements.lock").write_text(lock)


def add_node_user(root: Path) -> None:
    """The unprivileged ``synchronicity`` user and its data and config directories."""
    with (root / "etc/passwd").open("a") as f:
        f.write(f"synchronicity:x:{NODE_UID}:{NODE_UID}::{DATA_DIR}:/usr/sbin/nologin\n")
    with (root / "etc/group").open("a") as f:
        f.write(f"synchronicity:x:{NODE_UID}:\n")
    for directory, mode in ((DATA_DIR, 0o700), (CONFIG_DIR, 0o755)):
        path = root / directory.lstrip("/")
        path.mkdir()
        os.chown(path, NODE_UID, NODE_UID)
        path.chmod(mode)


def _run(
    command: list[str], progress: Progress | None, what: str, env: dict[str, str] | None = None
) -> None:
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if progress is not None:
        for line in (done.stdout + done.stderr).splitlines()[-20:]:
            progress(f"{what}: {line}")
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise OperationalError(f"{what} failed with status {done.returncode}: {tail}")


def _import(client: docker.DockerClient, tar_path: Path, digest: str, key: str) -> NodeImage:
    tag = image_tag(digest)
    changes = [
        f"LABEL {LABEL_ROOTFS}={digest}",
        f"LABEL {LABEL_NODE_KEY}={key}",
        f"LABEL {LABEL_IMPORTED}={int(time.time())}",
        f'ENTRYPOINT ["{VENV}/bin/synchronicity"]',
        f"ENV PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV PYTHONDONTWRITEBYTECODE=1",
        "ENV PYTHONUNBUFFERED=1",
        "ENV LC_ALL=C.UTF-8",
        f"USER {NODE_UID}:{NODE_UID}",
        f"WORKDIR {DATA_DIR}",
    ]
    import_rootfs(client, tar_path, tag, changes, "node image")
    found = find_node_image(client, key)
    if found is None:
        raise OperationalError(f"imported node image {tag} not found afterwards")
    return found
