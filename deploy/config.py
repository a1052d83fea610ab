"""``python -m deploy.config``: a network config for containers (host names ``log``, ``witness-i``).

It runs ``network init`` with one host name a node (what ``synchronicity network init --hosts
log,witness-1,...`` does) and hands the files to the containers' user: the node image runs as
uid 10001, and private keys are written mode 0600, so as root the files are given to that uid;
otherwise the command to do so is printed. The result is what deploy/compose.yaml mounts.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from deploy.dockernet import write_container_config
from deploy.image import NODE_UID
from logserver.errors import UsageError
from synchronicity.cmd_network import NETWORK_FILE


def give_to_node_user(directory: Path) -> bool:
    """Make the config's files the node user's (needs root). False when not permitted."""
    if os.geteuid() != 0:
        return False
    for path in [directory, *directory.iterdir()]:
        os.chown(path, NODE_UID, NODE_UID)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.config", description="network config for the node containers"
    )
    parser.add_argument("--dir", required=True, help="where to write network.json, keys, policy")
    parser.add_argument("--witnesses", type=int, default=4, help="n = 3f+1 (default %(default)s)")
    parser.add_argument("--round-ms", type=int, default=1000, help="first consensus timeout")
    parser.add_argument("--max-round-ms", type=int, default=30_000, help="longest timeout")
    parser.add_argument(
        "--entries",
        choices=["protocol", "open"],
        default="protocol",
        help="protocol: build-protocol entries only; open: any entry (demos, tests)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing config")
    args = parser.parse_args(argv)
    directory = Path(args.dir)
    try:
        if (directory / NETWORK_FILE).exists() and not args.force:
            raise UsageError(f"{directory / NETWORK_FILE} exists; use --force to replace it")
        config = write_container_config(
            directory,
            witnesses=args.witnesses,
            round_ms=args.round_ms,
            max_round_ms=args.max_round_ms,
            entries=args.entries,
        )
    except UsageError as e:
        print(e, file=sys.stderr)
        return 2
    print(f"network {config.network_id}: log at {config.log.url}")
    for w in config.witnesses:
        print(f"  {w.name} at {w.url}")
    if not give_to_node_user(directory):
        print(f"now run: sudo chown -R {NODE_UID}:{NODE_UID} {directory}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
