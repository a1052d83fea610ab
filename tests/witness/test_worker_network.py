"""The build worker against real log processes.

- The commitment hides (issue 10 item 4): the test plays a log operator colluding with a
  builder. A recording proxy stands in front of a real network log and keeps every request the
  worker (and its mirror) sends; nothing that arrives before the close leaf holds the output
  digest, the manifest or any artifact's hash or bytes. After the close the manifest and
  artifacts arrive, then the reveal that names them. The proxy also answers the worker's first
  writes with the log's own "503 the log is busy" (a full queue): they are retried until taken.
- A flood does not lose an honest builder's work (issue 10): four witness processes reproduce
  a fixture crate while a flood of 8,192 x 64 KiB unsigned entries per round hits the log.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import http.server
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from builder.build import resolve_recipe
from builder.manifest import collect_manifest
from logserver.client import LogClient
from logserver.core import note
from logserver.protocol.entries import Close, Commit, Request, Reveal, Verdict, compute_commitment
from logserver.protocol.signed import Leaf
from synchronicity.client import BuilderClient, follow
from synchronicity.localnet import LocalNetwork
from tests.support.builder_helpers import pack_fixture
from tests.witness.test_worker import Built, make_recipe
from witness.mirror import Mirror
from witness.worker import Backoff, BuildWorker, SigningWriter

pytestmark = [pytest.mark.slow]

BUSY = (
    b'{"detail": "the log is busy", "status": 503, "title": "Service Unavailable",'
    b' "type": "about:blank"}'
)


@dataclass(frozen=True)
class Exchange:
    """One request the proxy passed on (or answered itself), as the log operator sees it."""

    method: str
    path: str
    headers: bytes
    body: bytes
    status: int

    def holds(self, secret: bytes) -> bool:
        return any(secret in part for part in (self.path.encode(), self.headers, self.body))


class RecordingProxy:
    """An HTTP server that records every request and passes it on to the log.

    ``busy`` counts the worker's ``POST /add-entry`` of each kind (b"commit", b"reveal") to
    answer with the log's 503 "busy" problem instead, as a full queue does.
    """

    def __init__(self, upstream: str) -> None:
        self.exchanges: list[Exchange] = []
        self.busy: collections.Counter[bytes] = collections.Counter()
        self._lock = threading.Lock()
        self._upstream = http_client = httpx.Client(base_url=upstream, timeout=30.0)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _pass(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, content, kind = 0, b"", "application/problem+json"
                for entry_type, count in proxy.busy.items():
                    marker = b'"type":"' + entry_type + b'"'
                    if self.path == "/add-entry" and marker in body and count > 0:
                        proxy.busy[entry_type] -= 1
                        status, content = 503, BUSY
                if not status:
                    headers = {"Content-Type": self.headers.get("Content-Type", "")}
                    headers |= {k: v for k, v in self.headers.items() if k.startswith("X-")}
                    answer = http_client.request(
                        self.command, self.path, content=body, headers=headers
                    )
                    status, content = answer.status_code, answer.content
                    kind = answer.headers.get("Content-Type", "application/octet-stream")
                with proxy._lock:
                    proxy.exchanges.append(
                        Exchange(self.command, self.path, bytes(self.headers), body, status)
                    )
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(content)))
                if status == 503:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = _pass

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def snapshot(self) -> list[Exchange]:
        with self._lock:
            return list(self.exchanges)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._upstream.close()


@pytest.fixture
def request_cleanup(request: pytest.FixtureRequest) -> pytest.FixtureRequest:
    """pytest's ``request`` (this test's own ``request`` is a build request)."""
    return request


@pytest.fixture
def network_log(tmp_path: Path) -> Iterator[LocalNetwork]:
    """A network config with four witnesses, and only its log process running."""
    net = LocalNetwork.create(tmp_path / "net")
    net.log.start()
    try:
        yield net
    finally:
        net.log.stop()


def entry_signer(net: LocalNetwork, i: int) -> note.Signer:
    text = (net.dir / f"witness-{i}.key").read_text().strip()
    return note.Signer(net.config.witnesses[i - 1].name, note.parse_private_key(text).key)


def wait_for(condition: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_a_colluding_log_learns_no_output_before_the_close(
    network_log: LocalNetwork, tmp_path: Path, request_cleanup: pytest.FixtureRequest
) -> None:
    net, network_id = network_log, network_log.config.network_id
    direct = LogClient(net.log_url)
    request_cleanup.addfinalizer(direct.close)
    proxy = RecordingProxy(net.log_url)
    proxy.busy.update({b"commit": 2, b"reveal": 2})  # the log's queue is full, twice each

    # What this builder's build makes: random bytes, so nothing else can contain them.
    artifacts = {"libhello.rlib": os.urandom(3000), "hello": os.urandom(2000)}

    def build(recipe: object, out_dir: Path, **_: object) -> Built:
        (out_dir / "artifacts").mkdir(parents=True)
        for name, data in artifacts.items():
            (out_dir / "artifacts" / name).write_bytes(data)
            (out_dir / "artifacts" / name).chmod(0o755)
        return Built(True, collect_manifest(out_dir / "artifacts"))

    expected = build(None, tmp_path / "expected").manifest
    assert expected is not None and len(expected.artifacts) == 2
    digest = expected.output_digest
    secrets = [digest.encode(), expected.to_json()] + [
        a.sha256.encode() for a in expected.artifacts
    ]
    secrets += list(artifacts.values())

    me = entry_signer(net, 1)
    via_proxy = LogClient(proxy.url, timeout=10.0)
    mirror = Mirror(
        tmp_path / "mirror", note.Verifier.from_vkey(net.config.log.vkey), via_proxy.tile
    )
    worker = BuildWorker(
        me.name,
        SigningWriter(via_proxy, me, network_id),
        mirror.store,
        tmp_path / "worker",
        build=build,
        build_deadline_ms=net.config.builds.build_deadline_ms,
        reveal_deadline_ms=net.config.builds.reveal_deadline_ms,
        backoff=Backoff(first=0.05, cap=0.2),
    )
    request = Request(make_recipe("1.0.0").to_value())
    job = request.job
    before_close: list[Exchange] | None = None
    stop = threading.Event()

    def consensus() -> None:
        """Commits the log as it grows; snapshots the proxy before the worker can see a close."""
        nonlocal before_close
        size = 0
        while not stop.is_set():
            signed = via_proxy.latest_checkpoint(size, 200)
            if signed is None or (cp := mirror.open_checkpoint(signed)).size <= size:
                continue
            leaves = [Leaf.parse(data).entry.entry for data in direct.leaves(size, cp.size)]
            if before_close is None and any(isinstance(e, Close) for e in leaves):
                before_close = proxy.snapshot()
            mirror.advance(signed)
            worker.committed(cp.size)
            size = cp.size

    follower = threading.Thread(target=consensus, daemon=True)
    follower.start()
    worker.start()
    try:
        others = [entry_signer(net, i) for i in (2, 3, 4)]
        writers = [SigningWriter(direct, other, network_id) for other in others]
        writers[0].add_entry(request)
        nonces = {other.name: hashlib.sha256(other.name.encode()).hexdigest() for other in others}
        for other, writer in zip(others, writers, strict=True):
            commitment = compute_commitment(job, other.name, digest, nonces[other.name])
            writer.add_entry(Commit(job, other.name, commitment))
        wait_for(lambda: before_close is not None)  # the worker committed: all four did
        for other, writer in zip(others, writers, strict=True):
            writer.add_entry(Reveal(job, other.name, nonces[other.name], digest, digest))
        wait_for(lambda: any(isinstance(e, Verdict) for e in entries(direct)))
    finally:
        stop.set()
        worker.stop(wait=5)
        follower.join(5)
        mirror.close()
        via_proxy.close()
        proxy.close()

    verdict = next(e for e in entries(direct) if isinstance(e, Verdict))
    assert verdict.outcome == "reproduced" and len(verdict.agreeing) == 4, verdict
    assert direct.blob(digest) == expected.to_json()  # consumers find the manifest
    assert before_close is not None
    commits = [x for x in before_close if x.method == "POST" and b'"type":"commit"' in x.body]
    assert [x.status for x in commits] == [503, 503, 200]  # busy twice, then taken
    for exchange in before_close:
        leaked = [secret[:16] for secret in secrets if exchange.holds(secret)]
        assert not leaked, (exchange.method, exchange.path, leaked)
    after = proxy.exchanges[len(before_close) :]
    reveals = [i for i, x in enumerate(after) if b'"type":"reveal"' in x.body]
    assert [after[i].status for i in reveals] == [503, 503, 200]
    assert digest.encode() in after[reveals[-1]].body
    uploads = [i for i, x in enumerate(after) if x.method == "PUT" and x.status in (200, 201)]
    uploaded = {after[i].path.removeprefix("/blob/") for i in uploads}
    assert uploaded == {digest} | {a.sha256 for a in expected.artifacts}
    assert max(uploads) < reveals[0]  # the blobs arrive before the reveal that names them


def entries(log: LogClient) -> list[object]:
    return [Leaf.parse(data).entry.entry for data in log.leaves(0, log.size())]


# ----- a flood ---------------------------------------------------------------------------

FLOOD_ENTRIES, FLOOD_ENTRY_BYTES, FLOOD_CLIENTS = 8192, 65_535, 512


async def _flood_round(host: str, port: int, counts: collections.Counter[str]) -> None:
    """8,192 unsigned 64 KiB entries, POSTed by many concurrent clients."""
    body = os.urandom(FLOOD_ENTRY_BYTES)
    head = b"POST /add-entry HTTP/1.1\r\nHost: log\r\nContent-Length: %d\r\n" % len(body)
    head += b"Connection: close\r\n\r\n"
    gate = asyncio.Semaphore(FLOOD_CLIENTS)

    async def one() -> None:
        async with gate:
            try:
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(head + body)
                await writer.drain()
                status = (await reader.readline()).split(b" ")
                counts[status[1].decode() if len(status) > 1 else "no answer"] += 1
                writer.close()
            except OSError as e:
                counts[type(e).__name__] += 1

    await asyncio.gather(*(one() for _ in range(FLOOD_ENTRIES)))


def flood(url: str, until: threading.Event, counts: collections.Counter[str]) -> None:
    host, port = url.removeprefix("http://").split(":")
    while not until.is_set():
        asyncio.run(_flood_round(host, int(port), counts))
        counts["rounds"] += 1


@pytest.mark.docker
def test_a_flood_does_not_lose_an_honest_builders_work(tmp_path: Path) -> None:
    crate = pack_fixture("hello-bin", tmp_path)
    recipe = resolve_recipe(crate, progress=lambda line: None)
    net = LocalNetwork.create(tmp_path / "net").start()
    done, counts = threading.Event(), collections.Counter[str]()
    flooder = threading.Thread(target=flood, args=(net.log_url, done, counts), daemon=True)
    try:
        with LogClient(net.log_url, timeout=60.0) as client:
            with BuilderClient(net.config.witnesses[0].url, requester=net.requester()) as builder:
                builder.upload_crate(recipe.crate_sha256, crate.read_bytes())
                flooder.start()  # from the request on, through builds, commits and reveals
                job, index = builder.request(recipe)
            _, verdict = follow(client, job, index, 300, lambda line: None)
        done.set()
        assert isinstance(verdict.entry, Verdict)
        assert verdict.entry.outcome == "reproduced", verdict.entry
        assert len(verdict.entry.agreeing) == 4
        assert counts["rounds"] >= 1 or sum(counts.values()) > 0
        retried = sum(
            "retrying" in line for w in net.witnesses for line in w.stderr_lines
        )  # how often the builders had to try again (QueueFull, timeouts)
        print(f"flood answers: {dict(counts)}; builder retries: {retried}")
    finally:
        done.set()
        flooder.join(120)
        net.stop()
