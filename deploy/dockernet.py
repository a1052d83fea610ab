"""A Synchronicity network as Docker containers on a private bridge network (no registry).

``ContainerNetwork`` runs one log and n witnesses from the node image (``deploy.image``): a
user-defined bridge network (the *mesh*) on which the nodes find each other by the host names
``log`` and ``witness-<i>`` (network aliases), one named volume a node for its LMDB data, and
the network config and each node's key copied into ``/config`` before start. A second bridge
network, *control*, stands for the clients' and operator's path to each node (what published
ports are in compose): it forbids traffic between containers and gives no host names, so the
nodes never reach each other through it.
Everything it makes carries the label ``synchronicity.deploy=<run id>`` and ``remove``
deletes it all, whatever state it is in.

It is the fault harness of tests/deploy/test_faults.py: ``partition`` and ``heal``
(disconnect and reconnect a node from the mesh), ``kill`` (SIGKILL), ``stop`` (SIGTERM)
and ``start``. This machine reaches each node at its address on the control network, so a
partitioned node can still be asked for its status and a partitioned log still takes entries.
Containers are created and started, never ``run`` (that could pull).
"""

from __future__ import annotations

import io
import secrets
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import docker.models.containers
import httpx

from deploy.image import CONFIG_DIR, DATA_DIR, NODE_UID
from logserver.core.errors import OperationalError
from logserver.protocol.network import NetworkConfig
from synchronicity.cmd_network import NETWORK_FILE, POLICY_FILE, init_network

LABEL_RUN = "synchronicity.deploy"
LOG_PORT = 8700


def node_names(witnesses: int) -> list[str]:
    """Host names: ``log``, then ``witness-1`` .. ``witness-<n>``."""
    return ["log"] + [f"witness-{i}" for i in range(1, witnesses + 1)]


def write_container_config(
    directory: Path,
    *,
    witnesses: int = 4,
    round_ms: int = 1000,
    max_round_ms: int = 30_000,
    entries: str = "protocol",
) -> NetworkConfig:
    """``network init`` with one host name a node: the log on 8700, witness i on 8700 + i."""
    return init_network(
        directory,
        witnesses=witnesses,
        hosts=node_names(witnesses),
        log_port=LOG_PORT,
        round_ms=round_ms,
        max_round_ms=max_round_ms,
        entries=entries,
    )


def node_command(name: str, config: NetworkConfig) -> list[str]:
    """The ``synchronicity`` arguments a node's container runs with."""
    network = f"{CONFIG_DIR}/{NETWORK_FILE}"
    if name == "log":
        command = ["log", "serve", "--key", f"{CONFIG_DIR}/log.key", "--data", DATA_DIR]
        command += ["--network", network, "--listen", f"0.0.0.0:{LOG_PORT}"]
        return command + (["--open"] if config.entries == "open" else [])
    index = int(name.removeprefix("witness-"))
    command = ["witness", "run", "--config", network, "--key", f"{CONFIG_DIR}/{name}.key"]
    return command + ["--data", DATA_DIR, "--listen", f"0.0.0.0:{LOG_PORT + index}"]


def config_archive(directory: Path, name: str) -> bytes:
    """A tar of the files ``name`` needs in /config, owned by the node user."""
    files = [(NETWORK_FILE, 0o644), (POLICY_FILE, 0o644), (f"{name}.key", 0o600)]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for filename, mode in files:
            data = (directory / filename).read_bytes()
            info = tarfile.TarInfo(filename)
            info.size, info.mode, info.uid, info.gid = len(data), mode, NODE_UID, NODE_UID
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass
class Node:
    """One container of the test network: its name, the port published on 127.0.0.1, the
    container and the volume that holds its data."""

    name: str
    port: int
    container_id: str
    volume: str


