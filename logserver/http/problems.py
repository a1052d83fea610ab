"""RFC 9457 problem details: every error the servers return is ``application/problem+json``."""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from logserver.core.errors import FormatError
from logserver.core.note import parse_decimal

PROBLEM_JSON = "application/problem+json"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    507: "Insufficient Storage",
}


def problem(
    status: int, detail: str, *, headers: dict[str, str] | None = None, **extra: object
) -> Response:
    """A problem+json response whose ``detail`` says what is wrong in one sentence."""
    body: dict[str, object] = {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    body.update(extra)
    return Response(
        json.dumps(body, sort_keys=True).encode(),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


class ProblemError(Exception):
    """Raised by a handler to answer with a problem: status, one-sentence detail, headers."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


def install_handlers(app: FastAPI) -> None:
    """Make every error an app can raise, including routing errors, a problem+json answer."""

    @app.exception_handler(ProblemError)
    async def _problem(_: Request, exc: ProblemError) -> Response:
        return problem(exc.status, exc.detail, headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> Response:
        return problem(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        return problem(400, f"invalid request: {exc.errors()}")

    @app.exception_handler(ClientDisconnect)
    async def _gone(_: Request, exc: ClientDisconnect) -> Response:
        # The client left before sending its whole body: an everyday event on the internet,
        # not a server error (uvicorn would log a traceback); nobody reads this answer.
        return problem(400, "the client closed the connection before sending the whole body")


def check_content_length(request: Request, limit: int) -> None:
    """Refuse a ``Content-Length`` that is not a strict decimal (400: the grammar of every
    number in a request, ``note.parse_decimal``) or is larger than ``limit`` (413)."""
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        length = parse_decimal(declared, "Content-Length", 1 << 63)
    except FormatError:
        raise ProblemError(400, "Content-Length must be a decimal number of bytes") from None
    if length > limit:
        raise ProblemError(413, f"the body is larger than {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything larger than ``limit`` before reading it all."""
    check_content_length(request, limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ProblemError(413, f"the body is larger than {limit} bytes")
    return bytes(body)
