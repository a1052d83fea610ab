"""``POST /add-checkpoint`` (c2sp.org/tlog-witness) over FastAPI, mountable on any app.

:class:`AddCheckpointHandler` ties the pure rules (witness/cosign/rules.py) to the durable
store (witness/cosign/store.py) and the clock; :func:`add_routes` mounts the endpoint on an
existing FastAPI app (the witness node's), :func:`create_app` makes a standalone one
(``synchronicity witness add-checkpoint``).

Responses: 200 ``text/plain; charset=utf-8`` with one cosignature line per witness key; 409
for a stale ``old`` with exactly ``Content-Type: text/x.tlog.size`` and ``<size>\\n`` as the
body (the spec fixes both); every other refusal (400, 403, 404, 409 for a second root at one
size, 413 for a body over the limit, 422) is RFC 9457 ``application/problem+json``. The body is
read with a size limit (413 from ``Content-Length`` before reading). The store's write
transaction runs on one dedicated thread; the cosignature is made only after it committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from logserver.core.cosignature import CosignatureSigner
from logserver.core.errors import OperationalError, UsageError
from logserver.http.problems import ProblemError, problem, read_body
from witness.cosign.rules import (
    MAX_REQUEST_BYTES,
    SIZE_CONTENT_TYPE,
    Accepted,
    Decision,
    Rejected,
    Status,
    Submission,
    WitnessedLogs,
    cosignature_lines,
    decide,
    prepare,
)
from witness.cosign.store import CosignStore

log = logging.getLogger(__name__)

COSIGNATURE_CONTENT_TYPE = "text/plain; charset=utf-8"


class AddCheckpointHandler:
    """The add-checkpoint service of one witness: configured logs, keys, store and clock."""

    def __init__(
        self,
        logs: WitnessedLogs,
        signers: Sequence[CosignatureSigner],
        store: CosignStore,
        clock: Callable[[], float] = time.time,
        max_body: int = MAX_REQUEST_BYTES,
    ) -> None:
        if not signers:
            raise UsageError("a witness needs at least one cosignature key")
        self.logs = logs
        self.signers = tuple(signers)
        self.store = store
        self.clock = clock
        self.max_body = max_body
        # LMDB write transactions belong to one thread.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="witness-state")

    def prepare(self, body: bytes) -> Submission | Rejected:
        return prepare(body, self.logs)

    def commit(self, submission: Submission) -> Decision:
        """Check against the stored head and persist the new one, in one durable transaction."""
        decision = self.store.check_and_persist(
            submission.origin, lambda stored: decide(submission, stored)
        )
        if isinstance(decision, Rejected) and decision.status in (
            Status.CONFLICT,
            Status.UNPROCESSABLE,
        ):
            # The spec allows keeping such requests: they may prove that the log misbehaved.
            log.warning(
                "add-checkpoint refused for %s (old %d, size %d): %s",
                submission.origin,
                submission.old_size,
                submission.checkpoint.size,
                decision.detail,
            )
        return decision

    async def commit_on_writer(self, submission: Submission) -> Decision:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self.commit, submission)

    def cosign(self, accepted: Accepted) -> bytes:
        """The 200 body; call only once ``accepted.new_head`` is durable."""
        return cosignature_lines(
            accepted.submission.checkpoint_text, self.signers, int(self.clock())
        )

    def process(self, body: bytes) -> tuple[Decision, bytes]:
        """The whole request on the calling thread: (decision, 200 body or b"")."""
        prepared = self.prepare(body)
        if isinstance(prepared, Rejected):
            return prepared, b""
        decision = self._writer.submit(self.commit, prepared).result()
        if isinstance(decision, Rejected):
            return decision, b""
        return decision, self.cosign(decision)

    def close(self) -> None:
        """Stop the writer thread and close the store (once nothing else uses it)."""
        self._writer.shutdown(wait=True)
        self.store.close()


def rejection_response(rejected: Rejected) -> Response:
    """A refusal as HTTP: the spec's size body for a stale ``old``, problem+json otherwise."""
    if rejected.known_size is not None:
        # Set the header by hand: Starlette would append "; charset=utf-8" to a text/ type.
        return Response(
            rejected.size_body(),
            status_code=int(rejected.status),
            headers={"content-type": SIZE_CONTENT_TYPE},
        )
    return problem(int(rejected.status), rejected.detail)


def add_routes(app: FastAPI, handler: AddCheckpointHandler, prefix: str = "") -> None:
    """Mount ``POST <prefix>/add-checkpoint`` on ``app``."""

    async def add_checkpoint(request: Request) -> Response:
        try:
            body = await read_body(request, handler.max_body)
        except ProblemError as refused:  # a malformed or too large Content-Length or body
            return problem(refused.status, refused.detail)
        prepared = handler.prepare(body)
        if isinstance(prepared, Rejected):
            return rejection_response(prepared)
        try:
            decision = await handler.commit_on_writer(prepared)
        except OperationalError as exc:
            log.error("witness state failure", extra={"error": str(exc)})
            return problem(500, "the witness could not read or persist its state")
        if isinstance(decision, Rejected):
            return rejection_response(decision)
        return Response(
            handler.cosign(decision),
            status_code=200,
            headers={"content-type": COSIGNATURE_CONTENT_TYPE},
        )

    app.add_api_route(
        f"{prefix}/add-checkpoint",
        add_checkpoint,
        methods=["POST"],
        include_in_schema=False,
        response_class=Response,
    )


def create_app(handler: AddCheckpointHandler) -> FastAPI:
    """A standalone witness app serving only add-checkpoint (tests, small deployments)."""
    app = FastAPI(title="Synchronicity witness", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        return problem(exc.status_code, str(exc.detail))

    add_routes(app, handler)
    return app
