"""Real builds in the Docker sandbox: reproducibility, non-reproducibility, tampered inputs.

These tests need a running Docker engine (they fail, never skip, without one), the Rust
toolchain 1.95.0 from rustup, and, where marked ``network``, crates.io.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from builder.build import build_crate, resolve_recipe
from builder.container import LABEL_BUILD
from builder.diff import DiffLimits, diff_outputs
from builder.image import (
    LABEL_ROOTFS,
    diff_image_config,
    docker_client,
    ensure_build_image,
    image_tag,
)
from builder.recipe import Recipe
from builder.sandbox import SandboxLimits
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


def _fake_host_diffoscope(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put a ``diffoscope`` first on PATH that only records that it ran; return its marker."""
    marker = tmp_path / "host-diffoscope-ran"
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    (fake / "diffoscope").write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    (fake / "diffoscope").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    return marker


def test_unreproducible_fixture_differs_and_is_explained_in_a_sandbox(
    client: docker.DockerClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crate = pack_fixture("unrepro", tmp_path)
    recipe = resolve_recipe(crate, client=client, progress=_quiet)
    first = build_crate(recipe, tmp_path / "one", limits=LIMITS, client=client, progress=_quiet)
    second = build_crate(recipe, tmp_path / "two", limits=LIMITS, client=client, progress=_quiet)
    assert first.ok and second.ok
    assert first.output_digest != second.output_digest
    diff_image = ensure_build_image(client, diff_image_config(), progress=_quiet)
    marker = _fake_host_diffoscope(tmp_path, monkeypatch)
    started = time.time()
    report = diff_outputs(
        tmp_path / "one" / "artifacts", tmp_path / "two" / "artifacts", client=client
    ).decode()
    assert not marker.exists(), "diffoscope ran on the host"
    assert report.startswith(f"diffoscope report, run in a sandbox ({diff_image.tag}")
    assert "/diff/left/unrepro" in report and "/diff/right/unrepro" in report
    assert "unrepro.d" not in report  # equal files are not reported by diffoscope
    assert _containers_created_for(client, "diff", started) >= 1
    assert _no_build_containers(client)
    builtin = diff_outputs(
        tmp_path / "one" / "artifacts", tmp_path / "two" / "artifacts", use_diffoscope=False
    ).decode()
    assert "DIFFERENT: unrepro" in builtin
    assert "same: unrepro.d" in builtin


def _zip_bomb(path: Path, fill: bytes, gib: float) -> None:
    """A small zip that inflates to ``gib`` GiB of one repeated byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = fill * (16 << 20)
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open("payload", "w", force_zip64=True) as member,
    ):
        for _ in range(int(gib * 64)):
            member.write(chunk)


def test_hostile_artifacts_are_contained_by_the_diff_sandbox(
    client: docker.DockerClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_build_image(client, diff_image_config(), progress=_quiet)
    marker = _fake_host_diffoscope(tmp_path, monkeypatch)
    left, right = tmp_path / "left", tmp_path / "right"
    _zip_bomb(left / "libbomb.rlib", b"\0", 0.5)
    _zip_bomb(right / "libbomb.rlib", b"\1", 0.5)
    started = time.monotonic()
    limits = DiffLimits(memory_bytes=512 << 20, tmp_bytes=64 << 20, wall_seconds=120)
    report = diff_outputs(left, right, limits=limits, client=client).decode()
    assert time.monotonic() - started < 60
    assert f"diffoscope did not finish: filled its {64 << 20} byte scratch space" in report
    assert "DIFFERENT: libbomb.rlib" in report
    assert len(report) < 4000

    # Huge files that diffoscope would dump for minutes and in much memory: stopped at the
    # deadline or at the memory limit, whichever comes first on this machine.
    for side in (left, right):
        (side / "libbomb.rlib").unlink()
        with (side / "huge").open("wb") as handle:
            for _ in range(8):
                handle.write(os.urandom(16 << 20))
    started = time.monotonic()
    limits = DiffLimits(wall_seconds=10, report_bytes=64 << 10)
    report = diff_outputs(left, right, limits=limits, client=client).decode()
    assert time.monotonic() - started < 40
    assert re.search(
        r"diffoscope did not finish: (stopped at the 10 s time limit|killed at the "
        r"1073741824 byte memory limit)\.",
        report,
    ), report[:1000]
    assert "DIFFERENT: huge" in report
    assert len(report.encode()) <= 64 << 10
    assert not marker.exists()
    assert _no_build_containers(client)


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
    with pytest.raises(
        VerificationError, match=r"itoa@1\.0\.11: downloaded .* Cargo\.lock checksum"
    ):
        build_crate(
            dataclasses.replace(bin_recipe, cargo_lock=bad_lock),
            tmp_path / "c",
            store=store,
            client=client,
            progress=_quiet,
        )
    for job in (wrong_pin.job_id, recipe.job_id, bin_recipe.job_id):
        assert _containers_created_for(client, job, started) == 0
