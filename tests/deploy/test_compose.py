"""deploy/compose.yaml really runs: docker-compose up with the locally built node image.

The network config comes from ``synchronicity deploy config`` (open entries, short timeouts), the
ports are free ones on 127.0.0.1, the project name is unique, and ``docker-compose down -v``
always removes everything. Entries appended through the log's published port must end up
under a checkpoint that the network's policy accepts (a quorum of the four witnesses
cosigned it), and every witness's mirror must reach it. Fails, never skips, without Docker or
docker-compose.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from builder.image import docker_client
from deploy.image import ensure_node_image
from logserver.protocol.network import NetworkConfig
from synchronicity.launcher import free_ports
from tests.support.paths import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.slow]

COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
NODES = ["log", "witness-1", "witness-2", "witness-3", "witness-4"]


class Compose:
    def __init__(self, env: dict[str, str]) -> None:
        self.project = f"sync-compose-{secrets.token_hex(4)}"
        self.env = env

    def _run(self, args: tuple[str, ...], timeout: float) -> subprocess.CompletedProcess[str]:
        command = ["docker-compose", "-p", self.project, "-f", str(COMPOSE_FILE), *args]
        return subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def __call__(self, *args: str, timeout: float = 120) -> str:
        done = self._run(args, timeout)
        assert done.returncode == 0, f"docker-compose {args} failed:\n{done.stdout}{done.stderr}"
        return done.stdout

    def logs(self) -> str:
        done = self._run(("logs", "--tail=30"), 60)
        return f"{self.project}\n{done.stdout}{done.stderr}"


@pytest.fixture
def compose(tmp_path: Path) -> Iterator[tuple[Compose, list[int], NetworkConfig]]:
    client = docker_client()
    try:
        image = ensure_node_image(client).tag
    finally:
        client.close()
    net_dir = tmp_path / "net"
    subprocess.run(
        [sys.executable, "-m", "synchronicity", "deploy", "config", "--dir", str(net_dir)]
        + ["--entries", "open"]
        + ["--round-ms", "300", "--max-round-ms", "2000"],
        check=True,
        capture_output=True,
        cwd=COMPOSE_FILE.parent.parent,
    )
    ports = free_ports(5)
    names = ["LOG", "W1", "W2", "W3", "W4"]
    env = dict(os.environ, SYNCHRONICITY_IMAGE=image, SYNCHRONICITY_NET=str(net_dir))
    env.update({f"SYNCHRONICITY_PORT_{n}": str(p) for n, p in zip(names, ports, strict=True)})
    run = Compose(env)
    try:
        run("up", "-d")
        yield run, ports, NetworkConfig.parse((net_dir / "network.json").read_bytes())
    finally:
        print(run.logs())  # shown by pytest only when the test failed
        run("down", "-v", "--remove-orphans")


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if condition():
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def ready(url: str) -> Callable[[], bool]:
    return lambda: httpx.get(url + "/readyz", timeout=2).status_code == 200


def mirrored(url: str, size: int) -> Callable[[], bool]:
    return lambda: int(httpx.get(url + "/status", timeout=2).json()["mirror_size"]) >= size


def test_compose_network_cosigns_entries(
    compose: tuple[Compose, list[int], NetworkConfig],
) -> None:
    run, ports, config = compose
    urls = {name: f"http://127.0.0.1:{port}" for name, port in zip(NODES, ports, strict=True)}
    for url in urls.values():
        wait_until(ready(url), 60, f"{url} to be ready")
    entries = [b"compose entry %d" % i for i in range(5)]
    for i, data in enumerate(entries):
        r = httpx.post(urls["log"] + "/add-entry", content=data, timeout=5)
        assert r.status_code == 200, r.text
        assert r.json()["index"] == i

    policy = config.policy()

    def cosigned_size() -> int:
        r = httpx.get(urls["log"] + "/checkpoint", timeout=5)
        return policy.verify(r.content).checkpoint.size if r.status_code == 200 else 0

    wait_until(lambda: cosigned_size() >= len(entries), 30, "a quorum-cosigned checkpoint")
    signed = httpx.get(urls["log"] + "/checkpoint", timeout=5).content
    root = policy.verify(signed).checkpoint.root_hash
    for name in NODES[1:]:
        wait_until(mirrored(urls[name], len(entries)), 30, f"{name}'s mirror")
        status = httpx.get(urls[name] + "/status", timeout=2).json()
        assert status["mirror_size"] == len(entries)
        assert base64.b64decode(status["mirror_root"]) == root
    # Containers are what compose.yaml promises: the local image, no root, read-only root fs.
    for line in run("ps", "-q").split():
        inspect = subprocess.run(
            [
                "docker",
                "inspect",
                "-f",
                "{{.Config.Image}} {{.Config.User}} {{.HostConfig.ReadonlyRootfs}}",
                line,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert inspect == [run.env["SYNCHRONICITY_IMAGE"], "10001:10001", "true"]
