"""``network init`` gives the local user a requester key, listed in the network config."""

from __future__ import annotations

import json
from pathlib import Path

from logserver.core import note
from logserver.protocol.network import NetworkConfig
from synchronicity.cmd_network import REQUESTER_FILE, add_requester, init_network
from synchronicity.localnet import LocalNetwork
from tests.support.procs import run_cli


def test_network_init_writes_a_private_requester_key(tmp_path: Path) -> None:
    done = run_cli("network", "init", "--dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert REQUESTER_FILE in done.stdout
    key = tmp_path / REQUESTER_FILE
    assert key.stat().st_mode & 0o777 == 0o600
    signer = note.Signer.from_private_key(key.read_text().strip())
    config = NetworkConfig.parse((tmp_path / "network.json").read_bytes())
    assert [r.verifier for r in config.requesters] == [signer.verifier()]
    requester = LocalNetwork(tmp_path).requester()
    assert requester.network_id == config.network_id and requester.name == signer.name


def test_a_network_made_before_requesters_gets_one(tmp_path: Path) -> None:
    init_network(tmp_path)
    doc = json.loads((tmp_path / "network.json").read_bytes())
    del doc["requesters"]  # as network init wrote it before
    (tmp_path / "network.json").write_text(json.dumps(doc))
    (tmp_path / REQUESTER_FILE).unlink()
    config = add_requester(tmp_path)
    assert len(config.requesters) == 1
    assert NetworkConfig.parse((tmp_path / "network.json").read_bytes()) == config
    assert (tmp_path / "network.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / REQUESTER_FILE).stat().st_mode & 0o777 == 0o600
    assert LocalNetwork(tmp_path).requester().network_id == config.network_id
    assert add_requester(tmp_path) == config  # once
