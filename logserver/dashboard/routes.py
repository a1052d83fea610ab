"""The log's dashboard: server-rendered HTML pages over the log, its builds and its witnesses.

``add_dashboard(app, service)`` registers ``/`` (overview), ``/builds`` (``?page=``, ``?q=``),
``/build/<job id>``, ``/coverage`` (``?page=``, ``?q=``) and ``/checkpoints`` (``?before=``). The
build pages (builds, build, coverage) exist only on a log that runs the build protocol
(``--network`` with ``"entries": "protocol"``), whose sequencer checked every leaf against its
rules; on any other log anyone may append leaves that look like builds, so there they answer 404
and the overview shows no builds. No
page scans the log: build lists
come from a :class:`~logserver.dashboard.index.BuildIndex` filled once at start-up from LMDB,
by a background thread, and kept level by a sequencer listener; a build page reads only its
job's leaves, a checkpoint page only the checkpoints it shows. HTML comes from the pure
:mod:`logserver.dashboard.pages` and :mod:`logserver.dashboard.build`.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from starlette.responses import HTMLResponse

from logserver.core.checkpoint import Checkpoint
from logserver.core.cosignature import COSIGNATURE_SIZE, cosignature_timestamp
from logserver.core.errors import FormatError
from logserver.core.note import NoteSignature, split_note
from logserver.dashboard.build import render_build
from logserver.dashboard.coverage_page import render_coverage
from logserver.dashboard.index import MAX_QUERY_CHARS, IndexFollower
from logserver.dashboard.pages import (
    NO_PROTOCOL,
    PAGE_SIZE,
    CheckpointRow,
    Overview,
    SignatureRow,
    WitnessRow,
    error_page,
    index_notice,
    render_builds,
    render_checkpoints,
    render_overview,
    witness_status,
)
from logserver.http.wire import decimal
from logserver.protocol.signed import Leaf

if TYPE_CHECKING:  # logserver/http/app.py imports this module to register the pages
    from logserver.http.service import LogService

MAX_JOB_LEAVES = 1000  # a build page shows at most this many of a job's leaves
MAX_PAGE = 1_000_000
LATEST_VERDICTS = 10
_JOB_ID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Dashboard:
    """What ``add_dashboard`` keeps on ``app.state.dashboard`` (no follower: no builds)."""

    follower: IndexFollower | None


def runs_protocol(service: LogService) -> bool:
    """Whether the log's leaves were checked by the build protocol's rules on the way in:
    only then are its builds and verdicts shown."""
    return service.network is not None and service.network.entries == "protocol"


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status, headers={"Cache-Control": "no-cache"})


def _cosignature_time(sig: NoteSignature) -> int | None:
    if len(sig.signature) != COSIGNATURE_SIZE:
        return None
    try:
        return cosignature_timestamp(sig.signature)
    except FormatError:
        return None


def _decimal(request: Request, name: str, default: int, low: int, high: int) -> int | None:
    """A query parameter in low..high, the default when absent, None when malformed."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = decimal(raw, high + 1)  # the strict grammar of every number in a request
    return value if value is not None and low <= value else None


def overview_of(service: LogService, follower: IndexFollower | None, now: float) -> Overview:
    """Everything the overview page shows, read from the service without scanning the log
    (builds only with a ``follower``: a log that runs the build protocol)."""
    store, network = service.store, service.network
    tree_size = store.size()
    witness_names = {w.name for w in network.witnesses} if network else set()
    published_size, root, signatures = 0, "", []
    published = service.published_checkpoint()
    if published is not None:
        text, sigs = split_note(published)
        cp = Checkpoint.parse(text)
        published_size, root = cp.size, base64.b64encode(cp.root_hash).decode()
        for sig in sigs:
            role = "log" if sig.name == service.origin else "unknown"
            if sig.name in witness_names:
                role = "witness"
            stamp = _cosignature_time(sig) if role == "witness" else None
            signatures.append(SignatureRow(sig.name, sig.key_id, role, stamp))
    on_published = {s.name: s.timestamp for s in signatures if s.role == "witness"}
    witnesses = []
    for w in network.witnesses if network else ():
        last = service.last_cosigned.get(w.name)
        if last is None and on_published.get(w.name) is not None:
            last = (published_size, float(on_published[w.name] or 0))
        size, at = last if last is not None else (0, None)
        status = witness_status(size, at, tree_size, now)
        witnesses.append(WitnessRow(w.name, w.url, size, at, max(tree_size - size, 0), status))
    if follower is None:
        return Overview(
            origin=service.origin,
            tree_size=tree_size,
            indexed_size=0,
            index_failure=None,
            published_size=published_size,
            published_root=root,
            signatures=tuple(signatures),
            quorum=network.quorum if network else 0,
            witnesses=tuple(witnesses),
            counts={},
            latest=(),
            builds=False,
        )
    index = follower.index
    return Overview(
        origin=service.origin,
        tree_size=tree_size,
        indexed_size=index.size,
        index_failure=follower.failure,
        published_size=published_size,
        published_root=root,
        signatures=tuple(signatures),
        quorum=network.quorum if network else 0,
        witnesses=tuple(witnesses),
        counts=index.counts(),
        latest=index.latest_verdicts(LATEST_VERDICTS),
    )


