"""``POST /add-entry`` and ``GET /entry/<index>``: submitting entries and reading one back.

``/add-entry`` answers ``{"index": N}`` once the entry is durable; a refusal is a problem
whose status says why (``logserver.http.errors``): 400 malformed, 403 not accepted by the
log's policy, 409 against a rule of the build protocol, 503 busy or failing.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

from logserver.http.problems import ProblemError, read_body
from logserver.http.service import MAX_ENTRY_SIZE, LogService
from logserver.http.wire import OCTETS, decimal, json_response


def add_routes(app: FastAPI, service: LogService) -> None:
    """Register the entry routes on ``app``."""

    @app.post("/add-entry")
    async def add_entry(request: Request) -> Response:
        entry = await read_body(request, MAX_ENTRY_SIZE)
        if not entry:
            raise ProblemError(400, "the entry is empty")
        return json_response({"index": await service.add_entry(entry)})

    @app.get("/entry/{index}")
    async def entry(index: str) -> Response:
        i = decimal(index)
        if i is None:
            raise ProblemError(400, "the entry index must be a decimal integer")
        return Response(service.entry(i), media_type=OCTETS)
