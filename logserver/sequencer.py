"""The single writer of the log: it batches submissions and integrates each batch durably.

Submitters get a future. One thread takes the first waiting submission, gathers more until the
batch holds ``max_batch`` entries or ``max_delay`` seconds have passed since it started, and
integrates the batch with one LMDB transaction (entries, stored hashes, signed checkpoint).
Only when that transaction has committed are the futures resolved, so an index handed to a
submitter always names a durable entry. While a batch is being flushed, new submissions queue up
and form the next batch: under load batches grow by themselves.

A bounded queue gives back-pressure: ``submit`` raises ``QueueFull`` instead of letting memory
grow without limit.

Only a failure to store a batch (or to sign its checkpoint) stops the sequencer. Anything tied
to a batch's contents does not: an entry too large for an entry bundle is refused when
submitted, and a batch the batcher fails to prepare is refused (each of its submitters gets the
error, ``failed_batches`` counts it) while the sequencer goes on with the next.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol, TypeVar

from logserver.core.checkpoint import Checkpoint
from logserver.core.errors import FormatError, OperationalError
from logserver.core.tiles import MAX_ENTRY_SIZE
from logserver.storage import LogStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class QueueFull(OperationalError):
    """The sequencer's queue is full; the submitter should retry later."""


@dataclass(frozen=True)
class Integrated:
    """What one integration did, for listeners (metrics, witnesses, the dashboard)."""

    first_index: int
    count: int
    checkpoint: bytes
    seconds: float


@dataclass(frozen=True)
class _Submission:
    entries: Sequence[bytes]
    future: Future[int]


@dataclass(frozen=True)
class _Call:
    fn: Callable[[], object]
    future: Future[object]

    def run(self) -> None:
        try:
            self.future.set_result(self.fn())
        except Exception as e:  # noqa: BLE001 - handed to the caller through the future
            self.future.set_exception(e)


class Batcher(Protocol):
    """Turns submitted entries into the leaves of one batch (the build protocol's log side).

    ``prepare`` returns the leaves and, for each submission, the offset of its leaf among them
    or the exception that refuses it; ``committed`` is called once that batch is durable.
    """

    def prepare(
        self, submissions: Sequence[bytes]
    ) -> tuple[list[bytes], list[int | Exception]]: ...

    def committed(self) -> None: ...


_STOP = object()


