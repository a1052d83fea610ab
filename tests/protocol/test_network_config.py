"""The network config's protocol side: network ids, builder names and the protocol parameters
(``protocol_config``) a config implies."""

from __future__ import annotations

import json
from typing import Any

import pytest

from logserver.core import note
from logserver.core.cosignature import CosignatureSigner
from logserver.core.errors import FormatError
from logserver.protocol.fold import protocol_config
from logserver.protocol.network import NetworkConfig

LOG = note.Signer("log.example", b"L" * 32)


def witness_key(name: str, seed: int) -> CosignatureSigner:
    return CosignatureSigner(name, bytes([seed]) * 32)


def config_doc(n: int = 4, names: list[str] | None = None) -> dict[str, Any]:
    """A valid network config document with ``n`` witnesses (seeds 1..n)."""
    names = names or [f"witness-{i}" for i in range(1, n + 1)]
    return {
        "version": 1,
        "network_id": "test.network",
        "f": (n - 1) // 3,
        "log": {"origin": LOG.name, "vkey": LOG.vkey, "url": "http://log"},
        "witnesses": [
            {"name": name, "vkey": witness_key(name, i).vkey, "url": f"http://w{i}"}
            for i, name in enumerate(names, start=1)
        ],
    }


def parse(doc: dict[str, Any]) -> NetworkConfig:
    return NetworkConfig.parse(json.dumps(doc).encode())


def test_the_network_id_is_at_most_128_bytes_of_utf8() -> None:
    doc = config_doc()
    for good in ("n", "n" * 128, "é" * 64):
        config = parse(doc | {"network_id": good})
        assert protocol_config(config).network_id == good
    for bad in ("", "n" * 129, "é" * 65, "\ud800"):
        with pytest.raises(FormatError, match="network_id"):
            parse(doc | {"network_id": bad})
