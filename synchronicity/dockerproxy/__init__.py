"""The Docker API proxy of builder nodes in containers: ``synchronicity deploy proxy``.

A builder-witness needs a Docker engine for its build sandboxes, and whoever holds the engine's
socket is root on its host. In the container deployment (deploy/compose.yaml) only the proxy
mounts ``/var/run/docker.sock``; each node gets a unix socket of its own from the proxy (in a
volume only it mounts, ``DOCKER_HOST=unix:///run/docker-proxy/docker.sock``), and the proxy
forwards only the calls on the allow-list of :mod:`~synchronicity.dockerproxy.policy`, for the
containers and volumes that node created. Everything else is refused with 403. Example::

    synchronicity deploy proxy --docker unix:///var/run/docker.sock \\
        --client witness-1=/run/docker-proxy/witness-1/docker.sock \\
        --client witness-2=/run/docker-proxy/witness-2/docker.sock

deploy/README.md says what this protects and what it does not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys

from logserver.core.errors import UsageError
from synchronicity.dockerproxy.policy import Forbidden, Repositories, route
from synchronicity.dockerproxy.server import Proxy, parse_clients, serve, socket_path

__all__ = ["Forbidden", "Proxy", "Repositories", "main", "route"]


def main(args: argparse.Namespace) -> int:
    """``synchronicity deploy proxy``: serve until SIGTERM or SIGINT (exit 0)."""
    try:
        clients = parse_clients(args.client or [])
        docker = socket_path(args.docker)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if not clients:
        raise UsageError("give at least one --client NAME=PATH")
    prefix = args.image_prefix or os.environ.get("SYNCHRONICITY_IMAGE_PREFIX") or "synchronicity"
    with contextlib.ExitStack() as stack:
        log_file = stack.enter_context(open(args.log, "a")) if args.log else None
        proxy = Proxy(docker, clients, Repositories(prefix), log_file)
        asyncio.run(_run(proxy))
    print("docker proxy: stopped", file=sys.stderr)
    return 0


async def _run(proxy: Proxy) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(proxy, stop)