class Sequencer:
    """The log's single writer: queues submissions, integrates them in durable batches and
    resolves each submitter's future only once its batch is on disk."""

    def __init__(
        self,
        store: LogStore,
        sign: Callable[[Checkpoint], bytes],
        *,
        max_batch: int = 256,
        max_delay: float = 0.002,
        max_queue: int = 8192,
        batcher: Batcher | None = None,
        tick: float = 0.5,
    ) -> None:
        self._store = store
        self._batcher = batcher
        self._tick = tick
        self._sign = sign
        self._max_batch = max_batch
        self._max_delay = max_delay
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="sequencer", daemon=True)
        self._listeners: list[Callable[[Integrated], None]] = []
        self._failed: Exception | None = None
        self._held: object | None = None  # taken from the queue, waits for the next batch
        self.failed_batches = 0  # batches refused because preparing them failed (a metric)

    def add_listener(self, listener: Callable[[Integrated], None]) -> None:
        """Call ``listener`` on the sequencer thread after each durable integration."""
        self._listeners.append(listener)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def healthy(self) -> bool:
        return self._failed is None and self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Integrate what is queued, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def submit(self, data: bytes) -> Future[int]:
        """Queue one entry; the future resolves to its index once it is durable."""
        return self.submit_many([data])

    def submit_many(self, entries: Sequence[bytes]) -> Future[int]:
        """Queue entries that must be logged together, at consecutive indexes, in one batch.

        The future resolves to the index of the first once all are durable.
        """
        if not 0 < len(entries) <= self._max_batch:
            raise ValueError(f"a submission holds 1 to {self._max_batch} entries")
        if any(len(data) > MAX_ENTRY_SIZE for data in entries):
            raise FormatError("log entry", f"longer than {MAX_ENTRY_SIZE} bytes")
        if self._failed is not None:
            raise OperationalError(f"the sequencer has stopped: {self._failed}")
        fut: Future[int] = Future()
        try:
            self._queue.put_nowait(_Submission(entries, fut))
        except queue.Full:
            raise QueueFull("the log's queue is full") from None
        return fut

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on the writer thread between batches (LMDB writes belong to one thread)."""
        if self._failed is not None:
            raise OperationalError(f"the sequencer has stopped: {self._failed}")
        fut: Future[T] = Future()
        try:
            self._queue.put_nowait(_Call(fn, fut))  # type: ignore[arg-type]
        except queue.Full:
            raise QueueFull("the log's queue is full") from None
        return fut

    def _gather(self, first: _Submission) -> tuple[list[_Submission], bool]:
        """Submissions for one batch: at most max_batch entries, gathered for max_delay."""
        batch = [first]
        count = len(first.entries)
        deadline = time.monotonic() + self._max_delay
        while count < self._max_batch:
            if self._held is not None:
                item: object = self._held
                self._held = None
            else:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        item = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
            if item is _STOP:
                return batch, True
            if not isinstance(item, _Submission) or count + len(item.entries) > self._max_batch:
                self._held = item  # it goes after this batch
                break
            batch.append(item)
            count += len(item.entries)
        return batch, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first: object
            if self._held is not None:
                first, self._held = self._held, None
            elif self._batcher is None:
                first = self._queue.get()
            else:  # the batcher may have entries due with no submission at all
                try:
                    first = self._queue.get(timeout=self._tick)
                except queue.Empty:
                    if not self._integrate([]):
                        return
                    continue
            if first is _STOP:
                break
            if isinstance(first, _Call):
                first.run()
                continue
            assert isinstance(first, _Submission)
            batch, stop = self._gather(first)
            if not self._integrate(batch):
                return

    def _prepare(self, entries: list[bytes]) -> tuple[list[bytes], list[int | Exception]]:
        if self._batcher is None:
            return entries, list(range(len(entries)))
        leaves, outcomes = self._batcher.prepare(entries)
        for leaf in leaves:
            if len(leaf) > MAX_ENTRY_SIZE:
                raise FormatError("batch", f"a leaf of {len(leaf)} bytes > {MAX_ENTRY_SIZE}")
        return leaves, outcomes

    def _integrate(self, batch: Sequence[_Submission]) -> bool:
        """Integrate one batch; False when storing it failed and the sequencer must stop."""
        started = time.monotonic()
        entries = [data for sub in batch for data in sub.entries]
        try:
            leaves, outcomes = self._prepare(entries)
        except Exception as e:  # tied to this batch's contents: refuse it, go on
            log.exception("preparing a batch failed; its submissions are refused")
            self.failed_batches += 1
            for sub in batch:
                sub.future.set_exception(OperationalError(f"the log could not take it: {e}"))
            return True
        try:
            if not leaves:
                first, note = self._store.size(), b""
            else:
                first, note = self._store.append_batch(leaves, self._sign)
        except Exception as e:
            log.exception("integration failed; the sequencer stops")
            self._failed = e
            for sub in batch:
                sub.future.set_exception(OperationalError(f"the log could not store it: {e}"))
            self._fail_queued(e)
            return False
        if self._batcher is not None:
            self._batcher.committed()
        position = 0
        for sub in batch:
            mine = outcomes[position : position + len(sub.entries)]
            position += len(sub.entries)
            refused = [o for o in mine if isinstance(o, Exception)]
            if refused:
                sub.future.set_exception(refused[0])
            else:
                sub.future.set_result(first + sum(o for o in mine[:1] if isinstance(o, int)))
        if not leaves:
            return True
        done = Integrated(first, len(leaves), note, time.monotonic() - started)
        for listener in self._listeners:
            try:
                listener(done)
            except Exception:  # a broken listener must not stop the log
                log.exception("integration listener failed")
        return True

    def _fail_queued(self, cause: Exception) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Submission | _Call):
                item.future.set_exception(OperationalError(f"the sequencer has stopped: {cause}"))
