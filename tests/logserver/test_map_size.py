"""The log's LMDB map: a setting, grown when full, and a full log answers 507 and keeps serving.

The map used to be fixed at 64 GiB; once full, the batch that found it full stopped the
sequencer for good (also after a restart). Now ``log serve --map-size`` sets where it starts,
it doubles up to ``--max-map-size``, and entries that would not fit are refused (507) before
any batch can fail; restarted with a larger maximum the log takes entries again.
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from logserver.core import note, tlog
from logserver.core.checkpoint import Checkpoint
from logserver.storage import RESERVE, LogStore, StorageFull
from tests.conftest import start_log
from tests.support.procs import run_cli

ORIGIN = "example.test/log"
SIGNER = note.Signer(ORIGIN, bytes(32))


def sign(cp: Checkpoint) -> bytes:
    return note.sign_note(cp.to_bytes(), SIGNER)


def entry(i: int, size: int = 8000) -> bytes:
    return (b"%08d" % i) * (size // 8)


def test_a_full_log_answers_507_serves_reads_and_recovers_after_a_restart(
    tmp_path: Path,
) -> None:
    log = start_log(tmp_path, extra=["--open", "--map-size", "1MiB", "--max-map-size", "3MiB"])
    try:
        with httpx.Client(base_url=log.url) as c:
            stored = 0
            while True:
                r = c.post("/add-entry", content=entry(stored))
                if r.status_code != 200:
                    break
                assert r.json()["index"] == stored
                stored += 1
                assert stored < 10_000, "the log never filled up"
            assert r.status_code == 507, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert "--max-map-size" in r.json()["detail"]
            assert stored * 8000 > 1 << 20  # the map grew past its first 1 MiB
            assert (log.data / "log.lmdb" / "data.mdb").stat().st_size > 1 << 20
            # The sequencer still runs: the log is ready, answers 507 again, and serves reads.
            assert c.get("/readyz").json() == {"status": "ready", "size": stored}
            assert c.post("/add-entry", content=b"x" * 60_000).status_code == 507
            assert c.get(f"/entry/{stored - 1}").content == entry(stored - 1)
            cp = c.get("/checkpoint")
            assert cp.status_code == 200 and f"\n{stored}\n".encode() in cp.content
            proof = c.get("/proof/inclusion", params={"index": 7, "size": stored})
            assert proof.status_code == 200
            assert 'log_entries_rejected_total{reason="storage-full"} 2.0' in c.get("/metrics").text
        log.proc.stop()
        log.proc.args[log.proc.args.index("--max-map-size") + 1] = "8MiB"
        log.proc.start()
        with httpx.Client(base_url=log.proc.url) as c:
            for i in range(stored, stored + 200):
                r = c.post("/add-entry", content=entry(i))
                assert r.status_code == 200 and r.json()["index"] == i, r.text
            assert c.get(f"/entry/{stored + 199}").content == entry(stored + 199)
    finally:
        log.proc.stop()
    assert not [line for line in log.proc.stderr_lines if "Traceback" in line]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--map-size", "1K"], "--map-size"),
        (["--map-size", "64Q"], "--map-size"),
        (["--max-map-size", "²G"], "--max-map-size"),
        (["--map-size", "8GiB", "--max-map-size", "4GiB"], "at least --map-size"),
    ],
)
def test_map_size_options_are_checked(tmp_path: Path, args: list[str], says: str) -> None:
    assert run_cli("keygen", ORIGIN, "--out", str(tmp_path / "k")).returncode == 0
    done = run_cli(
        *("log", "serve", "--key", str(tmp_path / "k"), "--data", str(tmp_path / "d")),
        *("--open", "--listen", "127.0.0.1:0", *args),
    )
    assert done.returncode == 2 and says in done.stderr, done.stderr


def test_the_map_grows_while_readers_read(tmp_path: Path) -> None:
    store = LogStore(tmp_path, ORIGIN, 1 << 20, max_map_size=64 << 20)
    first = store.map_size
    memory = tlog.MemoryHashStore()
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                size = store.size()
                if size:
                    store.entries(max(0, size - 40), size)
                    store.inclusion_proof(size // 2, size)
            except BaseException as e:  # reported to the test below
                errors.append(e)
                return

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    try:
        for b in range(60):  # some batches larger than the map: found full mid-batch
            batch = [entry(b * 64 + i, 30_000 if b % 20 == 5 else 2000) for i in range(64)]
            start, _ = store.append_batch(batch, sign)
            assert start == b * 64
            for data in batch:
                memory.append_record(data)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert not errors, errors
    assert store.map_size > first
    assert store.tree_hash(60 * 64) == memory.tree_hash(60 * 64)
    store.close()


def test_a_batch_beyond_the_maximum_writes_nothing(tmp_path: Path) -> None:
    store = LogStore(tmp_path, ORIGIN, 1 << 20, max_map_size=2 << 20)
    store.append_batch([b"first"], sign)
    with pytest.raises(StorageFull, match="--max-map-size"):
        store.append_batch([entry(i, 60_000) for i in range(64)], sign)
    assert store.size() == 1 and store.entry(0) == b"first"
    assert store.append_batch([b"second"], sign)[0] == 1  # small batches still fit
    store.close()


def test_reserve_counts_what_is_admitted_and_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LogStore(tmp_path, ORIGIN, 1 << 20, max_map_size=4 << 20)
    room = 4 << 20
    releases = []
    with pytest.raises(StorageFull, match="--max-map-size"):
        while True:
            releases.append(store.reserve(60_000))
    admitted = len(releases)
    assert store.used_bytes + RESERVE + admitted * 120_000 <= room
    for release in releases:
        release()
        release()  # twice: no effect
    store.reserve(60_000)()  # room again once given back
    monkeypatch.setattr("logserver.storage.disk_free", lambda path: RESERVE)
    with pytest.raises(StorageFull, match="disk"):
        store.reserve(10)
    store.close()
