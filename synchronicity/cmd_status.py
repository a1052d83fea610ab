"""``synchronicity status``: one look at a network's health, from its public endpoints."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import httpx

from logserver.client import LogClient
from logserver.core import canonical_json
from logserver.core.errors import FormatError, OperationalError, SynchronicityError
from logserver.protocol.network import NetworkConfig

MAX_STATUS = 1 << 20


def _get(http: httpx.Client, url: str) -> dict[str, object] | None:
    """A witness's ``/status``, or None when it cannot be had: unreachable, not 200, or not a
    JSON object within the size and depth limits (``canonical_json.parse``)."""
    body = bytearray()
    try:
        with http.stream("GET", url) as r:
            if r.status_code != 200:
                return None
            for chunk in r.iter_bytes():
                body += chunk
                if len(body) > MAX_STATUS:
                    return None
    except httpx.HTTPError:
        return None
    try:
        value = canonical_json.parse(bytes(body), "a witness status", max_bytes=MAX_STATUS)
    except FormatError:
        return None
    return value if isinstance(value, dict) else None


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
