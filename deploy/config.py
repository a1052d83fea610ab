"""A network config for containers (host names ``log``, ``witness-i``): ``synchronicity deploy
config``.

It runs ``network init`` with one host name a node (what ``synchronicity network init --hosts
log,witness-1,...`` does) and hands the files to the containers' user: the node image runs as
uid 10001, and private keys are written mode 0600, so as root the files are given to that uid;
otherwise the command to do so is printed. The result is what deploy/compose.yaml mounts.
"""

from __future__ import annotations

import os
from pathlib import Path

from deploy.image import NODE_UID


def give_to_node_user(directory: Path) -> bool:
    """Make the config's files the node user's (needs root). False when not permitted."""
    if os.geteuid() != 0:
        return False
    for path in [directory, *directory.iterdir()]:
        os.chown(path, NODE_UID, NODE_UID)
    return True
