"""Who may ask a builder-witness for what, and how much: ``POST /request`` and ``PUT /crate``.

A request makes every builder of the network build, and an upload fills the log's blob store,
so the witness's HTTP API admits them through one ``RequestGate`` (spec/api.md, "The witness's
API"):

- **rate**: a token bucket per client address (``RequestLimits.per_minute``, ``burst``), taken
  before the body is read; empty: 429 with ``Retry-After``;
- **anyone** may ask for a rebuild of a crates.io release: the recipe's ``name@version`` must be
  in the crates.io index and its ``crate_sha256`` the index's ``cksum`` (422 otherwise). The
  index is read off the event loop, within ``index_timeout_s`` (504 past it, 502 when crates.io
  cannot be read);
- **a requester** of the network config must sign (``logserver.protocol.requester``) an upload
  of a local ``.crate`` and a request for a recipe whose source is local: 401 without
  ``X-Request-Signature``, 403 when it names no requester or does not verify;
- **once**: a job the log already holds (in this witness's mirror, or in the log's leaves beyond
  it) or that is being submitted answers 200 with its job and index; nothing is logged again;
- **bounded**: at most ``max_pending`` jobs may wait for a verdict (requested in the mirror
  without a verdict yet, plus those this witness logged that its mirror has not reached); a new
  one beyond that is 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import urllib.error
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from builder.recipe import SOURCE_LOCAL, Recipe
from builder.sources import CrateStore
from logserver.client import LogClient
from logserver.core import note
from logserver.core.errors import (
    FormatError,
    OperationalError,
    SynchronicityError,
    UsageError,
    VerificationError,
)
from logserver.http.problems import ProblemError
from logserver.protocol.entries import Request, Verdict
from logserver.protocol.network import NetworkConfig
from logserver.protocol.requester import REQUEST_SIGNATURE_HEADER, RequestSignature
from logserver.protocol.signed import Leaf
from logserver.storage import LogStore

log = logging.getLogger(__name__)

IndexLookup = Callable[[str, str], str]
"""``(name, version) -> cksum`` from the crates.io index (``CrateStore.index_cksum``)."""

MAX_TRACKED_CLIENTS = 10_000  # token buckets kept; the least recently used is forgotten
MAX_TAIL_LEAVES = 4096  # log leaves beyond the mirror searched for a job the log refused twice
PENDING_RETRY_S = 30


@dataclass(frozen=True)
class RequestLimits:
    """A witness's quotas for requests and uploads (``witness run`` options).

    ``per_minute`` tokens a minute per client address, at most ``burst`` at once (0: no rate
    limit); ``max_pending`` jobs waiting for a verdict; ``max_crate_bytes`` per upload;
    ``index_timeout_s`` for reading the crates.io index.
    """

    per_minute: float = 30.0
    burst: int = 10
    max_pending: int = 64
    max_crate_bytes: int = 64 << 20
    index_timeout_s: float = 20.0

    def __post_init__(self) -> None:
        if self.per_minute < 0 or self.burst < 1 or self.max_pending < 1:
            raise UsageError("request limits: rate >= 0, burst >= 1, max pending >= 1")
        if self.max_crate_bytes < 1 or self.index_timeout_s <= 0:
            raise UsageError("request limits: the crate size and index timeout must be positive")


class TokenBuckets:
    """One token bucket per client: ``per_minute`` tokens a minute, holding at most ``burst``.

    At most ``max_clients`` buckets are kept; the least recently used is forgotten first (it
    comes back full).
    """

    def __init__(
        self,
        per_minute: float,
        burst: int,
        max_clients: int = MAX_TRACKED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def take(self, client: str) -> float:
        """Take a token for ``client``: 0.0 when there was one, else the seconds to wait."""
        if self._rate == 0:
            return 0.0
        now = self._clock()
        tokens, at = self._buckets.pop(client, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self._rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        return wait


class JobIndex:
    """The jobs requested in a store of protocol leaves (a witness's mirror): the index of each
    request, and which have no verdict yet. Read incrementally; safe to share between threads."""

    def __init__(self, store: LogStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._scanned = 0
        self._requests: dict[str, int] = {}
        self._open: set[str] = set()

    def refresh(self) -> int:
        """Fold the leaves the store gained since the last call; the store's size."""
        with self._lock:
            size = self._store.size()
            for start in range(self._scanned, size, 1024):
                end = min(size, start + 1024)
                for index, data in enumerate(self._store.entries(start, end), start):
                    self._fold(index, data)
            self._scanned = size
            return size

    def _fold(self, index: int, data: bytes) -> None:
        try:
            entry = Leaf.parse(data).entry.entry
        except FormatError:
            return  # not a protocol leaf: no job
        if isinstance(entry, Request) and entry.job not in self._requests:
            self._requests[entry.job] = index
            self._open.add(entry.job)
        elif isinstance(entry, Verdict):
            self._open.discard(entry.job)

    def find(self, job: str) -> int | None:
        """The index of ``job``'s request, if the folded leaves hold one."""
        with self._lock:
            return self._requests.get(job)

    def open_jobs(self) -> set[str]:
        """The jobs requested without a verdict yet."""
        with self._lock:
            return set(self._open)


def find_in_log(log: LogClient, job: str, start: int) -> int | None:
    """The index of ``job``'s request among the log's leaves from ``start`` (a bounded tail)."""
    end = min(log.size(), start + MAX_TAIL_LEAVES)
    for index, data in enumerate(log.iter_leaves(start, end), start):
        try:
            entry = Leaf.parse(data).entry.entry
        except FormatError:
            continue
        if isinstance(entry, Request) and entry.job == job:
            return index
    return None


@dataclass(frozen=True)
class Admitted:
    """A request's job and the index of its request leaf; ``existing`` if it was logged before."""

    job: str
    index: int
    existing: bool


class RequestGate:
    """Admits the build requests and crate uploads of one witness (the module's rules)."""

    def __init__(
        self,
        network: NetworkConfig,
        mirror: LogStore,
        log: LogClient,
        limits: RequestLimits | None = None,
        index_lookup: IndexLookup | None = None,
    ) -> None:
        self.network = network
        self.limits = limits or RequestLimits()
        self._jobs = JobIndex(mirror)
        self._log = log
        self._requesters = {r.name: r.verifier for r in network.requesters}
        self._buckets = TokenBuckets(self.limits.per_minute, self.limits.burst)
        self._index_lookup = index_lookup
        self._submitted: dict[str, int] = {}  # jobs logged here that the mirror has not reached
        self._submitted_lock = threading.Lock()
        self._lock = asyncio.Lock()  # one submission at a time: no job is logged twice

    # ----- who and how often --------------------------------------------------------------

    def take_token(self, client: str) -> None:
        """Spend one of ``client``'s tokens (429 with Retry-After when it has none)."""
        wait = self._buckets.take(client)
        if wait > 0:
            retry = str(max(1, math.ceil(wait)))
            raise ProblemError(
                429, f"too many requests from {client}", headers={"Retry-After": retry}
            )

    def requester(self, header: str | None) -> tuple[RequestSignature, note.Verifier] | None:
        """The requester an ``X-Request-Signature`` names (None without the header); 403 if it
        is malformed or names nobody of the network config. Checked before the body is read."""
        if header is None:
            return None
        try:
            signature = RequestSignature.parse(header)
        except FormatError as e:
            raise ProblemError(403, str(e)) from e
        verifier = self._requesters.get(signature.name)
        if verifier is None:
            raise ProblemError(403, f"{signature.name} is not a requester of this network")
        return signature, verifier

    def check_signed(
        self,
        signed: tuple[RequestSignature, note.Verifier] | None,
        method: str,
        path: str,
        body: bytes,
        what: str,
    ) -> None:
        """401 without a signature, 403 unless it verifies over this request."""
        if signed is None:
            raise ProblemError(
                401,
                f"{what} needs {REQUEST_SIGNATURE_HEADER} by a requester of the network",
                headers={"WWW-Authenticate": f'{REQUEST_SIGNATURE_HEADER} realm="{self.realm}"'},
            )
        signature, verifier = signed
        try:
            signature.verify(verifier, self.network.network_id, method, path, body)
        except VerificationError as e:
            raise ProblemError(403, str(e)) from e

    @property
    def realm(self) -> str:
        return self.network.network_id.replace('"', "'")

    # ----- what ---------------------------------------------------------------------------

    async def check_index(self, recipe: Recipe) -> None:
        """A crates.io recipe must name a release in the index, with its checksum."""
        if recipe.source == SOURCE_LOCAL:
            return
        lookup = self._index_lookup or CrateStore().index_cksum
        timeout = self.limits.index_timeout_s
        try:
            cksum = await asyncio.wait_for(
                asyncio.to_thread(lookup, recipe.name, recipe.version), timeout
            )
        except TimeoutError:
            raise ProblemError(
                504,
                f"the crates.io index did not answer within {timeout:g} s",
                {"Retry-After": "30"},
            ) from None
        except UsageError as e:  # the crate exists, this version does not
            raise ProblemError(422, str(e)) from e
        except OperationalError as e:
            cause = e.__cause__
            if isinstance(cause, urllib.error.HTTPError) and cause.code == 404:
                raise ProblemError(422, f"no crate {recipe.name} in the crates.io index") from e
            raise ProblemError(
                502, f"cannot read the crates.io index: {e}", {"Retry-After": "30"}
            ) from e
        except FormatError as e:
            raise ProblemError(502, f"the crates.io index answered garbage: {e}") from e
        if cksum != recipe.crate_sha256:
            raise ProblemError(
                422,
                f"{recipe.spec}: the crates.io index says the .crate's SHA-256 is {cksum}, "
                f"not {recipe.crate_sha256}",
            )

    # ----- once, and bounded ----------------------------------------------------------------

    def _known(self, job: str) -> int | None:
        """The request index of ``job`` in the mirror or among this witness's submissions."""
        self._jobs.refresh()
        found = self._jobs.find(job)
        with self._submitted_lock:
            for reached in [j for j in self._submitted if self._jobs.find(j) is not None]:
                del self._submitted[reached]
            return found if found is not None else self._submitted.get(job)

    async def existing(self, job: str) -> int | None:
        """Where ``job`` was requested already, if this witness knows."""
        return await asyncio.to_thread(self._known, job)

    def _pending(self) -> int:
        with self._submitted_lock:
            return len(self._jobs.open_jobs() | set(self._submitted))

    async def request(self, job: str, submit: Callable[[], int]) -> Admitted:
        """Log the request for ``job`` with ``submit`` unless it is known; one at a time."""
        async with self._lock:
            found = await asyncio.to_thread(self._known, job)
            if found is not None:
                return Admitted(job, found, existing=True)
            if self._pending() >= self.limits.max_pending:
                raise ProblemError(
                    503,
                    f"{self.limits.max_pending} jobs are waiting for their verdict; ask later",
                    {"Retry-After": str(PENDING_RETRY_S)},
                )
            try:
                index = await asyncio.to_thread(submit)
            except SynchronicityError as refused:
                # Another witness may have logged it since the mirror's last leaf: the log
                # refuses a second request for a job (duplicate-request).
                try:
                    found = await asyncio.to_thread(
                        find_in_log, self._log, job, self._jobs.refresh()
                    )
                except SynchronicityError:
                    found = None
                if found is None:
                    raise refused
                return Admitted(job, found, existing=True)
            with self._submitted_lock:
                self._submitted[job] = index
            return Admitted(job, index, existing=False)
