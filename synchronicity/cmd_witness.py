"""``synchronicity witness run`` and ``synchronicity witness simulate``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from urllib.parse import urlsplit

from logserver import logs, note
from logserver.cosignature import CosignatureSigner
from logserver.errors import UsageError
from logserver.network import NetworkConfig
from synchronicity.cmd_log import bind, parse_listen, run_app
from witness import simulator
from witness.addcheckpoint import WitnessedLogs
from witness.addcheckpoint_http import AddCheckpointHandler
from witness.app import create_app
from witness.node import WitnessNode
from witness.witness_state import WitnessState as AddCheckpointState

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
    node = WitnessNode(network, signer, seed, Path(args.data), misbehave=args.misbehave)
    other_logs = WitnessedLogs.from_pairs(
        [(o.origin, o.vkey) for o in network.other_logs], reserved=[network.log.origin]
    )
    add_checkpoint = AddCheckpointHandler(
        other_logs, [signer], AddCheckpointState(Path(args.data) / "add-checkpoint")
    )
    node.start()
    log.info(
        "witness serving",
        extra={"witness": signer.name, "listen": f"{host}:{sock.getsockname()[1]}"},
    )
    try:
        run_app(create_app(node, add_checkpoint), sock)
    finally:
        node.stop()
        add_checkpoint.close()
    return 0


def simulate(args: argparse.Namespace) -> int:
    return simulator.main(args.simulator_args)
