"""RFC 9457 problem details: every error the servers return is ``application/problem+json``."""

from __future__ import annotations

import json

from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"

_TITLES = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
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
