"""The log's HTTP API (FastAPI): submissions, C2SP tiles, proofs, health and metrics.

One process owns the log: the ``LogService`` holds the LMDB store and the sequencer thread,
and every request handler is a short read of LMDB or a hand-off to the sequencer. Handlers
answer bad input with problem+json 4xx responses; a 5xx means the server itself is broken.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.responses import Response

from logserver import blobs, note, proof, tiles
from logserver.blobs import BlobStore
from logserver.buildproto import ProtocolViolation
from logserver.checkpoint import Checkpoint
from logserver.cosignature import CosignatureVerifier
from logserver.dashboard import add_dashboard
from logserver.errors import FormatError, OperationalError, UsageError, VerificationError
from logserver.network import NetworkConfig
from logserver.problems import ProblemError, install_handlers, problem, read_body
from logserver.protocol_log import ProtocolBatcher, protocol_config
from logserver.sequencer import Integrated, QueueFull, Sequencer
from logserver.storage import LogStore

log = logging.getLogger(__name__)

MAX_ENTRY_SIZE = 65_535  # an entry bundle prefixes each entry with a uint16 length
IMMUTABLE = "public, max-age=31536000, immutable"

EntryCheck = Callable[[bytes], None]


def accept_any(entry: bytes) -> None:
    """The ``--open`` policy: any entry of a valid size is logged."""


def accept_signed_notes(verifiers: list[note.Verifier]) -> EntryCheck:
    """Accept only entries that are signed notes carrying a signature by one of ``verifiers``."""

    def check(entry: bytes) -> None:
        note.open_note(entry, verifiers)

    return check


@dataclass
class LogConfig:
    data_dir: Path
    signer: note.Signer
    check_entry: EntryCheck = accept_any
    max_batch: int = 256
    max_delay: float = 0.002
    max_queue: int = 8192
    network: NetworkConfig | None = None  # with witnesses: publish only cosigned checkpoints
    extra_routes: list[Callable[[FastAPI, LogService], None]] = field(default_factory=list)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.appended = Counter("log_entries_appended", "Entries durably appended", registry=r)
        self.rejected = Counter(
            "log_entries_rejected", "Submissions refused", ["reason"], registry=r
        )
        self.batch_size = Histogram(
            "log_batch_size",
            "Entries per integrated batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.integration_seconds = Histogram(
            "log_integration_seconds", "Time to integrate one batch durably", registry=r
        )
        self.tree_size = Gauge("log_tree_size", "Entries in the log", registry=r)
        self.queue_depth = Gauge("log_queue_depth", "Submissions waiting", registry=r)
        self.published_size = Gauge(
            "log_published_size", "Size of the checkpoint clients are served", registry=r
        )
        self.cosignatures = Counter(
            "log_cosignatures_received", "Witness cosignatures accepted", registry=r
        )

    def on_integrated(self, done: Integrated) -> None:
        self.appended.inc(done.count)
        self.batch_size.observe(done.count)
        self.integration_seconds.observe(done.seconds)
        self.tree_size.set(done.first_index + done.count)


class LogService:
    """The log's state in one process: store, sequencer, signer and metrics."""

    def __init__(self, config: LogConfig) -> None:
        self.config = config
        self.origin = config.signer.name
        self.store = LogStore(config.data_dir, self.origin)
        self.metrics = Metrics()
        self.metrics.tree_size.set(self.store.size())
        self.protocol: ProtocolBatcher | None = None
        if config.network is not None and config.network.entries == "protocol":
            self.protocol = ProtocolBatcher(
                protocol_config(config.network), config.signer, self.store
            )
        self.sequencer = Sequencer(
            self.store,
            self._sign_checkpoint,
            max_batch=config.max_batch,
            max_delay=config.max_delay,
            max_queue=config.max_queue,
            batcher=self.protocol,
        )
        self.sequencer.add_listener(self.metrics.on_integrated)
        self.blobs = BlobStore(config.data_dir / "blobs")
        self.network = config.network
        self.witness_verifiers: dict[str, CosignatureVerifier] = {}
        self.builder_verifiers: dict[str, note.Verifier] = {}
        self.last_cosigned: dict[str, tuple[int, float]] = {}  # name -> (size, unix time)
        if self.network is not None:
            if self.network.log.vkey != config.signer.vkey:
                raise UsageError("the log's key is not the one the network config names")
            self.witness_verifiers = {
                w.name: CosignatureVerifier.from_vkey(w.vkey) for w in self.network.witnesses
            }
            self.builder_verifiers = {
                w.name: note.Verifier(w.name, w.public_key) for w in self.network.witnesses
            }

    def _sign_checkpoint(self, cp: Checkpoint) -> bytes:
        return note.sign_note(cp.to_bytes(), self.config.signer)

    def start(self) -> None:
        self.sequencer.start()

    def stop(self) -> None:
        self.sequencer.stop()
        self.store.close()

    def published_checkpoint(self) -> bytes | None:
        """The checkpoint clients should see: without witnesses the latest one the log signed;
        with witnesses the newest with a quorum of cosignatures, carrying all it has."""
        if self.network is None:
            return self.store.latest_checkpoint()
        size = self.store.published_size()
        signed = self.store.checkpoint_at(size) if size else None
        if signed is None:
            return None
        lines = self.store.cosignatures_at(size)
        return signed + b"".join(lines[name] for name in sorted(lines))

    def published_size(self) -> int:
        if self.network is not None:
            return self.store.published_size()
        return self.store.size()

    def check_blob_signature(self, name: str, header: str) -> None:
        """An upload must be signed by a builder of the network: ``<name> <base64 sig>``."""
        signer, _, encoded = header.partition(" ")
        verifier = self.builder_verifiers.get(signer)
        if verifier is None:
            raise ProblemError(403, "blob uploads need X-Blob-Signature by a network builder")
        try:
            signature = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise ProblemError(403, "X-Blob-Signature is not base64") from None
        if not verifier.verify(blobs.upload_message(name), signature):
            raise ProblemError(403, f"bad blob signature by {signer}")

    def add_cosignatures(self, cosigned: bytes) -> int:
        """Take witnesses' cosignatures on a checkpoint this log signed; return the published
        size. The body is the checkpoint text with one or more cosignature lines."""
        assert self.network is not None
        text, _ = note.split_note(cosigned)
        size = Checkpoint.parse(text).size
        ours = self.store.checkpoint_at(size)
        if ours is None or note.split_note(ours)[0] != text:
            raise ProblemError(409, f"the log signed no such checkpoint of size {size}")
        opened = note.open_note(cosigned, self.witness_verifiers.values())
        lines = {sig.name: sig.to_line() for sig in opened.sigs}
        quorum = self.network.quorum
        published: int = self.sequencer.call(
            lambda: self.store.add_cosignatures(size, lines, quorum)
        ).result(30)
        now = time.time()
        for name in lines:
            if self.last_cosigned.get(name, (-1, 0.0))[0] <= size:
                self.last_cosigned[name] = (size, now)
        self.metrics.published_size.set(published)
        return published


