"""``synchronicity monitor``: follow a log over HTTP and fail loudly if it ever forks.

With ``--network`` it also replays the build protocol (every verdict recomputed) and checks
the crate index the log serves (``/crates/...``) against the same leaves.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from logserver.client import LogClient
from logserver.core.errors import UsageError
from logserver.core.policy import Policy
from logserver.protocol.fold import protocol_config
from logserver.protocol.network import NetworkConfig
from witness.monitor import IndexAudit, Monitor, VerdictChecker


def monitor(args: argparse.Namespace) -> int:
    policy = Policy.parse(Path(args.policy).read_bytes())
    url = args.log or policy.logs[0].url
    if not url:
        raise UsageError("the policy names no log URL; give --log URL")
    client = LogClient(url, timeout=10.0)
    verdicts = crates = None
    if args.network:
        network = NetworkConfig.parse(Path(args.network).read_bytes())
        if network.entries != "protocol":
            raise UsageError("--network: this network's log holds no build-protocol entries")
        verdicts = VerdictChecker(protocol_config(network))
        crates = IndexAudit(network.network_id, client.crate_index)
    mon = Monitor(
        policy,
        Path(args.state),
        client.checkpoint,
        client.consistency_proof,
        verdicts=verdicts,
        fetch_leaves=client.leaves,
        crates=crates,
    )
    while True:
        seen = mon.check_once()
        state = "advanced to" if seen.advanced else "unchanged at"
        replayed = f"; {len(verdicts.state.jobs)} jobs' verdicts recomputed" if verdicts else ""
        if crates is not None:
            total = len(crates.index.names())
            replayed += f"; crate index checked ({crates.checked} of {total} crates asked)"
        print(
            f"OK: {seen.checkpoint.origin} {state} size {seen.checkpoint.size}{replayed}",
            flush=True,
        )
        if args.once:
            return 0
        time.sleep(args.interval)
