"""``synchronicity network init``: a working local network config with fresh keys."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import re
import secrets
import time
from pathlib import Path
from urllib.parse import urlsplit

from logserver.core import cosignature, note
from logserver.core.errors import FormatError, UsageError
from logserver.fsutil import atomic_write
from logserver.protocol.network import (
    MAX_WITNESSES,
    BuildRules,
    ConsensusTimeouts,
    LogInfo,
    NetworkConfig,
    PreviousKey,
    RequesterInfo,
    WitnessInfo,
)
from logserver.protocol.requester import RequestSigner
from synchronicity.keys import write_private_key

NETWORK_FILE = "network.json"
POLICY_FILE = "policy"
REQUESTER_FILE = "requester.key"  # the local user's key for signed requests (spec/api.md)
REQUESTER_NAME = "requester.synchronicity.local"
MAX_PORT = 65535
_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


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
    """Write network.json, the policy, every node's private key and the requester key of the
    local user (``requester.key``, listed in ``requesters``) under ``directory``.

    The log listens on ``log_port`` and witness i on ``log_port + i``, unless ``ports`` lists
    the log's port and then each witness's. Every node is at ``host``, unless ``hosts`` lists
    the log's host name and then each witness's (one host a node, as in containers).

    Everything is checked before anything is written (``UsageError`` naming what is wrong):
    n = 3f+1 witnesses, at most ``MAX_WITNESSES``; ports 1..65535, with room after
    ``log_port`` for every witness, and no two nodes at one host and port; host names that
    are DNS names or IP addresses; a valid origin; and the config read back from its own
    bytes, with every URL naming the host and port given.
    """
    if witnesses < 1 or (witnesses - 1) % 3 or witnesses > MAX_WITNESSES:
        raise UsageError(
            f"--witnesses must be 3f+1 (1, 4, 7, 10, ... {MAX_WITNESSES}), not {witnesses}"
        )
    if ports is None:
        if not 1 <= log_port <= MAX_PORT - witnesses:
            raise UsageError(
                f"--log-port must be 1 to {MAX_PORT - witnesses}: the log and its "
                f"{witnesses} witnesses listen on --log-port and the {witnesses} ports after it"
            )
        ports = [log_port + i for i in range(witnesses + 1)]
    if len(ports) != witnesses + 1:
        raise UsageError("give one port for the log and one for each witness")
    if not all(1 <= port <= MAX_PORT for port in ports):
        raise UsageError(f"ports must be 1 to {MAX_PORT}, not {ports}")
    hosts = hosts or [host] * (witnesses + 1)
    if len(hosts) != witnesses + 1:
        raise UsageError("give one host for the log and one for each witness")
    in_urls = [url_host(name) for name in hosts]
    if len(set(zip(in_urls, ports, strict=True))) != len(ports):
        raise UsageError("two nodes would listen on the same host and port")
    if not note.is_valid_key_name(origin):
        raise UsageError(f"--origin {origin!r} is not a key name (no spaces, no '+')")
    log_private, log_vkey = note.generate_key(origin)
    keys = {"log.key": log_private}
    infos = []
    for i in range(1, witnesses + 1):
        name = f"witness-{i}.synchronicity.local"
        private, vkey = cosignature.generate_cosignature_key(name)
        keys[f"witness-{i}.key"] = private
        infos.append(WitnessInfo(name, vkey, f"http://{in_urls[i]}:{ports[i]}"))
    keys[REQUESTER_FILE], requester_vkey = note.generate_key(REQUESTER_NAME)
    try:
        config = NetworkConfig(
            network_id=f"synchronicity-{secrets.token_hex(8)}",
            log=LogInfo(origin, log_vkey, f"http://{in_urls[0]}:{ports[0]}"),
            witnesses=tuple(infos),
            f=(witnesses - 1) // 3,
            timeouts=ConsensusTimeouts(round_ms, max(round_ms, max_round_ms)),
            builds=builds or BuildRules(),
            entries=entries,
            requesters=(RequesterInfo(REQUESTER_NAME, requester_vkey),),
        )
        _check_written(config, config.to_json(), hosts, ports)
    except FormatError as e:
        raise UsageError(f"refusing to write this network: {e}") from e
    directory.mkdir(parents=True, exist_ok=True)
    for filename, private in keys.items():
        write_private_key(directory / filename, private)
    (directory / NETWORK_FILE).write_bytes(config.to_json())
    (directory / POLICY_FILE).write_bytes(config.policy().to_bytes())
    return config


def add_requester(directory: Path) -> NetworkConfig:
    """Give a network made before requesters existed a requester key for the local user:
    ``requester.key`` and its entry in ``requesters`` (the rest of network.json unchanged)."""
    config = NetworkConfig.parse((directory / NETWORK_FILE).read_bytes())
    if any(r.name == REQUESTER_NAME for r in config.requesters):
        return config
    private, vkey = note.generate_key(REQUESTER_NAME)
    config = dataclasses.replace(
        config, requesters=(*config.requesters, RequesterInfo(REQUESTER_NAME, vkey))
    )
    write_private_key(directory / REQUESTER_FILE, private)
    atomic_write(directory / NETWORK_FILE, config.to_json(), 0o644)  # public, as written first
    return config


def read_requester(path: Path, config: NetworkConfig) -> RequestSigner:
    """The requester key in ``path``, which the network config must list."""
    try:
        signer = note.Signer.from_private_key(path.read_text().strip())
    except OSError as e:
        raise UsageError(f"cannot read the requester key {path}: {e.strerror}") from e
    if not any(r.verifier == signer.verifier() for r in config.requesters):
        raise UsageError(f"{path} is not the key of a requester of network {config.network_id}")
    return RequestSigner(signer, config.network_id)


def url_host(name: str) -> str:
    """``name`` as the host part of a URL: an IP address (IPv6 in brackets) or a DNS name of
    letters, digits and hyphens (RFC 1123); ``UsageError`` for anything else."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return f"[{address.compressed}]" if address.version == 6 else address.compressed
    labels = name.split(".")
    if (
        not name.isascii()
        or len(name) > 253
        or not all(_DNS_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()  # 999.1.1.1 is neither an address nor a name
    ):
        raise UsageError(f"{name!r} is not a host name or an IP address")
    return name


def _check_written(config: NetworkConfig, data: bytes, hosts: list[str], ports: list[int]) -> None:
    """The bytes about to be written parse back to ``config``, whose URLs name each node's
    host and port."""
    if NetworkConfig.parse(data) != config:
        raise FormatError("network config", "it does not read back as written")
    urls = [config.log.url] + [w.url for w in config.witnesses]
    for url, host, port in zip(urls, hosts, ports, strict=True):
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None or parts.port != port:
            raise FormatError("network config", f"URL {url} does not name port {port}")
        if _host_key(parts.hostname) != _host_key(host):
            raise FormatError("network config", f"URL {url} does not name host {host}")


def _host_key(host: str) -> str:
    """A host compared by what it names: an address in its compressed form, a name in lower
    case."""
    try:
        return ipaddress.ip_address(host.strip("[]")).compressed
    except ValueError:
        return host.lower()


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
    print(f"  requester {REQUESTER_NAME} (key {directory / REQUESTER_FILE})")
    print(f"config {directory / NETWORK_FILE}; client policy {directory / POLICY_FILE}")
    return 0


def rotate_witness_key(directory: Path, number: int, now_ms: int) -> NetworkConfig:
    """Give witness ``number`` (1..n) a fresh key in ``witness-<number>.key``; its current key
    becomes a previous key valid for leaves stamped before ``now_ms`` (log time)."""
    config = NetworkConfig.parse((directory / NETWORK_FILE).read_bytes())
    if not 1 <= number <= config.n:
        raise UsageError(f"--witness must be 1..{config.n}, not {number}")
    old = config.witnesses[number - 1]
    if old.previous_keys and old.previous_keys[-1].until_ms >= now_ms:
        raise UsageError(f"{old.name}'s last key change is not in the past yet")
    private, vkey = cosignature.generate_cosignature_key(old.name)
    rotated = dataclasses.replace(
        old, vkey=vkey, previous_keys=(*old.previous_keys, PreviousKey(old.vkey, now_ms))
    )
    witnesses = list(config.witnesses)
    witnesses[number - 1] = rotated
    config = dataclasses.replace(config, witnesses=tuple(witnesses))
    write_private_key(directory / f"witness-{number}.key", private)
    atomic_write(directory / NETWORK_FILE, config.to_json(), 0o644)
    atomic_write(directory / POLICY_FILE, config.policy().to_bytes(), 0o644)
    return config


def rotate_key(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    config = rotate_witness_key(directory, args.witness, int(time.time() * 1000))
    w = config.witnesses[args.witness - 1]
    print(f"{w.name}: new key in {directory / f'witness-{args.witness}.key'} ({w.vkey})")
    print("restart every node of the network with the new network.json and policy")
    return 0