def _int_param(request: Request, name: str) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        raise ProblemError(400, f"the query parameter {name!r} is required")
    if not raw.isdigit() or len(raw) > 20 or (len(raw) > 1 and raw[0] == "0"):
        raise ProblemError(400, f"the query parameter {name!r} must be a decimal integer")
    return int(raw)


def _b64(hashes: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hashes]


def _json(obj: object, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(obj).encode(), media_type="application/json", headers=headers)


def create_app(service: LogService) -> FastAPI:
    app = FastAPI(title="Synchronicity log", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    metrics = service.metrics

    install_handlers(app)

    @app.exception_handler(FormatError)
    async def _format(_: Request, exc: FormatError) -> Response:
        return problem(400, str(exc))

    @app.exception_handler(UsageError)
    async def _usage(_: Request, exc: UsageError) -> Response:
        return problem(404, str(exc))

    @app.post("/add-entry")
    async def add_entry(request: Request) -> Response:
        entry = await read_body(request, MAX_ENTRY_SIZE)
        if not entry:
            raise ProblemError(400, "the entry is empty")
        try:
            service.config.check_entry(entry)
        except (FormatError, VerificationError) as e:
            metrics.rejected.labels("invalid").inc()
            raise ProblemError(403 if isinstance(e, VerificationError) else 400, str(e)) from e
        try:
            fut = service.sequencer.submit(entry)
        except QueueFull:
            metrics.rejected.labels("queue-full").inc()
            raise ProblemError(503, "the log is busy", {"Retry-After": "1"}) from None
        except OperationalError as e:
            raise ProblemError(503, str(e), {"Retry-After": "5"}) from e
        metrics.queue_depth.set(service.sequencer.queue_depth)
        try:
            index = await asyncio.wrap_future(fut)
        except OperationalError as e:
            raise ProblemError(503, str(e), {"Retry-After": "5"}) from e
        except ProtocolViolation as e:  # a well-formed entry the build protocol refuses
            metrics.rejected.labels("protocol").inc()
            raise ProblemError(409, str(e), {"X-Protocol-Rule": e.rule}) from e
        except FormatError as e:
            metrics.rejected.labels("invalid").inc()
            raise ProblemError(400, str(e)) from e
        except VerificationError as e:
            metrics.rejected.labels("invalid").inc()
            raise ProblemError(403, str(e)) from e
        return _json({"index": index})

    @app.get("/checkpoint")
    async def checkpoint() -> Response:
        cp = service.published_checkpoint()
        if cp is None:
            raise ProblemError(404, "the log is empty: no checkpoint has been signed yet")
        return Response(
            cp, media_type="text/plain; charset=utf-8", headers={"Cache-Control": "no-store"}
        )

    @app.get("/tile/{path:path}")
    async def tile(path: str) -> Response:
        t = tiles.parse_tile_path("tile/" + path)
        size = service.store.size()  # tiles are immutable: serve them before witnessing too
        present = tiles.tile_in_tree(t, size)
        if present is None or present.width < t.width:
            raise ProblemError(404, f"tile {path} is beyond the tree of size {size}")
        if t.is_entries:
            start = t.n * tiles.TILE_WIDTH
            data = tiles.encode_entry_bundle(service.store.entries(start, start + t.width))
        else:
            data = service.store.tile_data(t)
        cache = IMMUTABLE if t.width == tiles.TILE_WIDTH else "public, max-age=60"
        return Response(
            data, media_type="application/octet-stream", headers={"Cache-Control": cache}
        )

    @app.get("/latest-checkpoint")
    async def latest_checkpoint(request: Request) -> Response:
        """The newest checkpoint the log signed, witnessed or not. With ``after=N`` and
        ``wait_ms=M`` (at most 5000) it waits up to M ms for a tree larger than N."""
        after = _int_param(request, "after") if "after" in request.query_params else -1
        wait_ms = _int_param(request, "wait_ms") if "wait_ms" in request.query_params else 0
        deadline = asyncio.get_running_loop().time() + min(wait_ms, 5000) / 1000
        while service.store.size() <= after and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)
        cp = service.store.latest_checkpoint()
        if cp is None:
            raise ProblemError(404, "the log is empty: no checkpoint has been signed yet")
        return Response(
            cp, media_type="text/plain; charset=utf-8", headers={"Cache-Control": "no-store"}
        )

    @app.post("/cosignature")
    async def cosignature_(request: Request) -> Response:
        if service.network is None:
            raise ProblemError(404, "this log has no witnesses (start it with --network)")
        body = await read_body(request, MAX_ENTRY_SIZE)
        try:
            published = await asyncio.to_thread(service.add_cosignatures, body)
        except VerificationError as e:
            raise ProblemError(403, str(e)) from e
        metrics.cosignatures.inc()
        return _json({"published_size": published})

    @app.put("/blob/{name}")
    async def put_blob(name: str, request: Request) -> Response:
        blobs.check_name(name)
        if service.network is not None:
            service.check_blob_signature(name, request.headers.get("x-blob-signature", ""))
        data = await read_body(request, service.blobs.max_blob)
        try:
            created = await asyncio.to_thread(service.blobs.put, name, data)
        except VerificationError as e:
            raise ProblemError(400, str(e)) from e
        except OperationalError as e:
            raise ProblemError(507, str(e)) from e
        return Response(status_code=201 if created else 200)

    @app.get("/blob/{name}")
    async def get_blob(name: str) -> Response:
        data = await asyncio.to_thread(service.blobs.get, blobs.check_name(name))
        if data is None:
            raise ProblemError(404, f"no blob {name}")
        return Response(
            data, media_type="application/octet-stream", headers={"Cache-Control": IMMUTABLE}
        )

    @app.get("/witnesses")
    async def witnesses() -> Response:
        if service.network is None:
            return _json({"quorum": 0, "witnesses": []})
        rows = []
        for w in service.network.witnesses:
            size, at = service.last_cosigned.get(w.name, (0, 0.0))
            rows.append({"name": w.name, "url": w.url, "last_size": size, "last_time": at})
        return _json({"quorum": service.network.quorum, "witnesses": rows})

    @app.get("/proof/inclusion")
    async def inclusion(request: Request) -> Response:
        index, size = _int_param(request, "index"), _int_param(request, "size")
        hashes = service.store.inclusion_proof(index, size)
        return _json({"index": index, "size": size, "hashes": _b64(hashes)})

    @app.get("/proof/consistency")
    async def consistency(request: Request) -> Response:
        old, new = _int_param(request, "old"), _int_param(request, "new")
        hashes = service.store.consistency_proof(old, new)
        return _json({"old": old, "new": new, "hashes": _b64(hashes)})

    @app.get("/proof/tlog")
    async def tlog_proof(request: Request) -> Response:
        index = _int_param(request, "index")
        cp = service.published_checkpoint()
        size = service.published_size()
        if cp is None or index >= size:
            raise ProblemError(404, f"entry {index} is not covered by the published checkpoint")
        hashes = service.store.inclusion_proof(index, size)
        entry = service.store.entry(index)
        body = proof.TlogProof(index, tuple(hashes), cp, extra=entry).to_bytes()
        return Response(
            body,
            media_type="text/plain; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="entry-{index}.tlog-proof"'},
        )

    @app.get("/entry/{index}")
    async def entry(index: str) -> Response:
        if not index.isdigit() or len(index) > 20 or (len(index) > 1 and index[0] == "0"):
            raise ProblemError(400, "the entry index must be a decimal integer")
        i = int(index)
        if i >= service.store.size():
            raise ProblemError(404, f"entry {i} is not in the log")
        return Response(service.store.entry(i), media_type="application/octet-stream")

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        if not service.sequencer.healthy:
            raise ProblemError(503, "the sequencer is not running")
        return _json({"status": "ready", "size": service.store.size()})

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.queue_depth.set(service.sequencer.queue_depth)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    add_dashboard(app, service)
    for add_routes in service.config.extra_routes:
        add_routes(app, service)
    return app
