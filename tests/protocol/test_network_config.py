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


# ---------------------------------------------------------------------------- key epochs


def rotated_doc(until_ms: int = 1_000) -> dict[str, Any]:
    """witness-1 replaced its key (seed 101, then seed 1) at ``until_ms``."""
    doc = config_doc()
    doc["witnesses"][0]["previous_keys"] = [
        {"vkey": witness_key("witness-1", 101).vkey, "until_ms": until_ms}
    ]
    return doc


def test_previous_keys_round_trip_and_give_key_epochs() -> None:
    config = parse(rotated_doc())
    assert [k.until_ms for k in config.witnesses[0].previous_keys] == [1_000]
    assert NetworkConfig.parse(config.to_json()) == config
    protocol = protocol_config(config)
    old, new = witness_key("witness-1", 101), witness_key("witness-1", 1)
    assert protocol.builder_key("witness-1", 999) == note.Verifier("witness-1", old.public_key)
    assert protocol.builder_key("witness-1", 1_000) == note.Verifier("witness-1", new.public_key)
    assert protocol.builder_key("witness-2", 0) == protocol.builders["witness-2"]
    assert "witness-2" not in protocol.retired_keys


def test_a_config_without_previous_keys_is_written_as_before() -> None:
    config = parse(config_doc())
    assert all(w.previous_keys == () for w in config.witnesses)
    assert b"previous_keys" not in config.to_json()
    assert protocol_config(config).retired_keys == {}


def _two_previous(first: int, second: int) -> dict[str, Any]:
    doc = rotated_doc(first)
    doc["witnesses"][0]["previous_keys"].append(
        {"vkey": witness_key("witness-1", 102).vkey, "until_ms": second}
    )
    return doc


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["witnesses"][0]["previous_keys"][0].update(extra=1), "unknown field"),
        (lambda d: d["witnesses"][0]["previous_keys"][0].pop("until_ms"), "missing"),
        (lambda d: d["witnesses"][0]["previous_keys"][0].update(until_ms=0), "until_ms"),
        (lambda d: d["witnesses"][0]["previous_keys"][0].update(until_ms="1"), "integer"),
        (lambda d: d["witnesses"][0].update(previous_keys={}), "list"),
        (lambda d: d["witnesses"][0]["previous_keys"][0].update(vkey="x"), "bad key"),
        (
            lambda d: d["witnesses"][0]["previous_keys"][0].update(
                vkey=witness_key("witness-2", 101).vkey
            ),
            "name differs",
        ),
        (  # the current key of another witness
            lambda d: d["witnesses"][0]["previous_keys"][0].update(
                vkey=witness_key("witness-1", 2).vkey
            ),
            "twice",
        ),
        (  # its own current key
            lambda d: d["witnesses"][0]["previous_keys"][0].update(
                vkey=witness_key("witness-1", 1).vkey
            ),
            "twice",
        ),
        (
            lambda d: d["witnesses"][0]["previous_keys"][0].update(
                vkey=witness_key("witness-1", 101).vkey.replace("witness-1", "witness-1x", 1)
            ),
            "bad key",
        ),
    ],
)
def test_previous_keys_are_parsed_strictly(mutate: Any, message: str) -> None:
    doc = rotated_doc()
    mutate(doc)
    with pytest.raises(FormatError, match=message):
        parse(doc)


def test_previous_keys_end_in_increasing_order() -> None:
    assert len(parse(_two_previous(5, 6)).witnesses[0].previous_keys) == 2
    for first, second in [(6, 5), (5, 5)]:
        with pytest.raises(FormatError, match="increasing"):
            parse(_two_previous(first, second))
