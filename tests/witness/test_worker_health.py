"""A witness's ``/readyz`` reports every thread of the node, and 503 names a dead one.

A real ``WitnessNode`` of a protocol network runs in this process (its log and peers are not
running: it keeps trying, which is what it must do); its HTTP app answers ``/readyz``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from logserver.core import note
from logserver.core.cosignature import CosignatureSigner
from synchronicity.cmd_network import init_network
from synchronicity.launcher import free_ports
from witness.app import create_app
from witness.cosign.store import STORE_DIR, CosignStore
from witness.node import WitnessNode


def readyz(node: WitnessNode) -> httpx.Response:
    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(node))
        async with httpx.AsyncClient(transport=transport, base_url="http://witness") as http:
            return await http.get("/readyz")

    return asyncio.run(get())


def test_readyz_names_every_thread_and_answers_503_for_a_dead_one(tmp_path: Path) -> None:
    network = init_network(tmp_path, ports=free_ports(5))
    text = (tmp_path / "witness-1.key").read_text().strip()
    data = tmp_path / "w1"
    cosigned = CosignStore(data / STORE_DIR)
    node = WitnessNode(
        network,
        CosignatureSigner.from_private_key(text),
        note.parse_private_key(text).key,
        data,
        cosigned=cosigned,
    )
    node.start()
    try:
        ready = readyz(node)
        assert ready.status_code == 200, ready.text
        threads = ready.json()["threads"]
        assert {"consensus", "cosignatures"} <= set(threads)
        assert {"worker scanner", "worker builder", "worker outbox"} <= set(threads)
        assert sum(name.startswith("peer ") for name in threads) == 3
        assert all(threads.values())

        assert node.worker is not None
        node.worker.stop(wait=5)  # as if its threads had died
        dead = readyz(node)
        assert dead.status_code == 503
        detail = dead.json()["detail"]
        for name in ("worker builder", "worker outbox", "worker scanner"):
            assert name in detail
        assert "consensus" not in detail
        assert dead.json()["threads"]["worker builder"] is False
    finally:
        node.stop()
        cosigned.close()
