"""The one HTTP client of a log: every call against a real log, and errors by who is at fault."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from logserver.client import LogClient
from logserver.core import note, tiles, tlog
from logserver.core.checkpoint import Checkpoint
from logserver.core.errors import OperationalError, RemoteError
from logserver.core.policy import Policy
from logserver.core.proof import verify_proof
from tests.conftest import RunningLog, start_log
from tests.support.procs import keygen


def test_every_call_against_a_real_log(open_log: RunningLog) -> None:
    verifier = note.Verifier.from_vkey(open_log.vkey)
    with LogClient(open_log.url) as log:
        indexes = [log.add_entry(b"e%d" % i) for i in range(300)]
        assert indexes == list(range(300))
        assert log.size() == 300
        cp = Checkpoint.parse(note.open_note(log.checkpoint(), [verifier]).text)
        assert cp.size == 300
        assert log.leaves(250, 300) == [b"e%d" % i for i in range(250, 300)]
        assert list(log.iter_leaves(0, 3)) == [b"e0", b"e1", b"e2"]
        assert log.entry(7) == b"e7"
        assert len(log.tile(tiles.Tile(0, 0))) == tiles.TILE_WIDTH * 32
        tlog.check_record(
            log.inclusion_proof(7, 300), 300, cp.root_hash, 7, tlog.record_hash(b"e7")
        )
        for _ in range(5):
            log.add_entry(b"more")
        new = Checkpoint.parse(note.open_note(log.checkpoint(), [verifier]).text)
        tlog.check_tree(log.consistency_proof(300, 305), 305, new.root_hash, 300, cp.root_hash)
        policy = Policy.for_network(open_log.vkey, [], 0, log_url=open_log.url)
        assert verify_proof(log.tlog_proof(7), b"e7", policy).index == 7
        # An --open log takes no blobs; the log's own refusals and absences are operational,
        # not the log's bytes being bad.
        with pytest.raises(OperationalError) as refused:
            log.put_blob(b"a blob")
        assert not isinstance(refused.value, RemoteError) and "403" in str(refused.value)
        with pytest.raises(OperationalError) as missing:
            log.blob(hashlib.sha256(b"never stored").hexdigest())
        assert not isinstance(missing.value, RemoteError) and "404" in str(missing.value)
        with pytest.raises(OperationalError) as beyond:
            log.leaves(300, 400)
        assert not isinstance(beyond.value, RemoteError)


def test_signed_blob_upload(tmp_path: Path) -> None:
    key, vkey = keygen(tmp_path, "builder.example")
    running = start_log(tmp_path, extra=["--accept", vkey])
    try:
        with LogClient(running.url) as log:
            signer = note.Signer.from_private_key(key.read_text().strip())
            name = log.put_blob(b"a blob", signer)
            assert name == hashlib.sha256(b"a blob").hexdigest()
            assert log.blob(name) == b"a blob"
    finally:
        running.proc.stop()


def test_an_unreachable_log() -> None:
    with LogClient("http://127.0.0.1:9", timeout=2.0) as log, pytest.raises(OperationalError) as e:
        log.size()
    assert not isinstance(e.value, RemoteError) and "cannot reach the log" in str(e.value)


# ----- a log that lies about its bytes -------------------------------------------------------

_ANSWERS: dict[str, bytes] = {}


class _Garbage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = _ANSWERS.get(self.path.split("?")[0], b"<html>no</html>")
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def garbage() -> Iterator[LogClient]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with LogClient(f"http://127.0.0.1:{server.server_address[1]}") as log:
            yield log
    finally:
        server.shutdown()
        server.server_close()


def test_bytes_that_do_not_parse_are_remote_errors(garbage: LogClient) -> None:
    blob_name = hashlib.sha256(b"the real blob").hexdigest()
    _ANSWERS.clear()
    _ANSWERS.update(
        {
            "/tile/entries/000.p/2": b"\x00\x01a",  # one entry where two were asked for
            "/tile/0/000.p/2": b"x" * 63,
            "/proof/consistency": b'{"hashes": ["AAAA"]}',  # a 3-byte hash
            f"/blob/{blob_name}": b"other bytes",
            "/entry/0": b"x" * (tiles.TILE_WIDTH * (2 + tiles.MAX_ENTRY_SIZE) + 1),
        }
    )
    calls: list[Callable[[], object]] = [
        garbage.checkpoint,
        lambda: garbage.latest_checkpoint(0, 0),
        garbage.size,
        lambda: garbage.leaves(0, 2),
        lambda: garbage.tile(tiles.Tile(0, 0, 2)),
        lambda: garbage.consistency_proof(1, 2),
        lambda: garbage.inclusion_proof(0, 2),
        lambda: garbage.tlog_proof(0),
        lambda: garbage.blob(blob_name),
        lambda: garbage.add_entry(b"x"),
    ]
    for call in calls:
        with pytest.raises(RemoteError) as e:
            call()
        assert "\n" not in str(e.value) and garbage.url in str(e.value)
    # An answer over the call's bound is not read to the end.
    with pytest.raises(OperationalError) as big:
        garbage.entry(0)
    assert not isinstance(big.value, RemoteError) and "larger than" in str(big.value)
