"""Serving so that caches carry the load: immutable tiles, gzipped entry bundles, and a client
that reads gzip within its size bounds."""

from __future__ import annotations

import gzip
import http.server
import threading
import tracemalloc
from collections.abc import Iterator

import httpx
import pytest

from logserver.client import LogClient
from logserver.core import tiles
from logserver.core.errors import OperationalError, RemoteError
from tests.conftest import RunningLog, start_log
from tests.support.rawhttp import Connection, RawResponse, request_bytes

IMMUTABLE = "public, max-age=31536000, immutable"
ENTRIES = [f"entry {i}\n".encode() * (i % 7 + 1) for i in range(300)]


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLog]:
    log = start_log(tmp_path_factory.mktemp("caching"))
    try:
        with httpx.Client(base_url=log.url) as c:
            for entry in ENTRIES:
                assert c.post("/add-entry", content=entry).status_code == 200
        yield log
    finally:
        log.proc.stop()


def get(log: RunningLog, path: str, *headers: tuple[str, str]) -> RawResponse:
    """The raw answer, as a cache in front of the log sees it (httpx would gunzip it)."""
    conn = Connection(log.url)
    try:
        r = conn.exchange(request_bytes("GET", path, list(headers)))
    finally:
        conn.close()
    assert r.status == 200, (path, r)
    return r


def test_every_tile_is_immutable(filled: RunningLog) -> None:
    for path in ("/tile/0/000", "/tile/0/001.p/44", "/tile/1/000.p/1"):
        r = get(filled, path, ("Accept-Encoding", "gzip"))
        assert r.headers["cache-control"] == IMMUTABLE, path
        assert "content-encoding" not in r.headers  # hashes do not compress
    for path in ("/tile/entries/000", "/tile/entries/001.p/44"):
        assert get(filled, path).headers["cache-control"] == IMMUTABLE, path


@pytest.mark.parametrize("path", ["/checkpoint", "/latest-checkpoint"])
def test_checkpoints_are_never_cached(filled: RunningLog, path: str) -> None:
    assert get(filled, path, ("Accept-Encoding", "gzip")).headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("accept", "gzipped"),
    [
        (None, False),
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("deflate, br", False),
        ("*", True),
        ("gzip;q=0", False),
        ("*;q=0.5, gzip;q=0", False),
        ("identity", False),
    ],
)
def test_entry_bundles_are_gzipped_when_accepted(
    filled: RunningLog, accept: str | None, gzipped: bool
) -> None:
    headers = [] if accept is None else [("Accept-Encoding", accept)]
    for path, expected in (
        ("/tile/entries/000", ENTRIES[:256]),
        ("/tile/entries/001.p/44", ENTRIES[256:]),
    ):
        r = get(filled, path, *headers)
        assert r.headers["vary"] == "Accept-Encoding"  # both forms: a cache keeps them apart
        assert r.headers["cache-control"] == IMMUTABLE
        if gzipped:
            assert r.headers["content-encoding"] == "gzip"
            body = gzip.decompress(r.body)
            assert len(r.body) < len(body) // 4
        else:
            assert "content-encoding" not in r.headers
            body = r.body
        assert tiles.decode_entry_bundle(body) == expected


def test_the_client_reads_gzipped_bundles(filled: RunningLog) -> None:
    with LogClient(filled.url) as log:
        assert log.leaves(0, 300) == ENTRIES
        assert log.entry_bundle(tiles.Tile(tiles.ENTRIES_LEVEL, 1, 44)) == ENTRIES[256:]


# ----- a log that answers with a gzip bomb -------------------------------------------------

BOMB = gzip.compress(bytes(64 << 20), 6)  # 64 MiB of zeros in ~64 KiB
_ANSWERS: dict[str, tuple[str, bytes]] = {
    "/readyz": ("gzip", BOMB),
    "/checkpoint": ("gzip", b"\x1f\x8b not really gzip"),
    "/tile/entries/000.p/1": ("br", b"\x00\x01a"),
    "/tile/entries/000.p/2": ("gzip", gzip.compress(b"\x00\x01a\x00\x01b") + b"trailing"),
}


class _Bomb(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        encoding, body = _ANSWERS[self.path.split("?")[0]]
        self.send_response(200)
        self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def bomb() -> Iterator[LogClient]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Bomb)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with LogClient(f"http://127.0.0.1:{server.server_address[1]}") as log:
            yield log
    finally:
        server.shutdown()
        server.server_close()


def test_the_clients_bound_applies_to_decoded_bytes(bomb: LogClient) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(OperationalError, match="larger than"):
            bomb.size()  # a 1 MiB bound
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"inflated {peak} bytes for a 1 MiB bound"
    for call in (
        bomb.checkpoint,
        lambda: bomb.entry_bundle(tiles.Tile(tiles.ENTRIES_LEVEL, 0, 1)),
        lambda: bomb.entry_bundle(tiles.Tile(tiles.ENTRIES_LEVEL, 0, 2)),
    ):
        with pytest.raises(RemoteError):
            call()
