"""``synchronicity witness run``, ``witness add-checkpoint`` and ``witness simulate``.

``run`` is one builder-witness of a network; ``add-checkpoint`` a standalone
c2sp.org/tlog-witness witness of other logs (tests, small deployments; the node serves the
same endpoint); ``simulate`` the deterministic consensus simulator (witness/sim/).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit

from builder.environment import EnvironmentOptions
from builder.envsource import parse_source
from logserver import logs
from logserver.core import note
from logserver.core.cosignature import CosignatureSigner
from logserver.core.errors import OperationalError, UsageError
from logserver.protocol.network import NetworkConfig
from synchronicity.cmd_log import bind, parse_listen, run_app
from witness.admission import RequestLimits
from witness.app import create_app
from witness.cosign.http import AddCheckpointHandler
from witness.cosign.http import create_app as add_checkpoint_app
from witness.cosign.rules import MAX_REQUEST_BYTES, WitnessedLogs
from witness.cosign.store import STORE_DIR, CosignStore
from witness.node import WitnessNode
from witness.sim.campaign import Campaign, run_and_report
from witness.sim.network import SimOptions

log = logging.getLogger("synchronicity.witness")


def run(args: argparse.Namespace) -> int:
    logs.configure(args.log_level)
    log.setLevel(logging.INFO)
    network = NetworkConfig.parse(Path(args.config).read_bytes())
    text = Path(args.key).read_text().strip()
    signer = CosignatureSigner.from_private_key(text)
    seed = note.parse_private_key(text).key
    me = (
        network.witness(signer.name) if signer.name in [w.name for w in network.witnesses] else None
    )
    if me is None:
        raise UsageError(f"{signer.name} is not a witness of network {network.network_id}")
    if args.listen:
        host, port = parse_listen(args.listen)
    else:
        url = urlsplit(me.url)
        host, port = url.hostname or "127.0.0.1", url.port or 80
    sock = bind(host, port)
    data = Path(args.data)
    # One store of what this witness co-signed, for its own log and the others: one writer.
    cosigned = CosignStore(data / STORE_DIR)
    if args.keep_rounds < 16:
        raise UsageError("--keep-rounds must be at least 16")
    if args.max_builds < 1:
        raise UsageError("--max-builds must be at least 1")
    if args.env_timeout <= 0:
        raise UsageError("--env-timeout must be positive")
    environment = EnvironmentOptions(
        sources=tuple(parse_source(text) for text in args.env_source or ()),
        timeout=args.env_timeout,
    )
    node = WitnessNode(
        network,
        signer,
        seed,
        data,
        cosigned=cosigned,
        misbehave=args.misbehave,
        keep_rounds=args.keep_rounds,
        max_builds=args.max_builds,
        environment=environment,
    )
    other_logs = WitnessedLogs.from_pairs(
        [(o.origin, o.vkey) for o in network.other_logs], reserved=[network.log.origin]
    )
    witnessing = AddCheckpointHandler(other_logs, [signer], cosigned)
    node.start()
    log.info(
        "witness serving",
        extra={"witness": signer.name, "listen": f"{host}:{sock.getsockname()[1]}"},
    )
    try:
        run_app(create_app(node, witnessing, _request_limits(args)), sock)
    finally:
        node.stop()
        witnessing.close()  # closes the cosign store, once the node no longer uses it
    return 0


def _request_limits(args: argparse.Namespace) -> RequestLimits:
    """The quotas of ``POST /request`` and ``PUT /crate`` from ``witness run``'s options."""
    return RequestLimits(
        per_minute=args.request_rate,
        burst=args.request_burst,
        max_pending=args.max_pending_jobs,
        max_crate_bytes=args.max_crate_mib << 20,
    )


def add_checkpoint(args: argparse.Namespace) -> int:
    """Serve ``POST /add-checkpoint`` alone, in this process (one LMDB writer).

    Binds the socket itself (``--listen 127.0.0.1:0`` lets the kernel pick the port), then
    prints one JSON line ``{"listen": "<host>:<port>", "vkeys": [...]}`` on stderr and serves
    until SIGTERM, which is a clean stop (exit 0).
    """
    signers = [_read_cosignature_signer(path) for path in args.key]
    other_logs = WitnessedLogs.from_pairs((origin, vkey) for origin, vkey in args.log)
    sock = bind(*parse_listen(args.listen))
    max_body = MAX_REQUEST_BYTES if args.max_body is None else args.max_body
    handler = AddCheckpointHandler(
        other_logs, signers, CosignStore(Path(args.data)), max_body=max_body
    )
    host, port = sock.getsockname()[:2]
    print(
        json.dumps({"listen": f"{host}:{port}", "vkeys": [s.vkey for s in signers]}),
        file=sys.stderr,
        flush=True,
    )
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the handler found before
    # it started: make that handler a clean exit, so the store is closed and the code is 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        run_app(add_checkpoint_app(handler), sock)
    finally:
        handler.close()
    return 0


def _read_cosignature_signer(path: str) -> CosignatureSigner:
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:  # a key file that cannot be read is operational (exit 3)
        raise OperationalError(f"cannot read key file {path}: {exc.strerror}") from exc
    return CosignatureSigner.from_private_key(text)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def simulate(args: argparse.Namespace) -> int:
    """Run a simulator campaign from the command line's options; see witness/sim/."""
    if (args.n - 1) % 3 != 0 or args.n < 1:
        raise UsageError(f"--n must be 3f+1, not {args.n}")
    if not 0 <= args.twins <= args.n or args.scenarios < 0 or args.partitions < 1:
        raise UsageError("need 0 <= --twins <= --n, --scenarios >= 0, --partitions >= 1")
    campaign = Campaign(
        n=args.n,
        twins=args.twins,
        scenarios=args.scenarios,
        seed=args.seed,
        rounds=args.rounds,
        partitions=args.partitions,
        crash=args.crash,
        byzantine=args.byzantine,
        drop_rate=args.drop_rate,
        restart_without_state=args.restart_without_state,
        crash_all=args.crash_all,
        absence=args.absence,
    )
    if not 0 <= args.idle_rate < 1:
        raise UsageError("--idle-rate must be in [0, 1)")
    return run_and_report(campaign, jobs=args.jobs, options=SimOptions(idle_rate=args.idle_rate))
