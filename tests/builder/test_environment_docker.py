"""Another host builds a recipe from an exported environment (real Docker, real crates).

Host A is this machine as it is (its build image, its rustup toolchain, its cache). Host B is a
``synchronicity build`` process with its own ``SYNCHRONICITY_CACHE``, its own image repositories
(``SYNCHRONICITY_IMAGE_PREFIX``: A's images are not B's, as on another machine; A's shared images
are never removed, other tests use them) and no toolchain (``PATH`` without rustup,
``RUSTUP_HOME`` and ``CARGO_HOME`` pointing nowhere).

- A exports its environment; B, given a directory with A's rootfs archive and A's export
  directory's URL (http.server on 127.0.0.1), gets the same output digest as A, with the rootfs
  from the directory and the toolchain from the URL;
- an archive with one flipped byte is refused before anything is imported;
- two exports of one environment are the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from builder.build import build_crate, resolve_recipe
from builder.envarchive import KIND_ROOTFS, KIND_TOOLCHAIN, archive_name
from builder.environment import EnvironmentSpec, export_environment
from builder.image import docker_client
from builder.recipe import Recipe
from builder.sandbox import SandboxLimits

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.network]

LIMITS = SandboxLimits(memory_bytes=2 << 30, cpus=2, pids=512, target_bytes=1 << 30)


def _quiet(line: str) -> None:
    del line


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    connection = docker_client()
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def host_a(
    client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Recipe, str, Path]:
    """A's recipe, A's output digest, and A's export directory."""
    work = tmp_path_factory.mktemp("host-a")
    recipe = resolve_recipe("itoa@1.0.11", client=client, progress=_quiet)
    assert (
        recipe.rootfs_archive_sha256 and recipe.toolchain.archive_sha256 and recipe.toolchain.dist
    )
    built = build_crate(recipe, work / "out", limits=LIMITS, client=client, progress=_quiet)
    assert built.ok and built.output_digest, built.detail
    export = work / "export"
    export_environment(EnvironmentSpec.of(recipe), export, client=client, progress=_quiet)
    (work / "recipe.json").write_bytes(recipe.to_json())
    return recipe, built.output_digest, export


def other_host(home: Path, prefix: str) -> dict[str, str]:
    """The environment of a process that acts as another host: own cache, images, no rustup."""
    path = "/usr/bin:/bin"
    assert shutil.which("rustup", path=path) is None and shutil.which("cargo", path=path) is None
    env = {
        "PATH": path,
        "HOME": str(home),
        "RUSTUP_HOME": str(home / "nowhere"),
        "CARGO_HOME": str(home / "nowhere"),
        "SYNCHRONICITY_CACHE": str(home / "cache"),
        "SYNCHRONICITY_IMAGE_PREFIX": prefix,
    }
    if "DOCKER_HOST" in os.environ:
        env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
    return env


def build_on_other_host(
    recipe_json: Path, sources: list[str], home: Path, prefix: str
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "synchronicity", "build", str(recipe_json)]
    command += ["--out", str(home / "out")]
    for source in sources:
        command += ["--env-source", source]
    return subprocess.run(
        command, env=other_host(home, prefix), capture_output=True, text=True, timeout=3000,
        check=False,
    )  # fmt: skip


def images_of(client: docker.DockerClient, prefix: str) -> list[str]:
    return sorted(
        tag
        for image in client.images.list()
        for tag in image.tags
        if tag.startswith((f"{prefix}-build:", f"{prefix}-env:"))
    )


@pytest.fixture
def prefix(client: docker.DockerClient) -> Iterator[str]:
    """Image repositories of one 'other host', removed afterwards (never A's)."""
    name = f"otherhost{os.getpid()}x{os.urandom(3).hex()}"
    assert images_of(client, name) == []
    yield name
    for tag in images_of(client, name):
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(tag)


def output_digest(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("output digest:"))
    return line.split(":", 1)[1].strip()


def test_another_host_builds_from_an_export_directory_and_a_url(
    host_a: tuple[Recipe, str, Path], client: docker.DockerClient, tmp_path: Path, prefix: str
) -> None:
    """One cold host, both kinds of source (one cold import costs minutes): a directory that
    holds only the rootfs archive of A's export, then A's export directory served over HTTP,
    which is asked only for what the directory lacks, the toolchain."""
    recipe, digest, export = host_a
    rootfs_only = tmp_path / "rootfs-only"
    rootfs_only.mkdir()
    rootfs_name = archive_name(KIND_ROOTFS, recipe.rootfs_sha256)
    os.link(export / rootfs_name, rootfs_only / rootfs_name)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(export), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        done = build_on_other_host(
            export.parent / "recipe.json", [str(rootfs_only), url], tmp_path, prefix
        )
    finally:
        server.shutdown()
        server.server_close()
    assert output_digest(done) == digest
    assert f"fetching the rootfs {recipe.rootfs_sha256[:16]} from directory" in done.stderr
    tree = recipe.toolchain.files_sha256
    assert f"fetching the toolchain {tree[:16]} from {url}" in done.stderr
    cache = tmp_path / "cache" / "environment"
    assert (cache / archive_name(KIND_ROOTFS, recipe.rootfs_sha256, compressed=False)).is_file()
    assert (cache / archive_name(KIND_TOOLCHAIN, tree, compressed=False)).is_file()
    assert any(tag.startswith(f"{prefix}-env:") for tag in images_of(client, prefix))


def test_a_flipped_byte_is_refused_before_use(
    host_a: tuple[Recipe, str, Path], client: docker.DockerClient, tmp_path: Path, prefix: str
) -> None:
    recipe, _, export = host_a
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    name = archive_name(KIND_ROOTFS, recipe.rootfs_sha256)
    data = bytearray((export / name).read_bytes())
    data[len(data) // 2] ^= 0x04
    (corrupt / name).write_bytes(bytes(data))
    done = build_on_other_host(export.parent / "recipe.json", [str(corrupt)], tmp_path, prefix)
    assert done.returncode == 3, done.stderr[-2000:]
    assert f"no source has the rootfs {recipe.rootfs_sha256[:16]}" in done.stderr
    assert images_of(client, prefix) == []  # nothing imported
    leftovers = list((tmp_path / "cache" / "environment").glob("rootfs-*"))
    assert leftovers == []  # and nothing kept


def test_two_exports_are_the_same_bytes(
    host_a: tuple[Recipe, str, Path], client: docker.DockerClient, tmp_path: Path
) -> None:
    recipe, _, export = host_a
    again = export_environment(
        EnvironmentSpec.of(recipe), tmp_path / "again", client=client, progress=_quiet
    )
    for path in again:
        assert _sha256(path) == _sha256(export / path.name), path.name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()
