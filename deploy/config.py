"""A network config for containers (host names ``log``, ``witness-i``): ``synchronicity deploy
config``.

It runs ``network init`` with one host name a node (what ``synchronicity network init --hosts
log,witness-1,...`` does) and hands the files to the containers' user: the node image runs as
uid 10001, and private keys are written mode 0600, so as root the files are given to that uid;
otherwise the command to do so is printed. The result is what deploy/compose.yaml mounts.

The nodes find each other by their host names on the compose network, which this machine does
not resolve: ``client.json`` is the same network with the URLs of the ports compose publishes
on 127.0.0.1 (8700 for the log, 8700 + i for witness i), for the commands run on this machine
(``synchronicity rebuild --network deploy/net/client.json``, ``image export --to-log``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from deploy.image import NODE_UID
from logserver.protocol.network import NetworkConfig

CLIENT_FILE = "client.json"
FIRST_PORT = 8700


def client_config(network: NetworkConfig, ports: Sequence[int] | None = None) -> NetworkConfig:
    """``network`` with the log and each witness at ``http://127.0.0.1:<port>``: ``ports`` are
    the log's then each witness's (default 8700, 8701, ...), as compose publishes them."""
    chosen = (
        list(ports) if ports is not None else list(range(FIRST_PORT, FIRST_PORT + 1 + network.n))
    )
    if len(chosen) != 1 + network.n:
        raise ValueError(f"{len(chosen)} ports for a log and {network.n} witnesses")
    urls = [f"http://127.0.0.1:{port}" for port in chosen]
    return dataclasses.replace(
        network,
        log=dataclasses.replace(network.log, url=urls[0]),
        witnesses=tuple(
            dataclasses.replace(w, url=url)
            for w, url in zip(network.witnesses, urls[1:], strict=True)
        ),
    )


def write_client_config(directory: Path, network: NetworkConfig) -> Path:
    path = directory / CLIENT_FILE
    path.write_bytes(client_config(network).to_json())
    return path


def give_to_node_user(directory: Path) -> bool:
    """Make the config's files the node user's (needs root). False when not permitted."""
    if os.geteuid() != 0:
        return False
    for path in [directory, *directory.iterdir()]:
        os.chown(path, NODE_UID, NODE_UID)
    return True
