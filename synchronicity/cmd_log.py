"""``synchronicity log serve``: one process that owns the log and serves its HTTP API."""

from __future__ import annotations

import argparse
import logging
import re
import socket
from pathlib import Path

import uvicorn

from logserver import logs
from logserver.core import note
from logserver.core.errors import OperationalError, UsageError
from logserver.http import (
    EntryCheck,
    LogConfig,
    LogService,
    accept_any,
    accept_signed_notes,
    create_app,
)
from logserver.http.transport import ProblemHTTPProtocol
from logserver.http.wire import decimal
from logserver.protocol.network import NetworkConfig
from synchronicity.keys import read_signer, read_verifier

log = logging.getLogger("synchronicity.log")


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (port 0: the kernel picks one), the port a strict decimal."""
    host, sep, port_text = value.rpartition(":")
    port = decimal(port_text, 65536)
    if not sep or not host or port is None:
        raise UsageError(f"--listen wants HOST:PORT, not {value!r}")
    return host.strip("[]"), port


_SIZE = re.compile(r"([0-9]+)([KMGT]?)(?:i?B)?", re.ASCII | re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
MIN_MAP_SIZE = 1 << 20


def parse_size(value: str, option: str) -> int:
    """A size in bytes: a strict decimal with an optional binary unit (``64G``, ``64GiB``,
    ``1048576``), at least ``MIN_MAP_SIZE``; ``UsageError`` otherwise."""
    match = _SIZE.fullmatch(value)
    number = decimal(match.group(1)) if match else None
    if match is None or number is None:
        raise UsageError(f"{option} wants a size such as 64GiB or 1048576, not {value!r}")
    size = number * _UNITS[match.group(2).upper()]
    if not MIN_MAP_SIZE <= size < 1 << 63:
        raise UsageError(f"{option} must be from 1 MiB to 8 EiB, not {value!r}")
    return size


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves, so a busy port is an operational error (exit 3)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this: no Nagle delay between a response's header and body.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OperationalError(f"cannot listen on {host}:{port}: {e.strerror}") from e
    sock.listen(2048)
    return sock


def run_app(app: object, sock: socket.socket) -> None:
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_keep_alive=30,
        # On SIGTERM, requests still running after this are cancelled: a long poll of
        # /latest-checkpoint (up to 5 s) must not hold a stopping server. A write answered
        # late is durable already (the sequencer commits before it answers).
        timeout_graceful_shutdown=1,
        http=ProblemHTTPProtocol,  # unparsable requests get a problem+json 400 too
    )
    uvicorn.Server(config).run(sockets=[sock])


def serve(args: argparse.Namespace) -> int:
    logs.configure(args.log_level)
    log.setLevel(logging.INFO)  # the "serving" line tells launchers the port, at any level
    signer = read_signer(args.key)
    network = NetworkConfig.parse(Path(args.network).read_bytes()) if args.network else None
    check: EntryCheck
    accepted: tuple[note.Verifier, ...] = ()
    if network is not None:
        # The config decides what entries are, so that the log and its witnesses agree.
        if args.accept or (args.open and network.entries != "open"):
            raise UsageError(f"the network config says the log's entries are {network.entries!r}")
        check = accept_any  # protocol entries are checked by the sequencer's batcher
    elif args.open:
        check = accept_any
    elif args.accept:
        # An accepted note is logged once, and blob uploads need one of the same keys.
        accepted = tuple(read_verifier(v) for v in args.accept)
        check = accept_signed_notes(list(accepted))
    else:
        raise UsageError("give --open, or --accept with the keys whose entries the log accepts")
    map_size = parse_size(args.map_size, "--map-size")
    max_map_size = parse_size(args.max_map_size, "--max-map-size")
    if max_map_size < map_size:
        raise UsageError("--max-map-size must be at least --map-size")
    host, port = parse_listen(args.listen)
    sock = bind(host, port)
    service = LogService(
        LogConfig(
            Path(args.data),
            signer,
            check,
            max_batch=args.max_batch,
            max_delay=args.max_delay_ms / 1000,
            max_waiters=args.max_waiters,
            map_size=map_size,
            max_map_size=max_map_size,
            network=network,
            blob_signers=accepted,
            deduplicate=bool(accepted),
        )
    )
    service.start()
    log.info(
        "log serving",
        extra={
            "origin": service.origin,
            "listen": f"{host}:{sock.getsockname()[1]}",
            "size": service.store.size(),
        },
    )
    try:
        run_app(create_app(service), sock)
    finally:
        service.stop()
    return 0
