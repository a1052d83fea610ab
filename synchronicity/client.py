"""A client of a running network: ask a builder for a rebuild and follow the job in the log.

``BuilderClient`` is the small client of a builder-witness (upload a crate, request a build).
The log is read only through ``logserver.client.LogClient`` and its public, verifiable
interface: entry bundles (checked against the tiles' hashes by the witnesses; here decoded
strictly), the published checkpoint (checked against the trust policy) and tlog-proof files.
The functions below follow a job on top of it: ``find_request``, ``follow``,
``wait_published``, and ``describe`` for one line per entry.

Errors: a builder or log that cannot be reached or refuses is an ``OperationalError``; one that
answers with bytes that do not parse is a ``RemoteError`` (an OperationalError too); a builder
that asks to be asked later (429, 503 with ``Retry-After``; 502, 504) raises ``BuilderBusy``,
one that refuses for good (another 4xx) ``BuilderRefused`` (both OperationalErrors).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import httpx

from logserver.client import LogClient
from logserver.core import canonical_json
from logserver.core.errors import FormatError, OperationalError, RemoteError
from logserver.core.policy import Policy
from logserver.protocol.entries import Close, Commit, DiffReport, Entry, Request, Reveal, Verdict
from logserver.protocol.requester import RequestSigner
from logserver.protocol.signed import Leaf

if TYPE_CHECKING:  # install and fetch use this module on the client extra: no builder
    from builder.recipe import Recipe

Progress = Callable[[str], None]
MAX_BUILDER_ANSWER = 1 << 20


@dataclass(frozen=True)
class LoggedEntry:
    """A build-protocol leaf and its index in the log."""

    index: int
    leaf: Leaf

    @property
    def entry(self) -> Entry:
        return self.leaf.entry.entry


class BuilderBusy(OperationalError):
    """The builder asks to be asked later (429 too many requests, 503 too many jobs waiting):
    ``retry_after`` seconds, from its ``Retry-After`` header."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BuilderRefused(OperationalError):
    """The builder refused the request for good (a 4xx other than 429): ``status``, and the
    reason in the message (e.g. 422: the crates.io index does not have that release)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _retry_after(value: str | None) -> float:
    """Seconds from a ``Retry-After`` of delta-seconds; 5 when it is missing or a date."""
    try:
        return min(max(float(value or "5"), 0.0), 600.0)
    except ValueError:
        return 5.0


class BuilderClient:
    """The calls a user makes to a builder-witness: upload a crate, request a build.

    Anyone may request a build of a crates.io release; uploading a local ``.crate`` and
    requesting a build of it need a ``requester`` of the network config, whose key signs every
    request (``X-Request-Signature``, logserver/protocol/requester.py).
    """

    def __init__(
        self, builder_url: str, timeout: float = 60.0, requester: RequestSigner | None = None
    ) -> None:
        self.builder_url = builder_url.rstrip("/")
        self._http = httpx.Client(timeout=timeout)
        self.requester = requester

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> BuilderClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, method: str, path: str, content: bytes, what: str) -> bytes:
        headers = self.requester.headers(method, path, content) if self.requester else None
        try:
            r = self._http.request(
                method, self.builder_url + path, content=content, headers=headers
            )
        except httpx.HTTPError as e:
            raise OperationalError(f"{what}: {e}") from e
        if r.status_code in (429, 502, 503, 504):  # 429, 503: busy (with Retry-After);
            # 502, 504: the log or the crates.io index behind it, for now
            raise BuilderBusy(
                f"{what}: {r.status_code} {r.text[:300]}",
                _retry_after(r.headers.get("Retry-After")),
            )
        if 400 <= r.status_code < 500:
            raise BuilderRefused(f"{what}: {r.status_code} {r.text[:300]}", r.status_code)
        if r.status_code not in (200, 201):
            raise OperationalError(f"{what}: {r.status_code} {r.text[:300]}")
        if len(r.content) > MAX_BUILDER_ANSWER:
            raise OperationalError(f"{what}: the answer is larger than {MAX_BUILDER_ANSWER} bytes")
        return r.content

    def upload_crate(self, sha256: str, data: bytes) -> None:
        """Give the builder a local ``.crate`` file, named by its SHA-256."""
        self._send("PUT", f"/crate/{sha256}", data, "uploading the crate")

    def request(self, recipe: Recipe) -> tuple[str, int]:
        """Ask the builder to log a request for ``recipe``; return (job, index of the request).

        A job the log already holds is answered with the index of its request."""
        answer = self.request_job(recipe.to_json())
        return answer.job, answer.index

    def request_job(self, recipe_json: bytes) -> RequestAnswer:
        """Ask the builder to log a request for a canonical recipe; its answer."""
        body = self._send("POST", "/request", recipe_json, "requesting the build")
        try:
            answer = canonical_json.parse(body, "request answer", max_bytes=MAX_BUILDER_ANSWER)
        except FormatError as e:
            raise RemoteError(f"the builder at {self.builder_url}", str(e)) from e
        job = answer.get("job") if isinstance(answer, dict) else None
        index = answer.get("index") if isinstance(answer, dict) else None
        if not isinstance(job, str) or not isinstance(index, int) or isinstance(index, bool):
            raise RemoteError(
                f"the builder at {self.builder_url}", "a request answer without job and index"
            )
        return RequestAnswer(job, index, answer.get("existing") is True)


@dataclass(frozen=True)
class RequestAnswer:
    """A builder's answer to a request: the job, the index of its request leaf, and whether
    the log held it before (nothing was logged)."""

    job: str
    index: int
    existing: bool


def logged_entries(log: LogClient, start: int, end: int) -> Iterator[LoggedEntry]:
    """The log's leaves ``start``..``end``-1, parsed as build-protocol leaves."""
    for index, data in enumerate(log.iter_leaves(start, end), start):
        try:
            yield LoggedEntry(index, Leaf.parse(data))
        except FormatError as e:
            raise RemoteError(
                f"the log at {log.url}", f"a leaf {index} that does not parse: {e}"
            ) from e


