"""A real witness process also co-signs other C2SP logs through POST /add-checkpoint."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx

from logserver.core import cosignature, note, tlog
from logserver.core.checkpoint import Checkpoint
from logserver.protocol.network import NetworkConfig, OtherLog
from synchronicity.cmd_network import init_network
from synchronicity.launcher import ServerProcess, free_ports


def test_witness_node_serves_add_checkpoint_for_other_logs(tmp_path: Path) -> None:
    config = init_network(tmp_path, ports=free_ports(5), entries="open")
    other = note.Signer("other.example/log", b"\x05" * 32)
    config = dataclasses.replace(config, other_logs=(OtherLog(other.name, other.vkey),))
    (tmp_path / "network.json").write_bytes(config.to_json())
    assert NetworkConfig.parse(config.to_json()).other_logs[0].origin == other.name
    witness = ServerProcess(
        ["witness", "run", "--config", str(tmp_path / "network.json")]
        + ["--key", str(tmp_path / "witness-1.key"), "--data", str(tmp_path / "w1")]
    ).start()
    try:
        tree = tlog.MemoryHashStore()
        for i in range(5):
            tree.append_record(b"x%d" % i)
        cp = Checkpoint(other.name, 5, tree.tree_hash(5))
        body = b"old 0\n\n" + note.sign_note(cp.to_bytes(), other)
        r = httpx.post(witness.url + "/add-checkpoint", content=body)
        assert r.status_code == 200, r.text
        verifier = cosignature.CosignatureVerifier.from_vkey(config.witnesses[0].vkey)
        opened = note.open_note(cp.to_bytes() + b"\n" + r.content, [verifier])
        assert opened.sigs[0].name == config.witnesses[0].name
        again = httpx.post(witness.url + "/add-checkpoint", content=body)
        assert again.status_code == 409 and again.text == "5\n"
        # The network's own log is never co-signed outside consensus.
        log_signer = note.Signer.from_private_key((tmp_path / "log.key").read_text().strip())
        own = Checkpoint(config.log.origin, 5, tree.tree_hash(5))
        mine = b"old 0\n\n" + note.sign_note(own.to_bytes(), log_signer)
        assert httpx.post(witness.url + "/add-checkpoint", content=mine).status_code == 404
    finally:
        witness.stop()
