"""docker-compose of deploy/compose.yaml for the deploy tests: a unique project on free ports.

``compose_network`` writes a network config with ``synchronicity deploy config``, brings the
project up with the locally built node image (and its Docker API proxy), yields it, prints the
last log lines (shown by pytest only when the test failed) and always ends with ``down -v``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from builder.image import docker_client
from deploy.config import client_config
from deploy.image import ensure_node_image
from logserver.protocol.network import NetworkConfig
from synchronicity.launcher import free_ports
from tests.support.paths import ROOT

COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
NODES = ["log", "witness-1", "witness-2", "witness-3", "witness-4"]


class Compose:
    """``docker-compose -p <unique> -f deploy/compose.yaml`` with an environment."""

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

    def logs(self, *services: str, tail: int = 30) -> str:
        done = self._run(("logs", "--no-color", f"--tail={tail}", *services), 60)
        return f"{self.project}\n{done.stdout}{done.stderr}"

    def container(self, service: str) -> str:
        """The id of the service's container."""
        return self("ps", "-q", service).strip()

    def proxy_events(self) -> list[dict[str, Any]]:
        """The calls the Docker API proxy decided, from its log lines."""
        done = subprocess.run(
            ["docker", "logs", self.container("docker-proxy")],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        events = []
        for line in done.stdout.splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and "decision" in event:
                    events.append(event)
        return events


@dataclass
class ComposeNetwork:
    """A running compose project: its runner, the nodes' config and this machine's view of it
    (``client``: the published ports), and the config directory."""

    run: Compose
    config: NetworkConfig
    client: NetworkConfig
    net_dir: Path

    @property
    def client_file(self) -> Path:
        """``client``, written for the commands run on this machine (``--network``)."""
        path = self.net_dir.parent / "client.json"
        if not path.exists():
            path.write_bytes(self.client.to_json())
        return path

    @property
    def urls(self) -> dict[str, str]:
        urls = [self.client.log.url] + [w.url for w in self.client.witnesses]
        return dict(zip(NODES, urls, strict=True))


@contextlib.contextmanager
def compose_network(
    tmp_path: Path, *, entries: str, env: dict[str, str] | None = None
) -> Iterator[ComposeNetwork]:
    client = docker_client()
    try:
        image = ensure_node_image(client).tag
    finally:
        client.close()
    net_dir = tmp_path / "net"
    subprocess.run(
        [sys.executable, "-m", "synchronicity", "deploy", "config", "--dir", str(net_dir)]
        + ["--entries", entries, "--round-ms", "300", "--max-round-ms", "2000"],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    env_dir = tmp_path / "env"  # no export: the nodes try it, then the log's blob store
    env_dir.mkdir(exist_ok=True)
    ports = free_ports(5)
    names = ["LOG", "W1", "W2", "W3", "W4"]
    variables = dict(
        os.environ,
        SYNCHRONICITY_IMAGE=image,
        SYNCHRONICITY_NET=str(net_dir),
        SYNCHRONICITY_ENV=str(env_dir),
    )
    variables.update({f"SYNCHRONICITY_PORT_{n}": str(p) for n, p in zip(names, ports, strict=True)})
    variables.update(env or {})
    run = Compose(variables)
    config = NetworkConfig.parse((net_dir / "network.json").read_bytes())
    try:
        run("up", "-d")
        network = ComposeNetwork(run, config, client_config(config, ports), net_dir)
        for url in network.urls.values():
            wait_until(ready(url), 60, f"{url} to be ready")
        yield network
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
