"""``synchronicity status``: one look at a network's health, from its public endpoints."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import httpx

from logserver.client import LogClient
from logserver.core.errors import OperationalError, SynchronicityError
from logserver.protocol.network import NetworkConfig


def _get(http: httpx.Client, url: str) -> dict[str, object] | None:
    try:
        r = http.get(url)
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    body: dict[str, object] = r.json()
    return body


def status(args: argparse.Namespace) -> int:
    config = NetworkConfig.parse(Path(args.network).read_bytes())
    policy = config.policy()
    with httpx.Client(timeout=3.0) as http, LogClient(config.log.url, timeout=3.0) as log:
        size: int | None = None
        with contextlib.suppress(OperationalError):
            size = log.size()
        published = 0
        with contextlib.suppress(SynchronicityError):
            published = policy.verify_checkpoint(log.checkpoint()).size
        witnesses = []
        for w in config.witnesses:
            st = _get(http, f"{w.url}/status")
            witnesses.append({"name": w.name, "url": w.url, "up": st is not None, **(st or {})})
    report = {
        "network": config.network_id,
        "log": {"url": config.log.url, "up": size is not None, "size": size},
        "published_size": published,
        "quorum": config.quorum,
        "witnesses": witnesses,
    }
    up = sum(1 for row in witnesses if row["up"])
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        state = "up" if size is not None else "DOWN"
        print(f"network {config.network_id}: log {state}, size {size}, published {published}")
        for row in witnesses:
            if row["up"]:
                print(
                    f"  {row['name']}: round {row.get('round')}, "
                    f"cosigned {row.get('cosigned_size')}, mirror {row.get('mirror_size')}"
                )
            else:
                print(f"  {row['name']}: DOWN")
        print(f"{up} of {config.n} witnesses up; a quorum needs {config.quorum}")
    if size is None or up < config.quorum:
        raise OperationalError("the network cannot make progress")
    return 0
