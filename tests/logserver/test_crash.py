"""Durability under SIGKILL: acknowledged entries survive, and the log never forks.

A real log process is killed with SIGKILL at random moments while several clients append
concurrently, then restarted on the same data, twenty times over. After every restart, every
index the log acknowledged must hold the bytes that were submitted, and the log's checkpoint
must be consistent with every checkpoint observed before, across all the crashes.
"""

from __future__ import annotations

import base64
import random
import threading
import time
from pathlib import Path

import httpx
import pytest

from logserver.core import note, tiles, tlog
from logserver.core.checkpoint import Checkpoint
from tests.conftest import start_log

CRASHES = 20
WRITERS = 8


def _writer(url: str, wid: int, stop: threading.Event, acked: dict[int, bytes]) -> None:
    seq = 0
    with httpx.Client(base_url=url, timeout=5.0) as c:
        while not stop.is_set():
            data = f"writer {wid} entry {seq} {random.random()}\n".encode()
            seq += 1
            try:
                r = c.post("/add-entry", content=data)
            except httpx.HTTPError:
                return  # the server died under us: this entry was never acknowledged
            if r.status_code == 200:
                acked[r.json()["index"]] = data


def _checkpoints(
    url: str, stop: threading.Event, verifier: note.Verifier, seen: list[Checkpoint]
) -> None:
    with httpx.Client(base_url=url, timeout=5.0) as c:
        while not stop.is_set():
            try:
                r = c.get("/checkpoint")
            except httpx.HTTPError:
                return
            if r.status_code == 200:
                seen.append(Checkpoint.parse(note.open_note(r.content, [verifier]).text))
            time.sleep(0.01)


@pytest.mark.slow
def test_sigkill_during_concurrent_appends(tmp_path: Path) -> None:
    rng = random.Random(20261121)
    log = start_log(tmp_path)
    verifier = note.Verifier.from_vkey(log.vkey)
    acked: dict[int, bytes] = {}
    seen: list[Checkpoint] = []
    try:
        for _ in range(CRASHES):
            stop = threading.Event()
            threads = [
                threading.Thread(target=_writer, args=(log.url, w, stop, acked))
                for w in range(WRITERS)
            ]
            threads.append(
                threading.Thread(target=_checkpoints, args=(log.url, stop, verifier, seen))
            )
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.05, 0.8))
            log.proc.kill()
            stop.set()
            for t in threads:
                t.join()

            log.proc.start()
            with httpx.Client(base_url=log.url, timeout=10.0) as c:
                cp = Checkpoint.parse(note.open_note(c.get("/checkpoint").content, [verifier]).text)
                assert max(acked, default=-1) < cp.size, "an acknowledged index is gone"
                # Every acknowledged entry, read back through the entry bundles.
                stored: list[bytes] = []
                for start in range(0, cp.size, tiles.TILE_WIDTH):
                    width = min(tiles.TILE_WIDTH, cp.size - start)
                    n = start // tiles.TILE_WIDTH
                    path = f"/{tiles.Tile(tiles.ENTRIES_LEVEL, n, width).path}"
                    stored += tiles.decode_entry_bundle(c.get(path).content)
                for index, data in acked.items():
                    assert stored[index] == data, f"entry {index} changed"
                # The new checkpoint extends every checkpoint seen, before any crash.
                for old in {(s.size, s.root_hash) for s in seen}:
                    size, root = old
                    if size == cp.size:
                        assert root == cp.root_hash, "two roots for one size"
                        continue
                    r = c.get("/proof/consistency", params={"old": size, "new": cp.size})
                    proof = [base64.b64decode(h) for h in r.json()["hashes"]]
                    tlog.check_tree(proof, cp.size, cp.root_hash, size, root)
                seen.append(cp)
        assert len(acked) > 100, "the test must append under load to mean anything"
    finally:
        log.proc.stop()
