"""Reading requests and writing responses: the small helpers the log's route modules share.

Numbers in paths and query strings are strict decimal: digits only, no leading zero, at most
20 digits. Everything a route cannot parse is a 400 problem naming what is wrong.
"""

from __future__ import annotations

import json

from fastapi import Request
from starlette.responses import Response

from logserver.http.problems import ProblemError

IMMUTABLE = "public, max-age=31536000, immutable"
TEXT = "text/plain; charset=utf-8"
OCTETS = "application/octet-stream"


def decimal(raw: str) -> int | None:
    """``raw`` as a strict non-negative decimal integer, or None if it is not one."""
    if not raw.isdigit() or len(raw) > 20 or (len(raw) > 1 and raw[0] == "0"):
        return None
    return int(raw)


def int_param(request: Request, name: str) -> int:
    """The required query parameter ``name``, a strict decimal integer (else 400)."""
    raw = request.query_params.get(name)
    if raw is None:
        raise ProblemError(400, f"the query parameter {name!r} is required")
    value = decimal(raw)
    if value is None:
        raise ProblemError(400, f"the query parameter {name!r} must be a decimal integer")
    return value


def optional_int_param(request: Request, name: str, default: int) -> int:
    """The query parameter ``name`` like ``int_param``, or ``default`` when it is absent."""
    return int_param(request, name) if name in request.query_params else default


def json_response(obj: object) -> Response:
    """``obj`` as an ``application/json`` body."""
    return Response(json.dumps(obj).encode(), media_type="application/json")


def checkpoint_response(cp: bytes | None) -> Response:
    """A signed checkpoint as text that must not be cached; 404 while there is none."""
    if cp is None:
        raise ProblemError(404, "the log is empty: no checkpoint has been signed yet")
    return Response(cp, media_type=TEXT, headers={"Cache-Control": "no-store"})
