"""The Docker API proxy on a real engine: what the sandbox needs passes, nothing else does.

The proxy runs as ``synchronicity deploy proxy`` on this machine with a socket for each of two
clients. Through it, the builder's own code runs a sandbox whose inputs come in volumes filled
with ``put_archive``; calls that would reach the host are refused with 403 and nothing is made;
a client cannot see, touch, start or mount what the engine holds for others. A node in a
container, with the proxy's socket as its only Docker engine and no build image or toolchain of
its own, obtains a build environment by digest from an export directory mounted read-only
(imported, baked, checked with ``rustc -vV`` in a sandbox, all through the proxy) and builds a
crate in it. Fails, never skips, without Docker.
"""

from __future__ import annotations

import contextlib
import io
import secrets
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from docker.types import Mount

from builder.build import resolve_recipe
from builder.container import (
    LABEL_BUILD,
    ContainerLimits,
    ContainerSpec,
    remove_leftover_containers,
    run_container,
)
from builder.environment import EnvironmentSpec
from builder.image import LABEL_ROOTFS, docker_client, ensure_build_image
from builder.volumes import input_volumes
from deploy.image import ensure_node_image
from synchronicity.dockerproxy.policy import LABEL_NODE
from tests.deploy.smallenv import ProxyProcess, make_small_environment

pytestmark = [pytest.mark.docker, pytest.mark.slow]

LABEL_TEST = "synchronicity.deploy"
LIMITS = ContainerLimits(
    memory_bytes=256 << 20, cpus=1, pids=64, stdout_bytes=1 << 20, stderr_bytes=1 << 20,
    wall_seconds=60,
)  # fmt: skip
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@pytest.fixture(scope="module")
def node_image() -> str:
    client = docker_client()
    try:
        return ensure_node_image(client).tag
    finally:
        client.close()


@pytest.fixture(scope="module")
def build_image() -> str:
    """An image with a shell and no entry point (the node image's is synchronicity)."""
    client = docker_client()
    try:
        return ensure_build_image(client, progress=lambda _: None).tag
    finally:
        client.close()


@pytest.fixture
def engine() -> Iterator[docker.DockerClient]:
    client = docker_client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[ProxyProcess]:
    running = ProxyProcess(tmp_path / "proxy", ["witness-a", "witness-b"], "synchronicity")
    try:
        yield running
    finally:
        running.stop()


def through(proxy: ProxyProcess, name: str) -> docker.DockerClient:
    return docker.DockerClient(base_url=proxy.url(name), timeout=120)


def remove_labelled(engine: docker.DockerClient, label: str) -> None:
    """Remove the containers, then the volumes, that carry ``label``."""
    for container in engine.containers.list(all=True, filters={"label": label}):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    for volume in engine.volumes.list(filters={"label": label}):
        with contextlib.suppress(docker.errors.NotFound):
            volume.remove(force=True)


def refused(call: Callable[[], object]) -> str:
    """The proxy's 403 for ``call``."""
    with pytest.raises(docker.errors.APIError) as caught:
        call()
    assert caught.value.status_code == 403, caught.value
    explanation = str(caught.value.explanation)
    assert "refused by the builder's docker proxy" in explanation, explanation
    return explanation


def test_a_sandbox_runs_through_the_proxy(
    proxy: ProxyProcess, engine: docker.DockerClient, build_image: str, tmp_path: Path
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "hello").write_text("hello through the proxy\n")
    client = through(proxy, "witness-a")
    try:
        assert remove_leftover_containers(client) == 0
        with input_volumes(client, build_image, "proxy-test", {"/in": inputs}) as volumes:
            spec = ContainerSpec(
                image=build_image,
                command=["/bin/sh", "-c", "cat /in/hello; id -u; echo to stderr 1>&2"],
                environment={"PATH": "/usr/bin:/bin"},
                working_dir="/",
                binds=(),
                tmpfs={"/tmp": "rw,noexec,nosuid,nodev,size=1m"},
                purpose="proxy-test",
                volumes=volumes,
            )
            output = io.BytesIO()
            run = run_container(client, spec, LIMITS, output)
    finally:
        client.close()
    assert run.exit_code == 0, run
    assert output.getvalue() == b"hello through the proxy\n1000\n"
    assert run.stderr == b"to stderr\n"
    events = proxy.events()
    assert [e for e in events if e["decision"] != "allowed"] == []
    rules = [e["rule"] for e in events]
    for rule in ("volume-create", "container-create", "archive-put", "container-start"):
        assert rule in rules, rules
    assert {e["client"] for e in events} == {"witness-a"}
    creates = [e for e in events if e["rule"] == "container-create"]
    assert len(creates) == 2  # the filler and the sandbox
    for create in creates:
        assert create["labels"][LABEL_NODE] == "witness-a"
        assert create["labels"][LABEL_BUILD] == "proxy-test"
    attach = next(e for e in events if e["rule"] == "container-attach")
    assert attach["status"] == 101
    # everything it made is gone
    assert not engine.containers.list(all=True, filters={"label": f"{LABEL_NODE}=witness-a"})
    assert not engine.volumes.list(filters={"label": f"{LABEL_NODE}=witness-a"})


