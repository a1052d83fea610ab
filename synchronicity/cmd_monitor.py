"""``synchronicity monitor``: follow a log over HTTP and fail loudly if it ever forks."""

from __future__ import annotations

import argparse
import base64
import json
import time
from pathlib import Path

import httpx

from logserver import tiles
from logserver.errors import OperationalError, UsageError
from logserver.network import NetworkConfig
from logserver.policy import Policy
from logserver.protocol_log import protocol_config
from witness.monitor import Monitor, VerdictChecker

MAX_RESPONSE = 1 << 20


class LogClient:
    """The few reads a monitor makes, with bounded responses and clear errors."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(timeout=timeout)

    def _get(self, path: str) -> bytes:
        try:
            r = self._http.get(self.url + path)
        except httpx.HTTPError as e:
            raise OperationalError(f"cannot reach the log at {self.url}: {e}") from e
        if r.status_code != 200:
            raise OperationalError(f"GET {path}: the log answered {r.status_code}: {r.text[:200]}")
        if len(r.content) > MAX_RESPONSE:
            raise OperationalError(f"GET {path}: the answer is larger than {MAX_RESPONSE} bytes")
        return r.content

    def checkpoint(self) -> bytes:
        return self._get("/checkpoint")

    def leaves(self, start: int, end: int) -> list[bytes]:
        out: list[bytes] = []
        for bundle, skip in tiles.entry_bundle_plan(start, end):
            data = self._get("/" + bundle.path)
            out.extend(tiles.decode_entry_bundle(data, bundle.width)[skip:])
        return out

    def consistency(self, old: int, new: int) -> list[bytes]:
        try:
            body = json.loads(self._get(f"/proof/consistency?old={old}&new={new}"))
            return [base64.b64decode(h, validate=True) for h in body["hashes"]]
        except (ValueError, KeyError, TypeError) as e:
            raise OperationalError(f"the log sent a malformed consistency proof: {e}") from e


def monitor(args: argparse.Namespace) -> int:
    policy = Policy.parse(Path(args.policy).read_bytes())
    url = args.log or policy.logs[0].url
    if not url:
        raise UsageError("the policy names no log URL; give --log URL")
    client = LogClient(url)
    verdicts = None
    if args.network:
        network = NetworkConfig.parse(Path(args.network).read_bytes())
        if network.entries != "protocol":
            raise UsageError("--network: this network's log holds no build-protocol entries")
        verdicts = VerdictChecker(protocol_config(network))
    mon = Monitor(
        policy,
        Path(args.state),
        client.checkpoint,
        client.consistency,
        verdicts=verdicts,
        fetch_leaves=client.leaves,
    )
    while True:
        seen = mon.check_once()
        state = "advanced to" if seen.advanced else "unchanged at"
        replayed = f"; {len(verdicts.state.jobs)} jobs' verdicts recomputed" if verdicts else ""
        print(
            f"OK: {seen.checkpoint.origin} {state} size {seen.checkpoint.size}{replayed}",
            flush=True,
        )
        if args.once:
            return 0
        time.sleep(args.interval)