class ContainerNetwork:
    """One log and n witnesses in containers; see the module docstring."""

    def __init__(self, client: docker.DockerClient, image: str, directory: Path) -> None:
        self.client = client
        self.image = image
        self.dir = directory
        self.config = NetworkConfig.parse((directory / NETWORK_FILE).read_bytes())
        self.run_id = f"sync-{secrets.token_hex(4)}"
        self.labels = {LABEL_RUN: self.run_id}
        self.mesh = f"{self.run_id}-mesh"
        self.control = f"{self.run_id}-control"
        self.nodes: dict[str, Node] = {}

    def create(self) -> ContainerNetwork:
        """Make the network, volumes and containers (not started). Undo with ``remove``."""
        api = self.client.api
        try:
            self.client.networks.create(self.mesh, driver="bridge", labels=self.labels)
            # No traffic between containers on control: only this machine to each node.
            control = self.client.networks.create(
                self.control,
                driver="bridge",
                labels=self.labels,
                options={"com.docker.network.bridge.enable_icc": "false"},
            )
            for index, name in enumerate(node_names(self.config.n)):
                container_name = f"{self.run_id}-{name}"
                volume = self.client.volumes.create(container_name, labels=self.labels).name
                endpoint = api.create_endpoint_config(aliases=[name])
                created = api.create_container(
                    self.image,
                    command=node_command(name, self.config),
                    name=container_name,
                    labels=self.labels,
                    host_config=api.create_host_config(
                        network_mode=self.mesh,
                        binds={volume: {"bind": DATA_DIR, "mode": "rw"}},
                        init=False,
                    ),
                    networking_config={"EndpointsConfig": {self.mesh: endpoint}},
                    use_config_proxy=False,
                )
                node = Node(name, LOG_PORT + index, str(created["Id"]), str(volume))
                self.nodes[name] = node
                control.connect(node.container_id)
                api.put_archive(node.container_id, CONFIG_DIR, config_archive(self.dir, name))
        except docker.errors.DockerException as exc:
            raise OperationalError(f"cannot create the container network: {exc}") from exc
        return self

    def _container(self, name: str) -> docker.models.containers.Container:
        return self.client.containers.get(self.nodes[name].container_id)

    def url(self, name: str) -> str:
        """The node's URL from this machine: its address on the control network."""
        container = self._container(name)
        networks = container.attrs["NetworkSettings"]["Networks"]
        address = networks.get(self.control, {}).get("IPAddress")
        if not address:
            raise OperationalError(f"{name} has no address on {self.control} (not running?)")
        return f"http://{address}:{self.nodes[name].port}"

    def start(self, *names: str, timeout: float = 30.0) -> None:
        """Start nodes (all by default) and wait until each answers /readyz."""
        for name in names or tuple(self.nodes):
            self._container(name).start()
        for name in names or tuple(self.nodes):
            self.wait_ready(name, timeout)

    def wait_ready(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.url(name) + "/readyz", timeout=1.0).status_code == 200:
                    return
            except (httpx.TransportError, OperationalError):
                pass
            if time.monotonic() > deadline:
                raise OperationalError(f"{name} not ready:\n{self.logs(name)[-3000:]}")
            time.sleep(0.1)

    def kill(self, name: str) -> None:
        """SIGKILL the node's process: what a power cut does to it."""
        container = self._container(name)
        container.kill(signal="SIGKILL")
        container.wait()

    def stop(self, name: str, timeout: int = 10) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        self._container(name).stop(timeout=timeout)

    def partition(self, name: str) -> None:
        """Cut the node off the mesh: it keeps running and answering on the control network."""
        self.client.networks.get(self.mesh).disconnect(self.nodes[name].container_id)

    def heal(self, name: str) -> None:
        """Put the node back on the mesh under its host name."""
        network = self.client.networks.get(self.mesh)
        network.connect(self.nodes[name].container_id, aliases=[name])

    def running(self, name: str) -> bool:
        return bool(self._container(name).attrs["State"]["Running"])

    def logs(self, name: str) -> str:
        try:
            return bytes(self._container(name).logs()).decode(errors="replace")
        except docker.errors.DockerException as exc:
            return f"(no logs: {exc})"

    def remove(self) -> None:
        """Remove every container, volume and network of this run (by label), in any state."""
        label: dict[str, str | list[str] | bool] = {"label": [f"{LABEL_RUN}={self.run_id}"]}
        errors: list[str] = []
        for container in self.client.containers.list(all=True, filters=label):
            try:
                container.remove(force=True, v=True)
            except docker.errors.DockerException as exc:
                errors.append(str(exc))
        for volume in self.client.volumes.list(filters=label):
            try:
                volume.remove(force=True)
            except docker.errors.DockerException as exc:
                errors.append(str(exc))
        for network in self.client.networks.list(filters=label):
            try:
                network.remove()
            except docker.errors.DockerException as exc:
                errors.append(str(exc))
        if errors:
            raise OperationalError("clean-up incomplete: " + "; ".join(errors))
