"""Reading requests and writing responses: the small helpers the log's route modules share.

Every number a request carries (path segments, query parameters, ``Content-Length``) of the
log, its dashboard and the witness is read with ``decimal``: ASCII digits only, no sign, no
leading zero, below a bound (so a bounded length). ``str.isdigit`` is not enough: it takes
``"²"``, which ``int`` refuses. Everything a route cannot parse is a 400 problem naming what is
wrong.
"""

from __future__ import annotations

import json
import re

from fastapi import Request
from starlette.responses import Response

from logserver.core.checkpoint import MAX_TREE_SIZE
from logserver.core.errors import FormatError
from logserver.core.note import parse_decimal
from logserver.http.problems import ProblemError

IMMUTABLE = "public, max-age=31536000, immutable"
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")  # RFC 9110 §12.4.2
TEXT = "text/plain; charset=utf-8"
OCTETS = "application/octet-stream"


def decimal(raw: str, limit: int = MAX_TREE_SIZE) -> int | None:
    """``raw`` as a strict decimal number in ``0..limit-1``, or None if it is not one.

    The grammar is the checkpoint's (``note.parse_decimal``): ASCII digits, no sign, no
    leading zero, at most as many digits as ``limit`` has. Tree sizes and indexes are below
    2^63 (``MAX_TREE_SIZE``), the default bound.
    """
    try:
        return parse_decimal(raw, "number", limit)
    except FormatError:
        return None


def int_param(request: Request, name: str, limit: int = MAX_TREE_SIZE) -> int:
    """The required query parameter ``name``, a strict decimal below ``limit`` (else 400)."""
    raw = request.query_params.get(name)
    if raw is None:
        raise ProblemError(400, f"the query parameter {name!r} is required")
    value = decimal(raw, limit)
    if value is None:
        raise ProblemError(
            400,
            f"the query parameter {name!r} must be a decimal number below {limit}, "
            "in ASCII digits without a leading zero",
        )
    return value


def optional_int_param(
    request: Request, name: str, default: int, limit: int = MAX_TREE_SIZE
) -> int:
    """The query parameter ``name`` like ``int_param``, or ``default`` when it is absent."""
    return int_param(request, name, limit) if name in request.query_params else default


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header (RFC 9110 §12.5.3) lets us answer with gzip:
    ``gzip`` (or ``x-gzip``, or ``*`` when gzip is not named) with a weight above 0. A member
    whose weight does not parse counts as refused."""
    weights: dict[str, bool] = {}
    for member in accept_encoding.split(","):
        coding, *params = (part.strip() for part in member.split(";"))
        if not coding:
            continue
        acceptable = True
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                weight = value.strip()
                acceptable = _QVALUE.fullmatch(weight) is not None and float(weight) > 0
        weights[coding.lower()] = acceptable
    for coding in ("gzip", "x-gzip"):
        if coding in weights:
            return weights[coding]
    return weights.get("*", False)


def json_response(obj: object) -> Response:
    """``obj`` as an ``application/json`` body."""
    return Response(json.dumps(obj).encode(), media_type="application/json")


def checkpoint_response(cp: bytes | None) -> Response:
    """A signed checkpoint as text that must not be cached; 404 while there is none."""
    if cp is None:
        raise ProblemError(404, "the log is empty: no checkpoint has been signed yet")
    return Response(cp, media_type=TEXT, headers={"Cache-Control": "no-store"})