def checkpoint_rows(service: LogService, sizes: list[int]) -> list[CheckpointRow]:
    quorum = service.network.quorum if service.network else 0
    rows = []
    for size in sizes:
        signed = service.store.checkpoint_at(size)
        if signed is None:
            continue
        lines = service.store.cosignatures_at(size)
        text, sigs = split_note(signed + b"".join(lines[name] for name in sorted(lines)))
        stamps = [t for t in (_cosignature_time(s) for s in sigs if s.name in lines) if t]
        rows.append(
            CheckpointRow(
                size=size,
                root=base64.b64encode(Checkpoint.parse(text).root_hash).decode(),
                cosigners=tuple(sorted(lines)),
                first_cosigned=min(stamps) if stamps else None,
                published=None if quorum == 0 else len(lines) >= quorum,
            )
        )
    return rows


def add_dashboard(app: FastAPI, service: LogService) -> None:
    """Register the dashboard's pages and start its index (kept on ``app.state.dashboard``).

    Fits ``LogConfig.extra_routes``; a second call on the same app changes nothing.
    """
    if getattr(app.state, "dashboard", None) is not None:
        return
    origin = service.origin
    if not runs_protocol(service):
        app.state.dashboard = Dashboard(None)
        _add_log_pages(app, service, None)
        _add_no_builds(app, origin)
        return
    follower = IndexFollower(service.store)
    service.sequencer.add_listener(follower.on_integrated)
    follower.start()
    app.state.dashboard = Dashboard(follower)
    _add_log_pages(app, service, follower)
    _add_build_pages(app, service, follower)


def _add_no_builds(app: FastAPI, origin: str) -> None:
    """``/builds``, ``/build/<id>`` and ``/coverage`` of a log that does not run the build
    protocol: 404."""

    def no_builds() -> HTMLResponse:
        return _html(error_page(origin, "No builds", NO_PROTOCOL, builds=False), 404)

    @app.get("/builds", include_in_schema=False)
    async def builds() -> HTMLResponse:
        return no_builds()

    @app.get("/build/{job_id}", include_in_schema=False)
    async def build(job_id: str) -> HTMLResponse:
        return no_builds()

    @app.get("/coverage", include_in_schema=False)
    async def coverage() -> HTMLResponse:
        return no_builds()


def _add_log_pages(app: FastAPI, service: LogService, follower: IndexFollower | None) -> None:
    """The overview and the checkpoint history: every log has them."""
    origin, builds = service.origin, follower is not None

    @app.get("/", include_in_schema=False)
    async def overview() -> HTMLResponse:
        return _html(render_overview(overview_of(service, follower, time.time())))

    @app.get("/checkpoints", include_in_schema=False)
    async def checkpoints(request: Request) -> HTMLResponse:
        before = _decimal(request, "before", 0, 1, 1 << 53)
        if before is None:
            page = error_page(origin, "Bad request", "before must be a tree size", builds=builds)
            return _html(page, 400)
        sizes = service.store.checkpoint_sizes(PAGE_SIZE + 1, before or None)
        rows = checkpoint_rows(service, sizes[:PAGE_SIZE])
        next_before = sizes[PAGE_SIZE - 1] if len(sizes) > PAGE_SIZE else None
        return _html(render_checkpoints(origin, rows, before or None, next_before, builds=builds))


def _add_build_pages(app: FastAPI, service: LogService, follower: IndexFollower) -> None:
    """The builds list and each build's page, from the index of a protocol log's leaves."""
    index, origin = follower.index, service.origin

    def bad_request(message: str) -> HTMLResponse:
        return _html(error_page(origin, "Bad request", message), 400)

    @app.get("/builds", include_in_schema=False)
    async def builds(request: Request) -> HTMLResponse:
        page = _decimal(request, "page", 1, 1, MAX_PAGE)
        if page is None:
            return bad_request(f"page must be a whole number from 1 to {MAX_PAGE}")
        query = request.query_params.get("q", "")[:MAX_QUERY_CHARS]
        found = index.jobs_page((page - 1) * PAGE_SIZE, PAGE_SIZE, query)
        notice = index_notice(service.store.size(), index.size, follower.failure)
        return _html(render_builds(origin, found.jobs, found.total, page, query, notice))

    @app.get("/build/{job_id}", include_in_schema=False)
    async def build(job_id: str) -> HTMLResponse:
        summary = index.job(job_id) if _JOB_ID.fullmatch(job_id) else None
        if summary is None:
            message = "No build with this job id is in the log (or it is not indexed yet)."
            return _html(error_page(origin, "Unknown build", message), 404)
        leaves = [
            (i, Leaf.parse(service.store.entry(i)))
            for i in index.entry_indexes(job_id)[:MAX_JOB_LEAVES]
        ]
        body = render_build(origin, summary, leaves, service.published_size())
        return _html(body)

    @app.get("/coverage", include_in_schema=False)
    async def coverage(request: Request) -> HTMLResponse:
        page = _decimal(request, "page", 1, 1, MAX_PAGE)
        if page is None:
            return bad_request(f"page must be a whole number from 1 to {MAX_PAGE}")
        query = request.query_params.get("q", "")[:MAX_QUERY_CHARS]
        found = index.crates_page((page - 1) * PAGE_SIZE, PAGE_SIZE, query)
        notice = index_notice(service.store.size(), index.size, follower.failure)
        body = render_coverage(
            origin, index.coverage(), found.crates, found.total, page, query, notice
        )
        return _html(body)