def test_calls_that_reach_the_host_are_refused(
    proxy: ProxyProcess, engine: docker.DockerClient, node_image: str
) -> None:
    a, b = through(proxy, "witness-a"), through(proxy, "witness-b")
    api = a.api
    labels = {LABEL_BUILD: "proxy-test"}
    run_id = f"sync-proxy-{secrets.token_hex(4)}"

    def create(**host: Any) -> Callable[[], object]:
        """A create with no network but for ``host``."""
        config = api.create_host_config(**{"network_mode": "none", **host})
        return lambda: api.create_container(
            node_image, ["/bin/true"], labels=labels, host_config=config
        )

    try:
        assert "Privileged" in refused(create(privileged=True))
        assert "Binds" in refused(create(binds={"/": {"bind": "/host", "mode": "ro"}}))
        assert "bind mount" in refused(create(mounts=[Mount("/host", "/", type="bind")]))
        assert "NetworkMode" in refused(create(network_mode="host"))
        assert "CapAdd" in refused(create(cap_add=["SYS_ADMIN"]))
        assert "PidMode" in refused(create(pid_mode="host"))
        assert "SecurityOpt" in refused(create(security_opt=["seccomp=unconfined"]))
        assert "Devices" in refused(create(devices=["/dev/kmsg:/dev/kmsg:rwm"]))
        assert "never pulled" in refused(lambda: a.images.pull("alpine", tag="latest"))
        assert "filtered" in refused(lambda: a.containers.list(all=True))
        assert "allow-list" in refused(a.networks.list)
        assert "allow-list" in refused(lambda: api.exec_create("anything", ["/bin/sh"]))
        assert "disguise" in refused(
            lambda: a.volumes.create(
                "sync-proxy-bind",
                driver_opts={"type": "none", "o": "bind", "device": "/"},
                labels=labels,
            )
        )
        assert not engine.volumes.list(filters={"name": "sync-proxy-bind"})

        # a container the node did not make through the proxy is not its own
        foreign = engine.api.create_container(
            node_image, ["/bin/true"], labels={**labels, LABEL_TEST: run_id}
        )["Id"]
        for call in (
            lambda: a.containers.get(foreign),
            lambda: api.start(foreign),
            lambda: api.kill(foreign),
            lambda: api.put_archive(foreign, "/", b"\0" * 1024),
            lambda: api.remove_container(foreign, force=True),
            lambda: api.commit(foreign, "synchronicity-env-staging", "x"),
        ):
            assert "not a container of witness-a" in refused(call)
        engine.api.inspect_container(foreign)  # still there

        # what one node made, another cannot see, touch or mount
        mine = a.volumes.create("sync-proxy-" + secrets.token_hex(4), labels=labels).name
        filler = api.create_container(
            node_image,
            ["/bin/true"],
            labels=labels,
            network_disabled=True,
            host_config=api.create_host_config(mounts=[Mount("/in", mine, type="volume")]),
        )["Id"]
        assert "not a container of witness-b" in refused(lambda: b.api.inspect_container(filler))
        assert "not a container of witness-b" in refused(lambda: b.api.remove_container(filler))
        assert "not a volume of witness-b" in refused(lambda: b.api.remove_volume(mine))
        assert "not a volume of witness-b" in refused(
            lambda: b.api.create_container(
                node_image,
                ["/bin/true"],
                labels=labels,
                host_config=b.api.create_host_config(
                    network_mode="none", mounts=[Mount("/x", mine, type="volume")]
                ),
            )
        )
        assert "exists already" in refused(lambda: b.volumes.create(mine, labels=labels))
        assert b.containers.list(all=True, filters={"label": LABEL_BUILD}) == []
        assert [c.id for c in a.containers.list(all=True, filters={"label": LABEL_BUILD})] == [
            filler
        ]
        # a filler keeps its capabilities: it is made, filled and removed, never started
        assert "every capability" in refused(lambda: api.start(filler))
        api.put_archive(filler, "/in", _tar("x", b"x"))
        api.remove_container(filler, force=True)
        a.api.remove_volume(mine)
    finally:
        a.close()
        b.close()
        remove_labelled(engine, f"{LABEL_TEST}={run_id}")
        remove_labelled(engine, f"{LABEL_NODE}=witness-a")
    decided = proxy.events()
    assert all(e["client"] in ("witness-a", "witness-b") for e in decided)
    assert {e["decision"] for e in decided} == {"allowed", "refused"}


