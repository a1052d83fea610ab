"""``GET /crates/<name>`` and ``GET /crates/<name>/<version>``: the verdicts of a crate.

The answers come from a :class:`~logserver.protocol.crate_index.CrateIndex`, the pure fold of
every leaf, filled once at start-up from LMDB and kept level by a :class:`LeafFollower`: a
thread woken by the sequencer's listener after each durable batch (the write path only sets an
event), never a scan per request. Only leaves below the published checkpoint's size count, or
below ``?size=N`` (at most that size): a monitor asks at the size it verified and compares the
answer with its own fold of the same leaves (spec/api.md). Names and versions are checked
strictly (400); a crate without a verdict is 404; a log that does not run the build protocol
has no index (404 for every crate).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Protocol

import lmdb
from fastapi import FastAPI, Request
from starlette.responses import Response

from logserver.core.errors import OperationalError, UsageError
from logserver.http.problems import ProblemError
from logserver.http.service import LogService
from logserver.http.wire import json_response, optional_int_param
from logserver.protocol.crate_index import CrateIndex, check_crate_name, check_version
from logserver.sequencer import Integrated
from logserver.storage import LogStore

log = logging.getLogger(__name__)

READ_CHUNK = 512  # leaves read from LMDB and folded per step
INDEX_WAIT_S = 5.0  # how long an answer waits for the index to reach the size asked for


class LeafFold(Protocol):
    """What a follower keeps level: a fold of the log's leaves from index 0."""

    @property
    def size(self) -> int: ...

    def add_leaves(self, first_index: int, leaves: list[bytes]) -> object: ...


class LeafFollower:
    """Keeps a fold of leaves level with a :class:`LogStore` from a background thread."""

    def __init__(self, store: LogStore, fold: LeafFold, name: str) -> None:
        self.store = store
        self.fold = fold
        self._target = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._caught_up = threading.Condition()
        self._stopping = False
        self.failure: str | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def on_integrated(self, done: Integrated) -> None:
        """Sequencer listener: remember the new size and wake the thread (cheap on purpose)."""
        self._raise_target(done.first_index + done.count)

    def _raise_target(self, size: int) -> None:
        with self._lock:
            self._target = max(self._target, size)
        self._wake.set()

    def start(self) -> None:
        """Start following; register ``on_integrated`` with the sequencer before this."""
        self._raise_target(self.store.size())
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wait_until(self, size: int, timeout: float) -> bool:
        """Wait until at least ``size`` leaves are folded; False on timeout or failure."""
        with self._caught_up:
            self._caught_up.wait_for(
                lambda: self.fold.size >= size or self.failure is not None or self._stopping,
                timeout,
            )
        return self.fold.size >= size

    def _run(self) -> None:
        try:
            while not self._stopping:
                start = self.fold.size
                with self._lock:
                    target = self._target
                if start >= target:
                    self._wake.wait()
                    self._wake.clear()
                    continue
                end = min(start + READ_CHUNK, target)
                self.fold.add_leaves(start, self.store.entries(start, end))
                with self._caught_up:
                    self._caught_up.notify_all()
        except (lmdb.Error, OperationalError, UsageError) as e:
            # The store was closed under us (shutdown) or is broken: answers say so (503).
            self.failure = str(e)
            log.warning("leaf follower stopped", extra={"error": str(e), "fold": self._thread.name})
            with self._caught_up:
                self._caught_up.notify_all()


def add_routes(app: FastAPI, service: LogService) -> None:
    """Register the crate index routes on ``app`` (and start its follower on a protocol log)."""
    if service.protocol is None or service.network is None:

        @app.get("/crates/{name}")
        @app.get("/crates/{name}/{version}")
        async def no_index() -> Response:
            raise ProblemError(404, "this log does not run the build protocol: no crate index")

        return
    network = service.network.network_id
    index = CrateIndex()
    follower = LeafFollower(service.store, index, "crate-index")
    service.sequencer.add_listener(follower.on_integrated)
    follower.start()
    app.state.crate_index = follower

    async def answer_size(request: Request) -> int:
        published = service.published_size()
        size = optional_int_param(request, "size", published)
        if size > published:
            raise UsageError(f"size {size} is beyond the published checkpoint (size {published})")
        if index.size < size and not await asyncio.to_thread(
            follower.wait_until, size, INDEX_WAIT_S
        ):
            why = follower.failure or f"{index.size} of {size} leaves indexed so far"
            raise OperationalError(f"the crate index is not ready: {why}")
        return size

    @app.get("/crates/{name}")
    async def crate(name: str, request: Request) -> Response:
        check_crate_name(name)
        size = await answer_size(request)
        found = index.crate_answer(name, size, network)
        if found is None:
            raise UsageError(f"no verdict for the crate {name} below leaf {size}")
        return json_response(found)

    @app.get("/crates/{name}/{version}")
    async def version(name: str, version: str, request: Request) -> Response:
        check_crate_name(name)
        check_version(version)
        size = await answer_size(request)
        found = index.version_answer(name, version, size, network)
        if found is None:
            raise UsageError(f"no verdict for {name}@{version} below leaf {size}")
        return json_response(found)
