"""The network config, and a log in network mode collecting witness cosignatures (real process)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from logserver.core import cosignature, note
from logserver.core.checkpoint import Checkpoint
from logserver.core.errors import FormatError, PolicyError
from logserver.core.policy import Policy
from logserver.core.proof import verify_proof
from logserver.protocol.network import NetworkConfig
from synchronicity.cmd_network import init_network
from tests.support.procs import ServerProcess, run_cli


def test_network_init_cli_writes_a_valid_config(tmp_path: Path) -> None:
    done = run_cli("network", "init", "--dir", str(tmp_path), "--witnesses", "7")
    assert done.returncode == 0, done.stderr
    config = NetworkConfig.parse((tmp_path / "network.json").read_bytes())
    assert (config.n, config.f, config.quorum, config.k) == (7, 2, 5, 5)
    assert Policy.parse((tmp_path / "policy").read_bytes()) == config.policy()
    for i in range(1, 8):
        signer = cosignature.load_signer((tmp_path / f"witness-{i}.key").read_text().strip())
        assert signer.vkey == config.witnesses[i - 1].vkey
    assert (tmp_path / "log.key").stat().st_mode & 0o777 == 0o600
    again = run_cli("network", "init", "--dir", str(tmp_path))
    assert again.returncode == 2 and "exists" in again.stderr
    assert (
        run_cli("network", "init", "--dir", str(tmp_path / "x"), "--witnesses", "5").returncode == 2
    )


def _mutated(doc: dict[str, object], path: list[str | int], value: object) -> bytes:
    target: object = doc
    for key in path[:-1]:
        target = target[key]  # type: ignore[index]
    if value is KeyError:
        del target[path[-1]]  # type: ignore[attr-defined]
    else:
        target[path[-1]] = value  # type: ignore[index]
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["f"], 2),
        (["version"], 2),
        (["surprise"], 1),
        (["log", "vkey"], "not a key"),
        (["log", "origin"], "another.origin"),
        (["witnesses", 1, "name"], "witness-1.synchronicity.local"),
        (["witnesses", 0, "extra"], True),
        (["timeouts", "round_ms"], 0),
        (["builds", "k"], 9),
        (["network_id"], ""),
        (["f"], True),
        (["log"], KeyError),
    ],
)
def test_network_config_is_strict(tmp_path: Path, path: list[str | int], value: object) -> None:
    init_network(tmp_path)
    doc = json.loads((tmp_path / "network.json").read_bytes())
    with pytest.raises(FormatError):
        NetworkConfig.parse(_mutated(doc, path, value))


def test_network_config_rejects_shared_witness_keys(tmp_path: Path) -> None:
    init_network(tmp_path)
    doc = json.loads((tmp_path / "network.json").read_bytes())
    doc["witnesses"][1]["vkey"] = doc["witnesses"][0]["vkey"]
    with pytest.raises(FormatError):
        NetworkConfig.parse(json.dumps(doc).encode())
    assert (
        NetworkConfig.parse((tmp_path / "network.json").read_bytes()).to_json()
        == (tmp_path / "network.json").read_bytes()
    )


def _cosign(signed: bytes, signer: note.Signer) -> bytes:
    text, _ = note.split_note(signed)
    return note.sign_note(text, signer)


def test_log_publishes_only_quorum_cosigned_checkpoints(tmp_path: Path) -> None:
    config = init_network(tmp_path, entries="open")
    witnesses = [
        cosignature.load_signer((tmp_path / f"witness-{i}.key").read_text().strip())
        for i in range(1, 5)
    ]
    stranger = cosignature.CosignatureSigner("witness-1.synchronicity.local", b"\x07" * 32)
    log = ServerProcess(
        ["log", "serve", "--key", str(tmp_path / "log.key"), "--data", str(tmp_path / "data")]
        + ["--network", str(tmp_path / "network.json"), "--open", "--listen", "127.0.0.1:0"]
    ).start()
    policy = config.policy()
    try:
        with httpx.Client(base_url=log.url) as c:
            for i in range(10):
                assert c.post("/add-entry", content=b"e%d" % i).status_code == 200
            assert c.get("/checkpoint").status_code == 404  # nobody co-signed yet
            latest = c.get("/latest-checkpoint").content
            assert Checkpoint.parse(note.split_note(latest)[0]).size == 10
            assert c.get("/tile/entries/000.p/10").status_code == 200  # mirrors can follow

            for w in witnesses[:2]:
                r = c.post("/cosignature", content=_cosign(latest, w))
                assert r.json() == {"published_size": 0}
            assert c.post("/cosignature", content=_cosign(latest, stranger)).status_code == 403
            forged = _cosign(latest, witnesses[2]).replace(b"\n10\n", b"\n11\n")
            assert c.post("/cosignature", content=forged).status_code in (403, 409)
            assert c.get("/checkpoint").status_code == 404
            r = c.post("/cosignature", content=_cosign(latest, witnesses[2]))
            assert r.json() == {"published_size": 10}

            published = c.get("/checkpoint").content
            verified = policy.verify(published)
            assert verified.checkpoint.size == 10 and len(verified.cosigners) == 3
            two_only = note.split_note(published)
            assert len(two_only[1]) == 4  # the log and three witnesses

            proof_file = c.get("/proof/tlog", params={"index": 4}).content
            assert verify_proof(proof_file, b"e4", policy).cosigners == verified.cosigners
            lax = Policy.for_network(config.log.vkey, [], 0)
            assert verify_proof(proof_file, b"e4", lax).checkpoint.size == 10

            # A newer checkpoint with only two cosignatures is not published...
            c.post("/add-entry", content=b"e10")
            newer = c.get("/latest-checkpoint").content
            for w in witnesses[:2]:
                c.post("/cosignature", content=_cosign(newer, w))
            with pytest.raises(PolicyError):
                Policy.parse((tmp_path / "policy").read_bytes()).verify(
                    note.add_signatures(newer, witnesses[0], witnesses[1])
                )
            assert policy.verify(c.get("/checkpoint").content).checkpoint.size == 10
            # ...and the fourth witness completes it.
            c.post("/cosignature", content=_cosign(newer, witnesses[3]))
            assert policy.verify(c.get("/checkpoint").content).checkpoint.size == 11
            # Late cosignatures on an older checkpoint never move the published one back.
            assert c.post("/cosignature", content=_cosign(latest, witnesses[3])).json() == {
                "published_size": 11
            }
            health = c.get("/witnesses").json()
            assert health["quorum"] == 3
            assert [w["last_size"] for w in health["witnesses"]] == [11, 11, 10, 11]
    finally:
        log.stop()