def find_request(log: LogClient, job: str) -> int | None:
    """The index of the request for ``job`` if the log already holds one."""
    for logged in logged_entries(log, 0, log.size()):
        if isinstance(logged.entry, Request) and logged.entry.job == job:
            return logged.index
    return None


def follow(
    log: LogClient, job: str, start: int, timeout: float, progress: Progress
) -> tuple[list[LoggedEntry], LoggedEntry]:
    """Report the job's entries as they appear, until its verdict; return all and it."""
    seen: list[LoggedEntry] = []
    deadline = time.monotonic() + timeout
    cursor = start
    while time.monotonic() < deadline:
        size = log.size()
        for logged in logged_entries(log, cursor, size):
            if getattr(logged.entry, "job", None) != job:
                continue
            seen.append(logged)
            progress(describe(logged))
            if isinstance(logged.entry, Verdict):
                return seen, logged
        cursor = size
        time.sleep(0.2)
    raise OperationalError(f"no verdict for job {job} within {timeout:.0f} s")


def wait_published(log: LogClient, index: int, policy: Policy, timeout: float) -> bytes:
    """The first quorum-cosigned checkpoint that covers leaf ``index``.

    Until the deadline, a log that has published nothing yet (404) or cannot be reached is
    asked again; a checkpoint that does not parse or fails the policy ends the wait.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            checkpoint = log.checkpoint()
        except RemoteError:
            raise
        except OperationalError:
            checkpoint = None
        if checkpoint is not None and policy.verify_checkpoint(checkpoint).size > index:
            return checkpoint
        time.sleep(0.1)
    raise OperationalError(f"leaf {index} was not published with a witness quorum in time")


def describe(logged: LoggedEntry) -> str:
    """One line that says what a logged entry is, for progress output."""
    e = logged.entry
    match e:
        case Request():
            return f"[{logged.index}] request {e.display_name} (job {e.job[:16]})"
        case Commit():
            return f"[{logged.index}] {e.builder} committed"
        case Close():
            return f"[{logged.index}] commits closed ({e.reason}): {', '.join(e.committed)}"
        case Reveal():
            what = f"failed: {e.failure}" if e.failure else f"output {e.output_digest}"
            return f"[{logged.index}] {e.builder} revealed {what}"
        case Verdict():
            return f"[{logged.index}] verdict: {e.outcome} ({len(e.agreeing)} agree)"
        case DiffReport():
            return f"[{logged.index}] diff report {e.report_sha256}"
    return f"[{logged.index}] {type(e).__name__}"
