"""Deployed builder-witnesses build: deploy/compose.yaml with a protocol network, for real.

A log, four witnesses and the Docker API proxy come up from the node image (tests/deploy/
composer.py). Then, from this machine through the published ports:

- ``synchronicity rebuild itoa@1.0.11 --network client.json`` is **reproduced**. The nodes have
  neither the build image nor a toolchain: the environment image is the engine's, found
  through the proxy under the deployment's image prefix (made here once, as an operator's
  first build does).
- A crate pinned to another environment, which the engine has never seen, is reproduced too:
  each node obtains it by digest from the log's blob store, where a builder's key uploaded it
  (the small environment of tests/deploy/smallenv.py), and imports, bakes and checks it
  through the proxy.
- Every build ran in sandboxes the nodes created through the proxy, labelled with each node's
  name and owner (``witness-i:<pid>``) and the job, and nothing was refused meanwhile; then
  from inside witness-1, calls that would reach the host (a privileged create, a bind mount
  of /, the host network, an image pull, listing every container, exec into or writing to the
  log's container, a volume that binds /) are each refused with 403, and the witness has no
  Docker socket of its own.

Fails, never skips, without Docker, docker-compose or crates.io.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from builder.build import resolve_recipe
from builder.container import LABEL_BUILD, LABEL_OWNER
from builder.environment import EnvironmentSpec, ensure_environment
from builder.image import LABEL_ROOTFS, docker_client
from logserver.client import LogClient
from logserver.core import note
from logserver.protocol.entries import Reveal, Verdict
from synchronicity.client import BuilderClient, follow
from synchronicity.dockerproxy.policy import LABEL_NODE
from tests.deploy.composer import ComposeNetwork, compose_network
from tests.deploy.smallenv import SmallEnvironment, make_small_environment

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.network]

WITNESSES = ["witness-1", "witness-2", "witness-3", "witness-4"]
# Run inside witness-1 with its own Python and Docker SDK (DOCKER_HOST: the proxy's socket).
PROBES = """
import json, os, sys
import docker
from docker.types import Mount
log = sys.argv[1]
client = docker.from_env()
api = client.api
labels = {"synchronicity.build": "probe"}
def create(**host):
    host.setdefault("network_mode", "none")
    return lambda: api.create_container(
        "busybox", ["true"], labels=labels, host_config=api.create_host_config(**host))
probes = {
    "privileged": create(privileged=True),
    "bind-root": create(binds={"/": {"bind": "/host", "mode": "rw"}}),
    "host-network": create(network_mode="host"),
    "pull": lambda: client.images.pull("busybox", tag="latest"),
    "list-all": lambda: client.containers.list(all=True),
    "exec-log": lambda: api.exec_create(log, ["/bin/sh"]),
    "write-log": lambda: api.put_archive(log, "/data", b"\\0" * 1024),
    "bind-volume": lambda: client.volumes.create(
        "probe", driver_opts={"type": "none", "o": "bind", "device": "/"}, labels=labels),
}
answers = {}
for name, call in probes.items():
    try:
        call()
        answers[name] = "allowed"
    except docker.errors.APIError as e:
        answers[name] = e.status_code
