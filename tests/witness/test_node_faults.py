"""A witness node against what goes wrong in a long life: a log that answers garbage, a leader
that pads payloads, a state store that fills up. Real LMDB, a real HTTP server for the log."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from logserver.core import checkpoint, note
from logserver.core.cosignature import CosignatureSigner
from logserver.core.errors import OperationalError
from logserver.protocol.network import NetworkConfig
from synchronicity.cmd_network import NETWORK_FILE, init_network
from synchronicity.launcher import free_ports
from tests.support.consensus_fixtures import make_config, make_qc, signers
from witness.consensus import SafetyState
from witness.consensus.types import Block
from witness.cosign.store import CosignStore
from witness.node import MAX_PAYLOAD_BYTES, WitnessNode
from witness.node_state import NodeState


class GarbageLog(http.server.BaseHTTPRequestHandler):
    """A log behind a maintenance page: every answer is a 200 with HTML."""

    def do_GET(self) -> None:
        body = b"<html><body>Down for maintenance</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def garbage_log() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), GarbageLog)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _node(tmp_path: Path, log_port: int, index: int = 1) -> tuple[WitnessNode, CosignStore]:
    ports = [log_port, *free_ports(4)]
    init_network(tmp_path / "net", ports=ports, round_ms=100, max_round_ms=400, entries="open")
    network = NetworkConfig.parse((tmp_path / "net" / NETWORK_FILE).read_bytes())
    text = (tmp_path / "net" / f"witness-{index}.key").read_text().strip()
    signer = CosignatureSigner.from_private_key(text)
    seed = note.parse_private_key(text).key
    store = CosignStore(tmp_path / f"cosigned-{index}")
    node = WitnessNode(network, signer, seed, tmp_path / f"w{index}", cosigned=store)
    return node, store


def test_a_log_answering_garbage_kills_no_thread(tmp_path: Path, garbage_log: int) -> None:
    """Before: a 200 with an HTML page made the leader's proposal raise FormatError inside
    the consensus thread, which died while /readyz still said 200."""
    node, store = _node(tmp_path, garbage_log, index=2)  # witness-2 leads round 1
    assert node.replica.leader_of(1) == node.index
    node.start()
    try:
        time.sleep(3)  # its watcher polls the log again and again, and it times out alone
        threads = node.threads()
        assert all(threads.values()), threads
        assert node.stats.step_failures == 0
        assert node.replica.stats["proposals-deferred"] >= 1  # nothing usable to propose
    finally:
        node.stop()
        store.close()


def test_a_padded_payload_is_refused(tmp_path: Path, garbage_log: int) -> None:
    node, store = _node(tmp_path, garbage_log)
    try:
        key = note.Signer("synchronicity.local/log", bytes(32))
        text = checkpoint.Checkpoint("synchronicity.local/log", 1, bytes(32)).to_bytes()
        padder = note.Signer("padding", bytes([7]) * 32)
        padded = note.sign_note(text, key, padder)  # a second, unknown signature line
        assert not node._validate(b"", padded)
        huge = note.sign_note(text.replace(b"\n", b"\n" + b"x" * MAX_PAYLOAD_BYTES + b"\n", 1), key)
        assert not node._validate(b"", huge)
        assert node.stats.invalid_payloads == 2
    finally:
        node.mirror.close()
        node.state.close()
        store.close()


def test_the_state_store_grows_its_map_and_says_when_it_cannot(tmp_path: Path) -> None:
    config = make_config(4)
    qc = make_qc(config, 1, config.genesis.id)
    block = Block.create(config.network_id, 2, 1, qc, b"x" * 60_000, signer=signers(4)[1])
    grows = NodeState(tmp_path / "grows", config.network_id, map_size=1 << 20)
    for i in range(64):  # ~4 MB of blocks in a 1 MB map: grown, never MapFullError
        grows.persist(
            SafetyState(i, qc, 0),
            (
                Block.create(
                    config.network_id, 2 + i, 1, qc, b"%d" % i + b"x" * 60_000, signer=signers(4)[1]
                ),
            ),
        )
    assert grows.map_size > 1 << 20 and len(grows.stored_blocks()) == 64
    assert grows.safety() == SafetyState(63, qc, 0)
    grows.close()
    capped = NodeState(
        tmp_path / "capped", config.network_id, map_size=1 << 20, max_map_size=1 << 20
    )
    with pytest.raises(OperationalError, match="full"):
        for i in range(64):
            capped.persist(
                SafetyState(i, qc, 0),
                (block,)
                if i == 0
                else (
                    Block.create(
                        config.network_id,
                        2 + i,
                        1,
                        qc,
                        b"%d" % i + b"x" * 60_000,
                        signer=signers(4)[1],
                    ),
                ),
            )
    # What was written before stays readable: a full store loses nothing acknowledged.
    assert capped.safety() is not None
    capped.close()


def test_commits_keep_only_the_last_payload_and_the_blocks_above_the_anchor(
    tmp_path: Path,
) -> None:
    config = make_config(4)
    key = signers(4)
    qc1 = make_qc(config, 1, config.genesis.id)
    b1 = Block.create(config.network_id, 1, 1, config.genesis_qc, b"1", signer=key[1])
    qc1 = make_qc(config, 1, b1.id)
    b2 = Block.create(config.network_id, 2, 2, qc1, b"2", signer=key[2])
    qc2 = make_qc(config, 2, b2.id)
    b3 = Block.create(config.network_id, 3, 3, qc2, b"3", signer=key[3])
    state = NodeState(tmp_path, config.network_id)
    state.persist(SafetyState(3, qc2, 0), (b1, b2, b3))
    from witness.consensus.types import CommitProof

    state.save_commit(CommitProof(1, b1, b2, qc2), b"payload one")
    state.save_commit(None, b"payload two")
    assert state.committed_payload() == b"payload two"
    assert [b.round for b in state.stored_blocks()] == [2, 3]
    anchor = state.anchor()
    assert isinstance(anchor, CommitProof) and anchor.block.id == b1.id
    state.close()
