"""The log's HTTP API, against a real uvicorn process on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import httpx
import pytest

from logserver.core import note, tiles, tlog
from logserver.core.checkpoint import Checkpoint
from logserver.core.policy import Policy
from tests.conftest import RunningLog, start_log
from tests.support.procs import ServerProcess, keygen, run_cli


def add(client: httpx.Client, data: bytes) -> int:
    r = client.post("/add-entry", content=data)
    assert r.status_code == 200, r.text
    index: int = r.json()["index"]
    return index


def checkpoint(client: httpx.Client, log: RunningLog) -> Checkpoint:
    r = client.get("/checkpoint")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    opened = note.open_note(r.content, [note.Verifier.from_vkey(log.vkey)])
    return Checkpoint.parse(opened.text)


def unb64(hashes: list[str]) -> list[bytes]:
    return [base64.b64decode(h) for h in hashes]


def assert_problem(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == status and body["detail"]


def test_append_checkpoint_proofs_tiles(open_log: RunningLog) -> None:
    entries = [f"entry {i}\n".encode() * (i % 5 + 1) for i in range(300)]
    with httpx.Client(base_url=open_log.url) as c:
        sizes_seen = []
        for i, e in enumerate(entries):
            assert add(c, e) == i
            if i in (0, 1, 6, 255, 256, 299):
                sizes_seen.append(checkpoint(c, open_log))
        cp = checkpoint(c, open_log)
        assert (cp.origin, cp.size) == (open_log.origin, 300)
        memory = tlog.MemoryHashStore()
        for e in entries:
            memory.append_record(e)
        assert cp.root_hash == memory.tree_hash(300)

        for index in (0, 1, 137, 255, 256, 299):
            for size in (index + 1, 257, 300):
                if index >= size:
                    continue
                r = c.get("/proof/inclusion", params={"index": index, "size": size})
                body = r.json()
                assert (body["index"], body["size"]) == (index, size)
                tlog.check_record(
                    unb64(body["hashes"]),
                    size,
                    memory.tree_hash(size),
                    index,
                    tlog.record_hash(entries[index]),
                )
        for old in sizes_seen:
            r = c.get("/proof/consistency", params={"old": old.size, "new": 300})
            tlog.check_tree(unb64(r.json()["hashes"]), 300, cp.root_hash, old.size, old.root_hash)

        # Tiles: the full level-0 tile and the partial one are immutable, and both hash up
        # to the checkpoint's root.
        full = c.get("/tile/0/000")
        assert full.status_code == 200
        assert full.headers["cache-control"] == "public, max-age=31536000, immutable"
        partial = c.get("/tile/0/001.p/44")
        assert partial.status_code == 200
        assert partial.headers["cache-control"] == "public, max-age=31536000, immutable"
        level1 = c.get("/tile/1/000.p/1")
        data = {
            tiles.Tile(0, 0): full.content,
            tiles.Tile(0, 1, 44): partial.content,
            tiles.Tile(1, 0, 1): level1.content,
        }
        assert tiles.tree_hash_from_tiles(300, data) == cp.root_hash

        bundle = c.get("/tile/entries/000")
        assert bundle.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert tiles.decode_entry_bundle(bundle.content) == entries[:256]
        assert tiles.decode_entry_bundle(c.get("/tile/entries/001.p/44").content) == entries[256:]
        assert c.get("/entry/7").content == entries[7]


def test_tlog_proof_file_verifies_offline(open_log: RunningLog, tmp_path: Path) -> None:
    with httpx.Client(base_url=open_log.url) as c:
        for i in range(10):
            add(c, f"artifact {i}\n".encode())
        r = c.get("/proof/tlog", params={"index": 3})
    assert r.status_code == 200
    proof_file = tmp_path / "entry.tlog-proof"
    proof_file.write_bytes(r.content)
    policy = tmp_path / "policy"
    policy.write_bytes(Policy.for_network(open_log.vkey, [], 0).to_bytes())
    cmd = ["verify", "--policy", str(policy)]
    ok = run_cli(*cmd, "--proof", str(proof_file))
    assert ok.returncode == 0, ok.stderr
    assert "entry 3" in ok.stdout
    other = tmp_path / "other"
    other.write_bytes(b"artifact 4\n")
    bad = run_cli(*cmd, "--proof", str(proof_file), "--entry", str(other))
    assert bad.returncode == 1
    assert bad.stderr.startswith("synchronicity: verification failed")


def test_bad_inputs_are_problems_never_5xx(open_log: RunningLog) -> None:
    with httpx.Client(base_url=open_log.url) as c:
        assert_problem(c.get("/checkpoint"), 404)  # nothing signed yet
        for i in range(3):
            add(c, b"x%d" % i)
        assert_problem(c.post("/add-entry", content=b""), 400)
        assert_problem(c.post("/add-entry", content=b"x" * 65_536), 413)
        assert add(c, b"y" * 65_535) == 3  # the largest entry a bundle can carry
        for path in (
            "/tile/0/1",
            "/tile/0/001.p/0",
            "/tile/0/000.p/256",
            "/tile/0/x000/001",
            "/tile/64/000",
            "/tile/entries/abc",
            "/tile/0/000.p/03",
        ):
            assert_problem(c.get(path), 400)
        for path in ("/tile/0/000", "/tile/0/000.p/5", "/tile/1/000.p/1", "/tile/entries/001"):
            assert_problem(c.get(path), 404)
        for params in (
            {"index": "1"},
            {"index": "-1", "size": "3"},
            {"index": "01", "size": "3"},
            {"index": "x", "size": "3"},
            {"index": "1" * 30, "size": "3"},
        ):
            assert_problem(c.get("/proof/inclusion", params=params), 400)
        assert_problem(c.get("/proof/inclusion", params={"index": 3, "size": 3}), 404)
        assert_problem(c.get("/proof/inclusion", params={"index": 0, "size": 9}), 404)
        assert_problem(c.get("/proof/consistency", params={"old": 0, "new": 3}), 404)
        assert_problem(c.get("/proof/consistency", params={"old": 4, "new": 3}), 404)
        assert_problem(c.get("/proof/tlog", params={"index": 4}), 404)
        assert_problem(c.get("/entry/99"), 404)
        assert_problem(c.get("/no/such/thing"), 404)
        assert_problem(c.put("/add-entry", content=b"x"), 405)


def test_accept_only_signed_entries(tmp_path: Path) -> None:
    writer_key, writer_vkey = keygen(tmp_path, "builder.example")
    stranger_key, _ = keygen(tmp_path, "stranger.example")
    log = start_log(tmp_path, extra=["--accept", writer_vkey])
    try:
        writer = note.Signer.from_private_key(writer_key.read_text().strip())
        stranger = note.Signer.from_private_key(stranger_key.read_text().strip())
        with httpx.Client(base_url=log.url) as c:
            assert_problem(c.post("/add-entry", content=b"unsigned\n"), 400)
            signed_by_stranger = note.sign_note(b"hello\n", stranger)
            assert_problem(c.post("/add-entry", content=signed_by_stranger), 403)
            assert add(c, note.sign_note(b"hello\n", writer)) == 0
            tampered = note.sign_note(b"hello\n", writer).replace(b"hello", b"HELLO")
            assert_problem(c.post("/add-entry", content=tampered), 403)
    finally:
        log.proc.stop()


def test_health_ready_metrics(open_log: RunningLog) -> None:
    with httpx.Client(base_url=open_log.url) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        for i in range(5):
            add(c, b"m%d" % i)
        assert c.get("/readyz").json() == {"status": "ready", "size": 5}
        r = c.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert "log_entries_appended_total 5.0" in r.text
        assert "log_tree_size 5.0" in r.text


def test_restart_keeps_entries_and_checkpoint(tmp_path: Path) -> None:
    log = start_log(tmp_path)
    with httpx.Client(base_url=log.url) as c:
        for i in range(20):
            add(c, b"r%d" % i)
        before = c.get("/checkpoint").content
    log.proc.stop()
    log.proc.start()
    try:
        with httpx.Client(base_url=log.url) as c:
            assert c.get("/checkpoint").content == before
            assert add(c, b"after") == 20
    finally:
        log.proc.stop()


def test_refuses_to_serve_another_origins_data(tmp_path: Path) -> None:
    log = start_log(tmp_path)
    with httpx.Client(base_url=log.url) as c:
        add(c, b"first")
    log.proc.stop()
    key, _ = keygen(tmp_path, "other.test/log")
    done = run_cli(
        *("log", "serve", "--key", str(key), "--data", str(log.data), "--open"),
        *("--listen", "127.0.0.1:0"),
    )
    assert done.returncode == 3
    assert "belongs to origin 'example.test/log'" in done.stderr


@pytest.mark.parametrize("listen", ["nonsense", "127.0.0.1:99999"])
def test_bad_listen_is_a_usage_error(tmp_path: Path, listen: str) -> None:
    key, _ = keygen(tmp_path, "example.test/log")
    done = run_cli(
        *("log", "serve", "--key", str(key), "--data", str(tmp_path / "d"), "--open"),
        *("--listen", listen),
    )
    assert done.returncode == 2, done.stderr
    assert json.dumps(listen)[1:-1] in done.stderr


def test_full_queue_answers_503_with_retry_after(tmp_path: Path) -> None:
    """Back-pressure, in process: the sequencer is not started, so its queue fills up."""
    import asyncio

    from logserver.http import LogConfig, LogService, create_app

    signer = note.Signer("example.test/log", bytes(32))
    service = LogService(LogConfig(tmp_path, signer, max_queue=1))
    service.sequencer.submit(b"fills the queue")

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://log") as client:
            return await client.post("/add-entry", content=b"one too many")

    r = asyncio.run(post())
    assert_problem(r, 503)
    assert r.headers["retry-after"] == "1"
    assert "busy" in r.json()["detail"]
    service.store.close()


def _blob_header(signer: note.Signer, name: str) -> dict[str, str]:
    from logserver.blobs import upload_message

    signature = base64.b64encode(signer.sign(upload_message(name))).decode()
    return {"X-Blob-Signature": f"{signer.name} {signature}"}


def test_accepted_note_is_logged_once_even_when_replayed(tmp_path: Path) -> None:
    """A replayed signed note answers the index it already has; the log never grows."""
    writer_key, writer_vkey = keygen(tmp_path, "builder.example")
    log = start_log(tmp_path, extra=["--accept", writer_vkey])
    writer = note.Signer.from_private_key(writer_key.read_text().strip())
    signed = note.sign_note(b"release 1.0 is good\n", writer)
    try:
        with httpx.Client(base_url=log.url) as c:
            assert add(c, note.sign_note(b"first\n", writer)) == 0
            assert add(c, signed) == 1
            for _ in range(5):
                assert add(c, signed) == 1  # same answer as the first time
            # One more signature line, by a key the log does not know, makes no new note.
            other = note.Signer("someone.example", bytes(32))
            assert add(c, note.add_signatures(signed, other)) == 1
            assert add(c, note.sign_note(b"other\n", writer)) == 2
            assert c.get("/readyz").json()["size"] == 3
        log.proc.stop()
        log.proc.start()  # the index of accepted notes is durable
        with httpx.Client(base_url=log.proc.url) as c:
            assert add(c, signed) == 1
            assert c.get("/readyz").json()["size"] == 3
            assert "log_entries_duplicate_total 1.0" in c.get("/metrics").text
            assert c.get("/entry/1").content == signed
    finally:
        log.proc.stop()


def test_blob_uploads_need_an_accepted_key(tmp_path: Path) -> None:
    writer_key, writer_vkey = keygen(tmp_path, "builder.example")
    stranger_key, _ = keygen(tmp_path, "stranger.example")
    writer = note.Signer.from_private_key(writer_key.read_text().strip())
    stranger = note.Signer.from_private_key(stranger_key.read_text().strip())
    forger = note.Signer("builder.example", bytes(32))  # the right name, another key
    data = b"a manifest"
    name = hashlib.sha256(data).hexdigest()
    log = start_log(tmp_path, extra=["--accept", writer_vkey])
    try:
        with httpx.Client(base_url=log.url) as c:
            assert_problem(c.put(f"/blob/{name}", content=data), 403)
            for who in (stranger, forger):
                r = c.put(f"/blob/{name}", content=data, headers=_blob_header(who, name))
                assert_problem(r, 403)
            assert_problem(c.get(f"/blob/{name}"), 404)
            r = c.put(f"/blob/{name}", content=data, headers=_blob_header(writer, name))
            assert r.status_code == 201, r.text
            assert c.get(f"/blob/{name}").content == data
    finally:
        log.proc.stop()


def test_an_open_log_takes_no_blobs(open_log: RunningLog) -> None:
    data = b"fills the disk"
    name = hashlib.sha256(data).hexdigest()
    anyone = note.Signer("anyone.example", bytes(32))
    with httpx.Client(base_url=open_log.url) as c:
        r = c.put(f"/blob/{name}", content=data)
        assert_problem(r, 403)
        assert "no blob uploads" in r.json()["detail"]
        signed = c.put(f"/blob/{name}", content=data, headers=_blob_header(anyone, name))
        assert_problem(signed, 403)
        assert_problem(c.get(f"/blob/{name}"), 404)


def test_notes_logged_while_open_are_not_logged_again_once_accepting(tmp_path: Path) -> None:
    writer_key, writer_vkey = keygen(tmp_path, "builder.example")
    writer = note.Signer.from_private_key(writer_key.read_text().strip())
    signed = note.sign_note(b"logged while open\n", writer)
    log = start_log(tmp_path)
    with httpx.Client(base_url=log.url) as c:
        assert add(c, b"not a note") == 0
        assert add(c, signed) == 1
        assert add(c, signed) == 2  # an --open log takes any entry, again and again
    log.proc.stop()
    accepting = ServerProcess(
        ["log", "serve", "--key", str(log.key), "--data", str(log.data)]
        + ["--listen", "127.0.0.1:0", "--accept", writer_vkey]
    ).start()
    try:
        with httpx.Client(base_url=accepting.url) as c:
            assert add(c, signed) == 1  # found by the index built at start-up
            assert add(c, note.sign_note(b"new\n", writer)) == 3
    finally:
        accepting.stop()
