"""The C2SP tlog-tiles read path: ``GET /checkpoint``, ``/latest-checkpoint`` and ``/tile/...``.

``/checkpoint`` is the checkpoint clients should trust (with witnesses: the newest with a
quorum of cosignatures) and is never cached (``no-store``); ``/latest-checkpoint`` is the newest
the log signed, for witnesses and mirrors, and can wait for the tree to grow
(``?after=N&wait_ms=M``): the sequencer wakes the waiters (``logserver.http.growth``).

Tiles never change once served, partial ones included: a tile path names its width, and the
first W hashes (or entries) of a tile are fixed forever once the tree holds them (c2sp.org/
tlog-tiles). So every tile is ``Cache-Control: public, max-age=31536000, immutable``, and caches
in front of the log carry the read load. Entry bundles, which compress well, are sent gzipped
to clients that accept it (``Content-Encoding: gzip``, and ``Vary: Accept-Encoding`` on both
forms so that a cache keeps them apart); hash tiles are random bytes and go as they are.
"""

from __future__ import annotations

import asyncio
import gzip

from fastapi import FastAPI, Request
from starlette.responses import Response

from logserver.http.growth import TreeGrowth
from logserver.http.service import LogService
from logserver.http.wire import (
    IMMUTABLE,
    OCTETS,
    accepts_gzip,
    checkpoint_response,
    optional_int_param,
)

GZIP_LEVEL = 6
INLINE_GZIP_BYTES = 64 << 10  # larger bundles are compressed off the event loop


async def gzipped(data: bytes) -> bytes:
    """``data`` as a gzip member with no timestamp, so a bundle always compresses the same."""
    if len(data) <= INLINE_GZIP_BYTES:
        return gzip.compress(data, GZIP_LEVEL, mtime=0)
    return await asyncio.to_thread(gzip.compress, data, GZIP_LEVEL, mtime=0)


def add_routes(app: FastAPI, service: LogService) -> None:
    """Register the checkpoint and tile routes on ``app``."""
    growth = TreeGrowth(service.store.size, service.config.max_waiters)
    service.sequencer.add_listener(growth.on_integrated)

    @app.get("/checkpoint")
    async def checkpoint() -> Response:
        return checkpoint_response(service.published_checkpoint())

    @app.get("/tile/{path:path}")
    async def tile(path: str, request: Request) -> Response:
        data, _ = service.tile(path)  # full or partial: immutable either way
        headers = {"Cache-Control": IMMUTABLE}
        if path.startswith("entries/"):  # an entry bundle (service.tile checked the path)
            headers["Vary"] = "Accept-Encoding"
            if accepts_gzip(request.headers.get("accept-encoding", "")):
                data = await gzipped(data)
                headers["Content-Encoding"] = "gzip"
        return Response(data, media_type=OCTETS, headers=headers)

    @app.get("/latest-checkpoint")
    async def latest_checkpoint(request: Request) -> Response:
        """The newest checkpoint the log signed, witnessed or not. With ``after=N`` and
        ``wait_ms=M`` (at most 5000) it waits up to M ms for a tree larger than N."""
        after = optional_int_param(request, "after", -1)
        wait_ms = optional_int_param(request, "wait_ms", 0)
        await growth.wait_beyond(after, wait_ms)
        return checkpoint_response(service.store.latest_checkpoint())
