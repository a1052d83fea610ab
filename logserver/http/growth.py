"""Waiting for the tree to grow: ``/latest-checkpoint?after=N&wait_ms=M`` without polling.

``TreeGrowth`` keeps the requests that wait for a tree larger than some size as futures on the
event loop. The sequencer calls its listener on the writer thread after each durable batch
(``Sequencer.add_listener``); the listener hands the new size to the loop with
``loop.call_soon_threadsafe``, and the loop wakes exactly the waiters that size passes. A
waiting request costs nothing until then, or until its ``wait_ms`` runs out.

At most ``max_waiters`` requests wait at once (``log serve --max-waiters``); beyond that a
request does not wait but is answered at once with what the log has, as if its wait had run
out: the client sees no growth and asks again, as it would after a timeout. So a crowd of
long polls holds bounded memory and never turns into errors.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from logserver.sequencer import Integrated

MAX_WAIT_MS = 5000  # the longest a /latest-checkpoint request is held open
DEFAULT_MAX_WAITERS = 1024


class TreeGrowth:
    """The requests waiting on one event loop for the log's tree to grow past a size."""

    def __init__(self, size: Callable[[], int], max_waiters: int = DEFAULT_MAX_WAITERS) -> None:
        """``size`` reads the tree's size now (a cheap LMDB read)."""
        self._size = size
        self.max_waiters = max_waiters
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[asyncio.Future[None], int] = {}  # waiter -> the size it must pass

    @property
    def waiting(self) -> int:
        """How many requests wait now."""
        return len(self._waiters)

    def on_integrated(self, done: Integrated) -> None:
        """Sequencer listener, on its thread: wake the waiters the new size passes."""
        loop = self._loop
        if loop is None:  # nobody ever waited
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: the server has stopped
            loop.call_soon_threadsafe(self._grown, done.first_index + done.count)

    def _grown(self, size: int) -> None:
        for waiter, after in self._waiters.items():
            if size > after and not waiter.done():
                waiter.set_result(None)

    async def wait_beyond(self, after: int, wait_ms: int) -> None:
        """Return once the tree is larger than ``after``, or after ``wait_ms`` (at most
        ``MAX_WAIT_MS``), or at once when ``max_waiters`` requests wait already."""
        loop = asyncio.get_running_loop()
        # Known to the listener before the size is read: an integration that the read misses
        # calls _grown on this loop, which can only run after this waiter is registered.
        self._loop = loop
        if wait_ms <= 0 or self._size() > after or len(self._waiters) >= self.max_waiters:
            return
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters[waiter] = after
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, min(wait_ms, MAX_WAIT_MS) / 1000)
        finally:
            del self._waiters[waiter]
