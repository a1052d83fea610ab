"""Operations: ``GET /healthz`` (the process answers), ``/readyz`` (the sequencer runs) and
``/metrics`` (Prometheus text, served by a plain route: a mounted sub-app would redirect)."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from logserver.http.problems import ProblemError
from logserver.http.service import LogService
from logserver.http.wire import json_response


def add_routes(app: FastAPI, service: LogService) -> None:
    """Register the health and metrics routes on ``app``."""

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        if not service.sequencer.healthy:
            raise ProblemError(503, "the sequencer is not running")
        return json_response({"status": "ready", "size": service.store.size()})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.prometheus(), media_type=CONTENT_TYPE_LATEST)
