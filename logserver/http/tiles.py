"""The C2SP tlog-tiles read path: ``GET /checkpoint``, ``/latest-checkpoint`` and ``/tile/...``.

``/checkpoint`` is the checkpoint clients should trust (with witnesses: the newest with a
quorum of cosignatures); ``/latest-checkpoint`` is the newest the log signed, for witnesses
and mirrors, and can wait for the tree to grow (``?after=N&wait_ms=M``). Full tiles are
cached forever, partial ones for a minute.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

from logserver.http.service import LogService
from logserver.http.wire import IMMUTABLE, OCTETS, checkpoint_response, optional_int_param


def add_routes(app: FastAPI, service: LogService) -> None:
    """Register the checkpoint and tile routes on ``app``."""

    @app.get("/checkpoint")
    async def checkpoint() -> Response:
        return checkpoint_response(service.published_checkpoint())

    @app.get("/tile/{path:path}")
    async def tile(path: str) -> Response:
        data, full = service.tile(path)
        cache = IMMUTABLE if full else "public, max-age=60"
        return Response(data, media_type=OCTETS, headers={"Cache-Control": cache})

    @app.get("/latest-checkpoint")
    async def latest_checkpoint(request: Request) -> Response:
        """The newest checkpoint the log signed, witnessed or not. With ``after=N`` and
        ``wait_ms=M`` (at most 5000) it waits up to M ms for a tree larger than N."""
        after = optional_int_param(request, "after", -1)
        wait_ms = optional_int_param(request, "wait_ms", 0)
        return checkpoint_response(await service.latest_checkpoint(after, wait_ms))
