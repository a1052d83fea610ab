"""``synchronicity deploy image`` and ``synchronicity deploy config``: containers (deploy/).

The deploy package is a folder of the repository, not part of the wheel: these commands run
from a checkout with an editable install (deploy/README.md). ``image`` needs root,
``debootstrap`` and a Docker engine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deploy.config import give_to_node_user, write_client_config
from deploy.dockernet import write_container_config
from deploy.image import NODE_UID, PROJECT_ROOT, ensure_node_image
from logserver.core.errors import UsageError
from synchronicity.cmd_network import NETWORK_FILE


def image(args: argparse.Namespace) -> int:
    """Build the node image if this code has none yet (no registry), and print its tag."""
    project = PROJECT_ROOT if args.project is None else Path(args.project)
    print(ensure_node_image(project=project).tag)
    return 0


def config(args: argparse.Namespace) -> int:
    """Write a network config whose nodes are the containers ``log``, ``witness-1``, ..."""
    directory = Path(args.dir)
    if (directory / NETWORK_FILE).exists() and not args.force:
        raise UsageError(f"{directory / NETWORK_FILE} exists; use --force to replace it")
    network = write_container_config(
        directory,
        witnesses=args.witnesses,
        round_ms=args.round_ms,
        max_round_ms=args.max_round_ms,
        entries=args.entries,
    )
    print(f"network {network.network_id}: log at {network.log.url}")
    for w in network.witnesses:
        print(f"  {w.name} at {w.url}")
    client = write_client_config(directory, network)
    print(f"{client}: the same network at the ports compose publishes on 127.0.0.1")
    if not give_to_node_user(directory):
        print(f"now run: sudo chown -R {NODE_UID}:{NODE_UID} {directory}", file=sys.stderr)
    return 0
