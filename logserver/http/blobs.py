"""``PUT /blob/<sha256>`` and ``GET /blob/<sha256>``: the log's content-addressed blob store.

Manifests, artifacts, build logs and diff reports live here, named by their SHA-256. An upload
must carry ``X-Blob-Signature`` by a builder of the network (a log with ``--network``) or by
one of the keys of ``--accept``; an ``--open`` log takes no uploads (403), since no builder
needs them. An upload answers 201 when new and 200 when the blob was already there; a blob
whose hash is not its name is a 400 and a full store a 507 (``errors.BLOB_UPLOAD``).
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from starlette.responses import Response

from logserver.http.errors import BLOB_UPLOAD, answering
from logserver.http.problems import read_body
from logserver.http.service import LogService
from logserver.http.wire import IMMUTABLE, OCTETS


def add_routes(app: FastAPI, service: LogService) -> None:
    """Register the blob routes on ``app``."""

    @app.put("/blob/{name}")
    async def put_blob(name: str, request: Request) -> Response:
        service.check_upload(name, request.headers.get("x-blob-signature", ""))
        data = await read_body(request, service.blobs.max_blob)
        with answering(BLOB_UPLOAD):
            created = await asyncio.to_thread(service.blobs.put, name, data)
        return Response(status_code=201 if created else 200)

    @app.get("/blob/{name}")
    async def get_blob(name: str) -> Response:
        data = await asyncio.to_thread(service.blob, name)
        return Response(data, media_type=OCTETS, headers={"Cache-Control": IMMUTABLE})
