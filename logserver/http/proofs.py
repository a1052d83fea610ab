"""Proofs: ``GET /proof/inclusion``, ``/proof/consistency`` (JSON) and ``/proof/tlog`` (a file).

The JSON proofs list base64 hashes for the sizes asked for; ``/proof/tlog`` is a C2SP
tlog-proof file for one entry under the published checkpoint, ready to verify offline.
"""

from __future__ import annotations

import base64

from fastapi import FastAPI, Request
from starlette.responses import Response

from logserver.http.service import LogService
from logserver.http.wire import TEXT, int_param, json_response


def _b64(hashes: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hashes]


def add_routes(app: FastAPI, service: LogService) -> None:
    """Register the proof routes on ``app``."""

    @app.get("/proof/inclusion")
    async def inclusion(request: Request) -> Response:
        index, size = int_param(request, "index"), int_param(request, "size")
        hashes = service.store.inclusion_proof(index, size)
        return json_response({"index": index, "size": size, "hashes": _b64(hashes)})

    @app.get("/proof/consistency")
    async def consistency(request: Request) -> Response:
        old, new = int_param(request, "old"), int_param(request, "new")
        hashes = service.store.consistency_proof(old, new)
        return json_response({"old": old, "new": new, "hashes": _b64(hashes)})

    @app.get("/proof/tlog")
    async def tlog_proof(request: Request) -> Response:
        index = int_param(request, "index")
        return Response(
            service.tlog_proof(index),
            media_type=TEXT,
            headers={"Content-Disposition": f'attachment; filename="entry-{index}.tlog-proof"'},
        )
