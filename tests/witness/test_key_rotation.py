"""A witness's key is replaced on a running network's data (real processes on 127.0.0.1).

Before key epochs the log refused to start after such a config change (``unregistered-key`` at
leaf 0: history was re-verified against today's keys), and the witnesses' consensus state,
certified by the old keys, no longer verified. Now: the log's history verifies against the key
valid when each leaf was written, consensus starts a new epoch, and the network goes on
co-signing with the new key; the old key signs nothing new.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from logserver.core import canonical_json, note
from logserver.core.policy import Policy
from logserver.protocol.entries import Request
from logserver.protocol.signed import sign_entry
from synchronicity.localnet import LocalNetwork
from tests.support.procs import run_cli


def _signer(path: Path) -> note.Signer:
    text = path.read_text().strip()
    parsed = note.parse_private_key(text)
    return note.Signer(parsed.name, parsed.key)


def _request(net: LocalNetwork, signer: note.Signer, tag: str) -> httpx.Response:
    recipe = {"name": "not-a-real-recipe", "tag": tag}  # builders commit to its failure
    signed = sign_entry(Request(recipe), signer, net.config.network_id)
    body = canonical_json.encode(signed.to_json())
    return httpx.post(net.log_url + "/add-entry", content=body, timeout=10)


def _published(net: LocalNetwork, policy: Policy) -> int:
    r = httpx.get(net.log_url + "/checkpoint", timeout=5)
    return policy.verify(r.content).checkpoint.size if r.status_code == 200 else 0


def _wait(condition: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.slow
def test_a_rotated_witness_key_keeps_history_valid_and_the_network_going(tmp_path: Path) -> None:
    LocalNetwork.create(tmp_path, round_ms=300, max_round_ms=2000)
    net = LocalNetwork(tmp_path).start()
    old_key = _signer(tmp_path / "witness-1.key")
    try:
        r = _request(net, old_key, "before")
        assert r.status_code == 200, r.text
        index = r.json()["index"]
        policy = net.config.policy()
        _wait(lambda: _published(net, policy) > index, 60, "the request to be cosigned")
    finally:
        net.stop()

    done = run_cli("network", "rotate-key", "--dir", str(tmp_path), "--witness", "1")
    assert done.returncode == 0, done.stderr
    new_key = _signer(tmp_path / "witness-1.key")
    assert new_key.vkey != old_key.vkey

    net = LocalNetwork(tmp_path).start()  # the log re-verifies its history at start-up
    try:
        policy = net.config.policy()  # witness-1's cosignatures are checked with its new key
        stale = _request(net, old_key, "old key, after the change")
        assert stale.status_code == 409 and stale.headers["X-Protocol-Rule"] == "unregistered-key"
        fresh = _request(net, new_key, "after")
        assert fresh.status_code == 200, fresh.text
        index = fresh.json()["index"]
        _wait(lambda: _published(net, policy) > index, 60, "cosigning with the new key")
        cosigners = {
            s.name for s in note.split_note(httpx.get(net.log_url + "/checkpoint").content)[1]
        }
        assert "witness-1.synchronicity.local" in cosigners
    finally:
        net.stop()
