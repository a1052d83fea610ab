"""deploy/compose.yaml really runs: docker-compose up with the locally built node image.

The network config comes from ``synchronicity deploy config`` (open entries, short timeouts), the
ports are free ones on 127.0.0.1, the project name is unique, and ``docker-compose down -v``
always removes everything (tests/deploy/composer.py). Entries appended through the log's
published port must end up under a checkpoint that the network's policy accepts (a quorum of
the four witnesses cosigned it), and every witness's mirror must reach it; the containers are
what the file promises, and only the Docker API proxy has the engine's socket. Fails, never
skips, without Docker or docker-compose.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy.composer import ComposeNetwork, compose_network, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def compose(tmp_path: Path) -> Iterator[ComposeNetwork]:
    with compose_network(tmp_path, entries="open") as network:
        yield network


def mirrored(url: str, size: int) -> Callable[[], bool]:
    return lambda: int(httpx.get(url + "/status", timeout=2).json()["mirror_size"]) >= size


def test_compose_network_cosigns_entries(compose: ComposeNetwork) -> None:
    urls = compose.urls
    entries = [b"compose entry %d" % i for i in range(5)]
    for i, data in enumerate(entries):
        r = httpx.post(urls["log"] + "/add-entry", content=data, timeout=5)
        assert r.status_code == 200, r.text
        assert r.json()["index"] == i

    policy = compose.config.policy()

    def cosigned_size() -> int:
        r = httpx.get(urls["log"] + "/checkpoint", timeout=5)
        return policy.verify(r.content).checkpoint.size if r.status_code == 200 else 0

    wait_until(lambda: cosigned_size() >= len(entries), 30, "a quorum-cosigned checkpoint")
    signed = httpx.get(urls["log"] + "/checkpoint", timeout=5).content
    root = policy.verify(signed).checkpoint.root_hash
    for name in list(urls)[1:]:
        wait_until(mirrored(urls[name], len(entries)), 30, f"{name}'s mirror")
        status = httpx.get(urls[name] + "/status", timeout=2).json()
        assert status["mirror_size"] == len(entries)
        assert base64.b64decode(status["mirror_root"]) == root
    # Containers are what compose.yaml promises: the local image, no root (but the proxy's,
    # without capabilities), read-only root file systems, and the engine's socket in the
    # proxy alone.
    image = compose.run.env["SYNCHRONICITY_IMAGE"]
    services = {}
    for service in ["docker-proxy", *urls]:
        container = compose.run.container(service)
        template = (
            "{{.Config.Image}} {{.Config.User}} {{.HostConfig.ReadonlyRootfs}} "
            "{{.HostConfig.CapDrop}} {{range .Mounts}}{{.Source}},{{end}}"
        )
        services[service] = subprocess.run(
            ["docker", "inspect", "-f", template, container],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    for service, (used, user, read_only, drop, mounts) in services.items():
        assert (used, read_only, drop) == (image, "true", "[ALL]"), service
        assert user == ("0:0" if service == "docker-proxy" else "10001:10001"), service
        assert ("/var/run/docker.sock," in mounts) == (service == "docker-proxy"), service