answers["own-socket"] = os.path.exists("/var/run/docker.sock")
print(json.dumps(answers))
"""


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[ComposeNetwork, str]]:
    prefix = f"synctest{secrets.token_hex(4)}"
    with compose_network(
        tmp_path, entries="protocol", env={"SYNCHRONICITY_IMAGE_PREFIX": prefix}
    ) as network:
        yield network, prefix


@pytest.fixture
def engine() -> Iterator[docker.DockerClient]:
    client = docker_client()
    try:
        yield client
    finally:
        client.close()


def provide_environment(engine: docker.DockerClient, prefix: str) -> str:
    """The engine's environment image of this host's itoa recipe, also named as the
    deployment's prefix names it; the recipe's job."""
    recipe = resolve_recipe("itoa@1.0.11", client=engine, progress=lambda _: None)
    spec = EnvironmentSpec.of(recipe)
    image = ensure_environment(spec, client=engine, progress=lambda _: None)
    engine.images.get(image.tag).tag(f"{prefix}-env", spec.key[:16])
    return recipe.job_id


def builders(network: ComposeNetwork) -> list[str]:
    return sorted(w.name for w in network.config.witnesses)


def rebuild(network: ComposeNetwork, out: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "synchronicity", "rebuild", "itoa@1.0.11"]
        + ["--network", str(network.client_file), "--out", str(out), "--json", "--timeout", "600"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_deployed_witnesses_build_through_the_proxy(
    deployment: tuple[ComposeNetwork, str], engine: docker.DockerClient, tmp_path: Path
) -> None:
    network, prefix = deployment
    small = make_small_environment(tmp_path / "small")
    try:
        started = time.monotonic()
        job = provide_environment(engine, prefix)
        result = rebuild(network, tmp_path / "out")
        assert result["outcome"] == "reproduced", result
        assert result["job"] == job
        assert isinstance(result["agreeing"], list)
        assert sorted(result["agreeing"]) == builders(network)
        print(f"itoa reproduced by the deployment in {time.monotonic() - started:.1f}s")

        started = time.monotonic()
        small_job = build_in_the_small_environment(network, small, engine)
        print(f"the blob store's environment obtained and reproduced in "
              f"{time.monotonic() - started:.1f}s")  # fmt: skip

        events = network.run.proxy_events()
        assert [e for e in events if e["decision"] != "allowed"] == []
        for witness in WITNESSES:
            made = [e for e in events if e["client"] == witness and "labels" in e]
            creates = [e["labels"] for e in made if e["rule"] == "container-create"]
            for labels in creates:
                assert labels[LABEL_NODE] == witness
                assert labels[LABEL_OWNER].startswith(f"{witness}:")
            for each in (job, small_job):
                assert any(labels[LABEL_BUILD] == each for labels in creates), (witness, each)
            rules = {e["rule"] for e in events if e["client"] == witness}
            assert {"container-start", "container-attach", "archive-put"} <= rules
        assert any(e["rule"] == "image-import" for e in events)  # the small environment
        assert any(e["rule"] == "commit" for e in events)

        answers = probe_from_witness_1(network)
        assert answers.pop("own-socket") is False
        assert answers == dict.fromkeys(answers, 403), answers
        refusals = [e for e in network.run.proxy_events() if e["decision"] == "refused"]
        assert len(refusals) == len(answers)
        assert {e["client"] for e in refusals} == {"witness-1"}
    finally:
        for image in engine.images.list(filters={"reference": f"{prefix}-*"}):
            for tag in image.tags:
                with contextlib.suppress(docker.errors.APIError):
                    engine.images.remove(tag)
        small_images = {"label": f"{LABEL_ROOTFS}={small.rootfs.tree_sha256}"}
        for image in engine.images.list(filters=small_images):
            with contextlib.suppress(docker.errors.APIError):
                engine.images.remove(str(image.id), force=True)


def build_in_the_small_environment(
    network: ComposeNetwork, small: SmallEnvironment, engine: docker.DockerClient
) -> str:
    """Upload the small environment to the log's blob store with witness-1's key, request a
    crate pinned to it, and wait for its verdict: reproduced by the four witnesses."""
    key = note.parse_private_key((network.net_dir / "witness-1.key").read_text().strip())
    signer = note.Signer(key.name, key.key)
    base = resolve_recipe("itoa@1.0.11", client=engine, progress=lambda _: None)
    recipe = small.recipe(base)
    with LogClient(network.client.log.url, timeout=120) as log:
        for blob in small.blobs():
            log.put_blob(blob, signer)
        with BuilderClient(network.client.witnesses[0].url) as builder:
            job, index = builder.request(recipe)
        seen, verdict = follow(log, job, index, 600, lambda _: None)
    entry = verdict.entry
    assert isinstance(entry, Verdict)
    failures = [
        (e.entry.builder, e.entry.failure)
        for e in seen
        if isinstance(e.entry, Reveal) and e.entry.failure is not None
    ]
    assert entry.outcome == "reproduced", (entry, failures)
    assert sorted(entry.agreeing) == builders(network), (entry, failures)
    return job


def probe_from_witness_1(network: ComposeNetwork) -> dict[str, object]:
    log = network.run.container("log")
    done = subprocess.run(
        ["docker", "exec", network.run.container("witness-1"), "python", "-c", PROBES, log],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    answers: dict[str, object] = json.loads(done.stdout)
    return answers
