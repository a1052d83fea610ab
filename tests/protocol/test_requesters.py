"""Requesters: the network config's ``requesters`` list and the signature on their requests."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from logserver.core import note
from logserver.core.errors import FormatError, VerificationError
from logserver.protocol.network import NetworkConfig
from logserver.protocol.requester import RequestSignature, RequestSigner, request_message
from tests.protocol.test_network_config import config_doc, witness_key

ALICE = note.Signer("alice.example", b"A" * 32)
BOB = note.Signer("bob.example", b"B" * 32)


def with_requesters(*requesters: dict[str, Any]) -> dict[str, Any]:
    return config_doc() | {"requesters": list(requesters)}


def parse(doc: dict[str, Any]) -> NetworkConfig:
    return NetworkConfig.parse(json.dumps(doc).encode())


def test_a_config_without_requesters_stays_valid_and_is_written_as_before() -> None:
    config = parse(config_doc())
    assert config.requesters == ()
    assert b"requesters" not in config.to_json()


def test_requesters_round_trip() -> None:
    doc = with_requesters(
        {"name": ALICE.name, "vkey": ALICE.vkey}, {"name": BOB.name, "vkey": BOB.vkey}
    )
    config = parse(doc)
    assert [r.name for r in config.requesters] == [ALICE.name, BOB.name]
    assert config.requesters[0].verifier == ALICE.verifier()
    assert NetworkConfig.parse(config.to_json()) == config


@pytest.mark.parametrize(
    "requesters",
    [
        [{"name": ALICE.name}],  # no key
        [{"name": ALICE.name, "vkey": ALICE.vkey, "url": "http://x"}],  # unknown field
        [{"name": BOB.name, "vkey": ALICE.vkey}],  # the key's name differs
        [{"name": ALICE.name, "vkey": "not a key"}],
        [{"name": "w", "vkey": witness_key("w", 9).vkey}],  # a cosignature key, not a note key
        [{"name": ALICE.name, "vkey": ALICE.vkey}] * 2,  # twice
        [
            {"name": ALICE.name, "vkey": ALICE.vkey},
            {"name": ALICE.name, "vkey": note.Signer(ALICE.name, b"C" * 32).vkey},
        ],  # one name, two keys
        [{"name": ALICE.name, "vkey": ALICE.vkey, "extra": 1}],
        [{"name": 7, "vkey": ALICE.vkey}],
    ],
)
def test_requesters_are_parsed_strictly(requesters: list[dict[str, Any]]) -> None:
    with pytest.raises(FormatError):
        parse(with_requesters(*requesters))


def test_requesters_must_be_a_list() -> None:
    with pytest.raises(FormatError):
        parse(config_doc() | {"requesters": {"name": ALICE.name, "vkey": ALICE.vkey}})


def test_the_signed_message_binds_network_method_path_and_body() -> None:
    body = b'{"recipe": 1}'
    message = request_message("net-1", "post", "/request", body)
    assert message == (
        b"synchronicity/request/v1\nnet-1\nPOST /request\n" + hashlib.sha256(body).digest()
    )
    signer = RequestSigner(ALICE, "net-1")
    header = signer.headers("POST", "/request", body)["X-Request-Signature"]
    signature = RequestSignature.parse(header)
    assert signature.name == ALICE.name
    signature.verify(ALICE.verifier(), "net-1", "POST", "/request", body)
    for network, method, path, other in [
        ("net-2", "POST", "/request", body),
        ("net-1", "PUT", "/request", body),
        ("net-1", "POST", "/crate/x", body),
        ("net-1", "POST", "/request", body + b" "),
    ]:
        with pytest.raises(VerificationError):
            signature.verify(ALICE.verifier(), network, method, path, other)
    with pytest.raises(VerificationError):  # the right signature, named for another key
        RequestSignature(BOB.name, signature.signature).verify(
            BOB.verifier(), "net-1", "POST", "/request", body
        )


@pytest.mark.parametrize(
    "header",
    [
        "",
        "alice.example",
        "alice.example ",
        " " + base64.b64encode(bytes(64)).decode(),
        "alice.example " + base64.b64encode(bytes(63)).decode(),
        "alice.example " + base64.b64encode(bytes(64)).decode() + " ",
        "alice.example " + base64.b64encode(bytes(64)).decode()[:85] + "B==",  # not canonical
        "alice.example !" + base64.b64encode(bytes(64)).decode()[1:],
        "alice+example " + base64.b64encode(bytes(64)).decode(),
    ],
)
def test_a_malformed_header_is_refused(header: str) -> None:
    with pytest.raises(FormatError):
        RequestSignature.parse(header)
