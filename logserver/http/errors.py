"""The one table from error to HTTP answer, shared by the log's routes and the witness node's.

Routes raise the project's exceptions (``logserver.core.errors`` and their subclasses) and
never pick a status themselves; ``install_error_handlers`` answers each with its row of
``ANSWERS``, looked up along the exception's class hierarchy (the most specific row wins)::

    ProtocolViolation   409  X-Protocol-Rule: <rule>   a well-formed entry the protocol refuses
    VerificationError   403                            a signature or proof that does not check
    FormatError         400                            bytes that do not parse
    UsageError          404                            asking for what is not there
    QueueFull           503  Retry-After: 1            "the log is busy"
    StorageFull         507                            the log's map or disk is full (reads go on)
    OperationalError    503  Retry-After: 5            the server's environment failed

An endpoint that answers some errors differently says so where it calls the code that raises
them, with ``answering(table)``: for example ``PUT /blob`` answers a blob whose hash is not
its name with 400 and a full blob store with 507 (``BLOB_UPLOAD``). Every answer is an RFC
9457 problem (``logserver.http.problems``) whose ``detail`` is the error's message.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType

from fastapi import FastAPI, Request
from starlette.responses import Response

from logserver.core.errors import FormatError, OperationalError, UsageError, VerificationError
from logserver.http.problems import ProblemError, install_handlers, problem
from logserver.protocol.rules import ProtocolViolation
from logserver.sequencer import QueueFull
from logserver.storage import StorageFull


@dataclass(frozen=True)
class Answer:
    """How one class of error is answered: a status and what the client needs to act on it.

    ``retry_after`` sets the Retry-After header (seconds); ``detail`` replaces the error's own
    message; ``names_rule`` sets X-Protocol-Rule to the rule a ``ProtocolViolation`` broke.
    """

    status: int
    retry_after: int | None = None
    detail: str | None = None
    names_rule: bool = False

    def to_problem(self, exc: Exception) -> ProblemError:
        """The problem that answers ``exc``."""
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        if self.names_rule and isinstance(exc, ProtocolViolation):
            headers["X-Protocol-Rule"] = exc.rule
        return ProblemError(self.status, self.detail or str(exc), headers or None)


ErrorTable = Mapping[type[Exception], Answer]

ANSWERS: ErrorTable = MappingProxyType(
    {
        ProtocolViolation: Answer(409, names_rule=True),
        VerificationError: Answer(403),
        FormatError: Answer(400),
        UsageError: Answer(404),
        QueueFull: Answer(503, retry_after=1, detail="the log is busy"),
        StorageFull: Answer(507),
        OperationalError: Answer(503, retry_after=5),
    }
)
"""The answer to each error any route may raise."""

BLOB_UPLOAD: ErrorTable = MappingProxyType(
    {
        VerificationError: Answer(400),  # the blob's SHA-256 is not its name
        OperationalError: Answer(507),  # the blob store is full
    }
)
"""``PUT /blob/<name>``'s answers to what the blob store raises."""


def answers(*classes: type[Exception]) -> dict[type[Exception], Answer]:
    """The rows of ``ANSWERS`` for ``classes``: a table for ``answering`` to extend."""
    return {cls: ANSWERS[cls] for cls in classes}


def answer_for(exc: Exception, table: ErrorTable = ANSWERS) -> Answer | None:
    """The row of ``table`` for the most specific class of ``exc`` it has, if any."""
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    return None


@contextmanager
def answering(table: ErrorTable) -> Iterator[None]:
    """Answer the errors of ``table`` raised in the block with its rows; others pass on."""
    try:
        yield
    except Exception as exc:
        answer = answer_for(exc, table)
        if answer is None:
            raise
        raise answer.to_problem(exc) from exc


async def _answer(_: Request, exc: Exception) -> Response:
    answer = answer_for(exc)
    assert answer is not None  # registered only for the classes of ANSWERS
    answered = answer.to_problem(exc)
    return problem(answered.status, answered.detail, headers=answered.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error a route of ``app`` raises as a problem: ``ANSWERS``' errors with
    their rows, a ``ProblemError`` as it says, and routing and validation errors as such."""
    install_handlers(app)
    for cls in ANSWERS:
        app.add_exception_handler(cls, _answer)