def _tar(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_node_in_a_container_obtains_the_environment_and_builds_through_the_proxy(
    engine: docker.DockerClient, node_image: str, tmp_path: Path
) -> None:
    prefix = f"synctest{secrets.token_hex(4)}"
    small = make_small_environment(tmp_path / "env")
    recipe = small.recipe(resolve_recipe("itoa@1.0.11", client=engine, progress=lambda _: None))
    spec = EnvironmentSpec.of(recipe)
    config = tmp_path / "config"
    config.mkdir()
    (config / "recipe.json").write_bytes(recipe.to_json())
    for directory in (config, small.export_dir, tmp_path):
        directory.chmod(0o755)
    proxy = ProxyProcess(tmp_path / "proxy", ["node"], prefix)
    (tmp_path / "proxy" / "node").chmod(0o755)
    (tmp_path / "proxy").chmod(0o755)
    run_id = f"sync-proxy-{secrets.token_hex(4)}"
    api = engine.api
    started = time.monotonic()
    try:
        node = api.create_container(
            node_image,
            ["build", "/config/recipe.json", "--env-source", "/env", "--out", "/data/out"],
            environment={
                "DOCKER_HOST": "unix:///run/docker-proxy/docker.sock",
                "SYNCHRONICITY_CACHE": "/data/cache",
                "SYNCHRONICITY_IMAGE_PREFIX": prefix,
                "HOME": "/data",
            },
            labels={LABEL_TEST: run_id},
            host_config=api.create_host_config(
                binds={
                    str(tmp_path / "proxy" / "node"): {"bind": "/run/docker-proxy", "mode": "ro"},
                    str(small.export_dir): {"bind": "/env", "mode": "ro"},
                    str(config): {"bind": "/config", "mode": "ro"},
                    str(CA_BUNDLE): {"bind": str(CA_BUNDLE), "mode": "ro"},
                },
                tmpfs={"/tmp": "", "/data": "uid=10001,gid=10001,mode=0700"},
                read_only=True,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
            ),
        )["Id"]
        api.start(node)
        status = api.wait(node, timeout=600)["StatusCode"]
        took = time.monotonic() - started
        output = api.logs(node).decode(errors="replace")
        assert status == 0, output[-4000:]
        print(f"the node obtained the environment and built in {took:.1f}s")
        assert "output digest:" in output, output[-2000:]
        # the environment image, made by the node through the proxy
        images = engine.images.list(filters={"label": f"synchronicity.environment={spec.key}"})
        tags = [tag for image in images for tag in image.tags]
        assert tags == [f"{prefix}-env:{spec.key[:16]}"]
        events = proxy.events()
        assert [e for e in events if e["decision"] != "allowed"] == []
        rules = {e["rule"] for e in events}
        assert {"image-import", "commit", "image-tag", "image-delete", "archive-put"} <= rules
        starts = [e for e in events if e["rule"] == "container-start"]
        assert len(starts) == 2  # the rustc -vV check, then the build
        assert {e["client"] for e in events} == {"node"}
    finally:
        proxy.stop()
        remove_labelled(engine, f"{LABEL_TEST}={run_id}")
        remove_labelled(engine, f"{LABEL_NODE}=node")
        for image in engine.images.list(
            filters={"label": f"{LABEL_ROOTFS}={recipe.rootfs_sha256}"}
        ):
            with contextlib.suppress(docker.errors.APIError):
                engine.images.remove(str(image.id), force=True)
