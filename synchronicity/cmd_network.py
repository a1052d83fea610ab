"""``synchronicity network init``: a working local network config with fresh keys."""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path

from logserver.core import cosignature, note
from logserver.core.errors import UsageError
from logserver.protocol.network import (
    BuildRules,
    ConsensusTimeouts,
    LogInfo,
    NetworkConfig,
    WitnessInfo,
)
from synchronicity.keys import write_private_key

NETWORK_FILE = "network.json"
POLICY_FILE = "policy"


def init_network(
    directory: Path,
    *,
    witnesses: int = 4,
    host: str = "127.0.0.1",
    log_port: int = 8700,
    origin: str = "synchronicity.local/log",
    round_ms: int = 1000,
    max_round_ms: int = 30_000,
    builds: BuildRules | None = None,
    ports: list[int] | None = None,
    entries: str = "protocol",
    hosts: list[str] | None = None,
) -> NetworkConfig:
    """Write network.json, the policy and every node's private key under ``directory``.

    The log listens on ``log_port`` and witness i on ``log_port + i``, unless ``ports`` lists
    the log's port and then each witness's. Every node is at ``host``, unless ``hosts`` lists
    the log's host name and then each witness's (one host a node, as in containers).
    """
    ports = ports or [log_port + i for i in range(witnesses + 1)]
    if len(ports) != witnesses + 1:
        raise UsageError("give one port for the log and one for each witness")
    hosts = hosts or [host] * (witnesses + 1)
    if len(hosts) != witnesses + 1 or not all(hosts):
        raise UsageError("give one host for the log and one for each witness")
    if (witnesses - 1) % 3 or witnesses < 1:
        raise UsageError(f"--witnesses must be 3f+1 (1, 4, 7, 10, ...), not {witnesses}")
    directory.mkdir(parents=True, exist_ok=True)
    log_private, log_vkey = note.generate_key(origin)
    write_private_key(directory / "log.key", log_private)
    infos = []
    for i in range(1, witnesses + 1):
        name = f"witness-{i}.synchronicity.local"
        private, vkey = cosignature.generate_cosignature_key(name)
        write_private_key(directory / f"witness-{i}.key", private)
        infos.append(WitnessInfo(name, vkey, f"http://{hosts[i]}:{ports[i]}"))
    config = NetworkConfig(
        network_id=f"synchronicity-{secrets.token_hex(8)}",
        log=LogInfo(origin, log_vkey, f"http://{hosts[0]}:{ports[0]}"),
        witnesses=tuple(infos),
        f=(witnesses - 1) // 3,
        timeouts=ConsensusTimeouts(round_ms, max(round_ms, max_round_ms)),
        builds=builds or BuildRules(),
        entries=entries,
    )
    (directory / NETWORK_FILE).write_bytes(config.to_json())
    (directory / POLICY_FILE).write_bytes(config.policy().to_bytes())
    return config


def _host_list(text: str | None) -> list[str] | None:
    """``--hosts log,witness-1,...``: the log's host name, then each witness's, comma-separated."""
    return [name.strip() for name in text.split(",")] if text else None


def init(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    if (directory / NETWORK_FILE).exists() and not args.force:
        raise UsageError(f"{directory / NETWORK_FILE} exists; use --force to replace it")
    config = init_network(
        directory,
        witnesses=args.witnesses,
        host=args.host,
        log_port=args.log_port,
        origin=args.origin,
        hosts=_host_list(args.hosts),
    )
    print(f"network {config.network_id}: log {config.log.origin} at {config.log.url}")
    for i, w in enumerate(config.witnesses, start=1):
        print(f"  {w.name} at {w.url} (key {directory / f'witness-{i}.key'})")
    print(f"config {directory / NETWORK_FILE}; client policy {directory / POLICY_FILE}")
    return 0
