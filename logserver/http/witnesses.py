"""The log's side of witnessing: ``POST /cosignature`` and ``GET /witnesses``.

Witnesses send back the checkpoint the log signed with their cosignature lines; once a quorum
has cosigned a checkpoint, it is the one ``/checkpoint`` serves. ``/witnesses`` reports each
witness's last cosigned size and time. A log started without ``--network`` has no witnesses.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from starlette.responses import Response

from logserver.http.problems import ProblemError, read_body
from logserver.http.service import MAX_ENTRY_SIZE, LogService
from logserver.http.wire import json_response


def add_routes(app: FastAPI, service: LogService) -> None:
    """Register the witnessing routes on ``app``."""

    @app.post("/cosignature")
    async def cosignature(request: Request) -> Response:
        if service.network is None:
            raise ProblemError(404, "this log has no witnesses (start it with --network)")
        body = await read_body(request, MAX_ENTRY_SIZE)
        published = await asyncio.to_thread(service.add_cosignatures, body)
        return json_response({"published_size": published})

    @app.get("/witnesses")
    async def witnesses() -> Response:
        return json_response(service.witness_health())
