"""Real builds in the Docker sandbox: reproducibility, non-reproducibility, tampered inputs.

These tests need a running Docker engine (they fail, never skip, without one), the Rust
toolchain 1.95.0 from rustup, and, where marked ``network``, crates.io.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from builder.build import build_crate, resolve_recipe
from builder.diff import diff_outputs
from builder.image import LABEL_ROOTFS, docker_client, ensure_build_image, image_tag
from builder.recipe import Recipe
from builder.sandbox import LABEL_BUILD, SandboxLimits
from builder.sources import CrateStore
from builder.toolchain import find_toolchain_dir, toolchain_identity
from logserver.core.errors import VerificationError
from tests.support.builder_helpers import FIXTURES, pack_crate, pack_fixture

pytestmark = [pytest.mark.docker, pytest.mark.slow]

LIMITS = SandboxLimits(
    memory_bytes=2 << 30,
    cpus=2,
    pids=512,
    target_bytes=1 << 30,
    tmp_bytes=128 << 20,
    wall_seconds=300,
)


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    connection = docker_client()  # OperationalError (a failure) when Docker is missing
    yield connection
    connection.close()


def _quiet(line: str) -> None:
    del line


def _no_build_containers(client: docker.DockerClient) -> bool:
    return not client.containers.list(all=True, filters={"label": LABEL_BUILD})


def _containers_created_for(client: docker.DockerClient, job_id: str, since: float) -> int:
    events = client.events(
        since=int(since) - 1,
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "event": "create", "label": f"{LABEL_BUILD}={job_id}"},
    )
    try:
        return sum(1 for _ in events)
    finally:
        events.close()


def test_build_image_is_cached_and_labelled(client: docker.DockerClient) -> None:
    first = ensure_build_image(client, progress=_quiet)
    started = time.monotonic()
    second = ensure_build_image(client, progress=_quiet)
    assert time.monotonic() - started < 5
    assert second == first
    assert first.tag == image_tag(first.rootfs_sha256)
    assert client.images.get(first.tag).labels[LABEL_ROOTFS] == first.rootfs_sha256


def test_toolchain_identity_is_cached() -> None:
    directory = find_toolchain_dir("1.95.0")
    first = toolchain_identity(directory)
    started = time.monotonic()
    assert toolchain_identity(directory) == first
    assert time.monotonic() - started < 5
    assert first.rustc_version == "1.95.0"


@pytest.mark.network
def test_itoa_from_crates_io_is_reproducible(client: docker.DockerClient, tmp_path: Path) -> None:
    recipe = resolve_recipe("itoa@1.0.11", client=client, progress=_quiet)
    assert recipe.crate_sha256 == "49f1f14873335454500d59611f1cf4a4b0f786f9ac11f4312a78e4cf2566695b"
    first = build_crate(recipe, tmp_path / "one", limits=LIMITS, client=client, progress=_quiet)
    second = build_crate(recipe, tmp_path / "two", limits=LIMITS, client=client, progress=_quiet)
    assert first.ok, first.detail
    assert second.ok, second.detail
    assert first.manifest is not None
    assert [a.path for a in first.manifest.artifacts] == ["libitoa.rlib"]
    assert first.output_digest == second.output_digest
    assert (tmp_path / "one" / "manifest.json").read_bytes() == first.manifest.to_json()
    assert Recipe.__name__ and (tmp_path / "one" / "recipe.json").read_bytes() == recipe.to_json()
    assert _no_build_containers(client)


@pytest.mark.network
def test_bin_fixture_with_a_crates_io_dependency_is_reproducible(
    client: docker.DockerClient, tmp_path: Path
) -> None:
    crate = pack_fixture("hello-bin", tmp_path)
    recipe = resolve_recipe(crate, client=client, progress=_quiet)
    assert recipe.source == "local"
    first = build_crate(recipe, tmp_path / "one", limits=LIMITS, client=client, progress=_quiet)
    second = build_crate(recipe, tmp_path / "two", limits=LIMITS, client=client, progress=_quiet)
    assert first.ok and second.ok, first.detail + second.detail
    assert first.manifest is not None and second.manifest is not None
    assert [a.path for a in first.manifest.artifacts] == ["hello-bin"]
    assert first.output_digest == second.output_digest
    binary = tmp_path / "one" / "artifacts" / "hello-bin"
    shown = subprocess.run([str(binary)], capture_output=True, text=True, check=True, timeout=10)
    assert shown.stdout == "hello from synchronicity: 42\n"
    assert b"Compiling itoa v1.0.11" in first.log
    assert _no_build_containers(client)


def test_unreproducible_fixture_differs_and_is_explained(
    client: docker.DockerClient, tmp_path: Path
) -> None:
    crate = pack_fixture("unrepro", tmp_path)
    recipe = resolve_recipe(crate, client=client, progress=_quiet)
    first = build_crate(recipe, tmp_path / "one", limits=LIMITS, client=client, progress=_quiet)
    second = build_crate(recipe, tmp_path / "two", limits=LIMITS, client=client, progress=_quiet)
    assert first.ok and second.ok
    assert first.output_digest != second.output_digest
    report = diff_outputs(tmp_path / "one" / "artifacts", tmp_path / "two" / "artifacts")
    assert report
    builtin = diff_outputs(
        tmp_path / "one" / "artifacts", tmp_path / "two" / "artifacts", use_diffoscope=False
    ).decode()
    assert "DIFFERENT: unrepro" in builtin
    assert "same: unrepro.d" in builtin


def test_tampered_local_crate_is_refused_before_any_container(
    client: docker.DockerClient, tmp_path: Path
) -> None:
    crate = pack_fixture("unrepro", tmp_path)
    recipe = resolve_recipe(crate, client=client, progress=_quiet)
    tampered_dir = tmp_path / "tampered"
    tampered_dir.mkdir()
    source = tmp_path / "source"
    subprocess.run(["cp", "-r", str(FIXTURES / "unrepro"), str(source)], check=True)
    (source / "src" / "main.rs").write_text('fn main() { println!("evil"); }\n')
    tampered = pack_crate(source, tampered_dir)
    started = time.time()
    with pytest.raises(VerificationError, match=r"unrepro@0\.1\.0"):
        build_crate(recipe, tmp_path / "out", client=client, local_crate=tampered, progress=_quiet)
    assert _containers_created_for(client, recipe.job_id, started) == 0


@pytest.mark.network
def test_checksum_mismatches_are_refused_before_any_container(
    client: docker.DockerClient, tmp_path: Path
) -> None:
    store = CrateStore(tmp_path / "cache")
    recipe = resolve_recipe("itoa@1.0.11", store=store, client=client, progress=_quiet)
    started = time.time()

    wrong_pin = dataclasses.replace(recipe, crate_sha256="0" * 64)
    with pytest.raises(VerificationError, match=r"itoa@1\.0\.11.*index cksum"):
        build_crate(wrong_pin, tmp_path / "a", store=store, client=client, progress=_quiet)

    cached = store.path_for(recipe.crate_sha256)
    original = cached.read_bytes()
    cached.write_bytes(original[:100] + bytes([original[100] ^ 1]) + original[101:])
    with pytest.raises(VerificationError, match=r"itoa@1\.0\.11: cached file"):
        build_crate(recipe, tmp_path / "b", store=store, client=client, progress=_quiet)
    cached.unlink()

    bin_crate = pack_fixture("hello-bin", tmp_path)
    bin_recipe = resolve_recipe(bin_crate, store=store, client=client, progress=_quiet)
    bad_lock = bin_recipe.cargo_lock.replace("49f1f148", "49f1f149")
    with pytest.raises(VerificationError, match=r"itoa@1\.0\.11: Cargo\.lock checksum"):
        build_crate(
            dataclasses.replace(bin_recipe, cargo_lock=bad_lock),
            tmp_path / "c",
            store=store,
            client=client,
            progress=_quiet,
        )
    for job in (wrong_pin.job_id, recipe.job_id, bin_recipe.job_id):
        assert _containers_created_for(client, job, started) == 0
