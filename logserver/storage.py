"""Durable storage of the log in LMDB: entries, stored hashes and signed checkpoints.

Every key is an 8-byte big-endian integer and every write is an append, so LMDB's B+trees
only ever grow at their right edge (``append=True``). One write transaction holds a whole
batch: its entries, the stored hashes that the dense index of ``tlog`` assigns to them, and the
checkpoint signed over the new tree. LMDB commits it with a synchronous flush, so an entry is
durable exactly when the batch that carries it has committed, and the latest signed checkpoint
can never disagree with the entries on disk.

A store opened with an ``entry_key`` function also keeps, in the same transactions, the index
of the first entry with each key (``index_of``): a log that accepts signed notes logs each note
once, however often it is sent. Entries appended while the index was off are indexed the next
time it is on.

Only one thread may write (the sequencer); any number of threads may read.

The LMDB map (the address space the database may use) starts at ``map_size`` and grows, by
doubling, when a write transaction finds it full, up to ``max_map_size`` (``log serve
--map-size``, ``--max-map-size``). LMDB may only remap between transactions and with no
transaction open in the process, so the writer grows it while readers wait at a gate
(``_ResizeGate``). A log must never find out that it is full in the middle of a batch, because
a batch that cannot be stored stops the sequencer: ``reserve`` admits an entry only while the
map, grown to its maximum, and the disk have room for it, every entry admitted but not yet
stored, and a fixed reserve (``RESERVE``, for the entries and cosignatures the log writes by
itself); beyond that it raises ``StorageFull``, which the HTTP API answers with 507 while reads
go on. Restarted with a larger ``--max-map-size`` (or with disk space freed), the log takes
entries again.
"""

from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import lmdb

from logserver.core import tiles, tlog
from logserver.core.checkpoint import Checkpoint
from logserver.core.compact import Frontier
from logserver.core.errors import OperationalError, UsageError
from logserver.core.note import split_note

_U64 = 8
DEFAULT_MAP_SIZE = 1 << 36  # 64 GiB of address space; the file grows only as data arrives.
DEFAULT_MAX_MAP_SIZE = 1 << 42  # 4 TiB: how far the map may grow by itself
RESERVE = 1 << 20  # room kept for what the log writes without a submission (verdicts, cosignatures)
ENTRY_OVERHEAD = 512  # a stored entry's keys, stored hashes, index and checkpoint share, at most
_PAGE = 4096
_P = ParamSpec("_P")
_R = TypeVar("_R")


def disk_free(path: Path) -> int:
    """Bytes free for us on the file system holding ``path``."""
    return shutil.disk_usage(path).free


def entry_cost(size: int) -> int:
    """What storing an entry of ``size`` bytes may take of the map, at most: LMDB puts a large
    value on whole pages of its own, which at worst doubles it."""
    return 2 * size + ENTRY_OVERHEAD


class StorageFull(OperationalError):
    """The log cannot store more: its LMDB map reached its maximum size, or the disk is full."""


def _key(n: int) -> bytes:
    return n.to_bytes(_U64, "big")


class _TxnHashReader:
    """Reads stored hashes inside one LMDB transaction."""

    def __init__(self, txn: Any, db: Any) -> None:
        self._txn = txn
        self._db = db

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        out = []
        for i in indexes:
            h = self._txn.get(_key(i), db=self._db)
            if h is None:
                raise UsageError(f"stored hash {i} is not in the log")
            out.append(bytes(h))
        return out


class _ResizeGate:
    """Transactions hold the gate shared; a resize of the map holds it alone.

    LMDB remaps the file on a resize and invalidates every transaction open in the process, so
    the writer waits until no reader is inside, and new readers wait until the resize is done.
    A thread that holds the gate may enter again (no deadlock against a waiting resize).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._inside = 0
        self._resizing = False
        self._mine = threading.local()

    @contextmanager
    def shared(self) -> Iterator[None]:
        depth: int = getattr(self._mine, "depth", 0)
        if depth == 0:
            with self._cond:
                while self._resizing:
                    self._cond.wait()
                self._inside += 1
        self._mine.depth = depth + 1
        try:
            yield
        finally:
            self._mine.depth = depth
            if depth == 0:
                with self._cond:
                    self._inside -= 1
                    if self._inside == 0:
                        self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._resizing = True
            while self._inside:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


def _growing(
    method: Callable[Concatenate[LogStore, _P], _R],
) -> Callable[Concatenate[LogStore, _P], _R]:
    """Run a write method; when LMDB finds the map full, grow the map and run it again (its
    transaction was aborted, so nothing of the first attempt remains). The map is grown ahead,
    once three quarters are used, so that this is rare."""

    @functools.wraps(method)
    def run(store: LogStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        if store.used_bytes > store.map_size // 4 * 3 and store.map_size < store.max_map_size:
            store._grow()
        while True:
            try:
                result = method(store, *args, **kwargs)
            except lmdb.MapFullError:
                store._grow()  # StorageFull at the maximum
                continue
            except lmdb.DiskError as e:
                raise StorageFull(f"the disk holding the log is full: {e}") from e
            store._note_used()
            return result

    return run


class LogStore:
    """The on-disk log of one origin."""

    def __init__(
        self,
        path: Path,
        origin: str,
        map_size: int = DEFAULT_MAP_SIZE,
        *,
        max_map_size: int = DEFAULT_MAX_MAP_SIZE,
        metasync: bool = True,
        entry_key: Callable[[bytes], bytes] | None = None,
    ) -> None:
        """``metasync=False`` (for mirrors, which can fetch again) saves one flush per commit:
        a system crash may then undo the last transaction, but never corrupts the database.
        ``entry_key`` keeps the index of entries by that key, a digest (``index_of``).
        The map starts at ``map_size`` (or the database's size, if larger) and grows up to
        ``max_map_size``."""
        path.mkdir(parents=True, exist_ok=True)
        try:
            self._env = lmdb.open(
                str(path / "log.lmdb"),
                map_size=-(-map_size // _PAGE) * _PAGE,
                max_dbs=8,
                max_readers=512,
                sync=True,
                metasync=metasync,
            )
        except lmdb.Error as e:
            raise OperationalError(f"cannot open the log database in {path}: {e}") from e
        self.path = path
        self._gate = _ResizeGate()
        self._page_size: int = self._env.stat()["psize"]
        self.map_size: int = self._env.info()["map_size"]
        self.max_map_size = max(max_map_size, self.map_size)
        self._used = 0  # bytes of the map in use (the high-water mark), kept by the writer
        self._note_used()
        self._reserved = 0  # the cost of entries admitted but not yet stored
        self._room = threading.Lock()
        self._entries = self._env.open_db(b"entries")
        self._hashes = self._env.open_db(b"hashes")
        self._checkpoints = self._env.open_db(b"checkpoints")
        self._meta = self._env.open_db(b"meta")
        # (size, witness name) -> cosignature line, for checkpoints witnesses co-signed.
        self._cosignatures = self._env.open_db(b"cosignatures")
        # entry_key(entry) -> index of its first occurrence (with an ``entry_key``).
        self._digests = self._env.open_db(b"digests")
        self._entry_key = entry_key
        self._write_lock = threading.Lock()
        self.origin = origin
        with self._env.begin(write=True) as txn:
            stored = txn.get(b"origin", db=self._meta)
            if stored is None:
                txn.put(b"origin", origin.encode(), db=self._meta)
            elif bytes(stored) != origin.encode():
                raise OperationalError(
                    f"the log in {path} belongs to origin {bytes(stored).decode()!r}, "
                    f"not {origin!r}"
                )
        self._check_integrity()
        if entry_key is not None:
            self._catch_up_digests(entry_key)

    def close(self) -> None:
        self._env.close()

    @contextmanager
    def _read(self) -> Iterator[Any]:
        with self._gate.shared(), self._env.begin(buffers=False) as txn:
            yield txn

    @contextmanager
    def _write(self) -> Iterator[Any]:
        """A write transaction (hold ``_write_lock``), committed unless the block raises.

        py-lmdb aborts a write transaction only once no other thread is inside a call on the
        environment, which busy readers may never allow: the abort waits at the gate instead,
        where new readers wait for it.
        """
        txn = self._env.begin(write=True)
        try:
            yield txn
        except BaseException:
            with self._gate.exclusive():
                txn.abort()
            raise
        txn.commit()

    # ----- the map and its room ----------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        """How much of the map the database uses (its high-water mark)."""
        return self._used

    def _note_used(self) -> None:
        """Read the database's high-water mark (on the writer thread, between transactions)."""
        self._used = (self._env.info()["last_pgno"] + 1) * self._page_size

    def _grow(self) -> None:
        """Double the map, up to ``max_map_size`` (writer thread, between transactions);
        ``StorageFull`` when it is there already."""
        if self.map_size >= self.max_map_size:
            raise StorageFull(
                f"the log's database filled its map of {self.map_size} bytes, the most "
                "--max-map-size allows; restart the log with a larger --max-map-size"
            )
        grown = min(2 * self.map_size, self.max_map_size) // _PAGE * _PAGE
        with self._write_lock, self._gate.exclusive():
            self._env.set_mapsize(grown)
            self.map_size = self._env.info()["map_size"]

    def reserve(self, size: int) -> Callable[[], None]:
        """Admit an entry of ``size`` bytes, counting its cost against the room left; return
        the function that gives the room back once the entry is stored or refused.

        ``StorageFull`` when the map, grown to ``max_map_size``, or the disk would keep less
        than ``RESERVE`` with this entry and every one admitted before it.
        """
        cost = entry_cost(size)
        with self._room:
            wanted = self._used + self._reserved + cost + RESERVE
            if wanted > self.max_map_size:
                raise StorageFull(
                    f"the log is full: its database uses {self._used} of the "
                    f"{self.max_map_size} bytes --max-map-size allows; restart it with a "
                    "larger --max-map-size"
                )
            if disk_free(self.path) < self._reserved + cost + RESERVE:
                raise StorageFull(f"the disk holding the log ({self.path}) is full")
            self._reserved += cost
        released = False

        def release() -> None:
            nonlocal released
            with self._room:
                if not released:
                    released = True
                    self._reserved -= cost

        return release

    # ----- integrity ---------------------------------------------------------------------

    def _check_integrity(self) -> None:
        """Refuse to serve a database whose latest checkpoint does not match its hashes."""
        with self._read() as txn:
            size = self._size(txn)
            if size == 0:
                return
            note = txn.get(_key(size), db=self._checkpoints)
            if note is None:
                raise OperationalError(f"the log has {size} entries but no checkpoint for them")
            root = tlog.tree_hash(size, _TxnHashReader(txn, self._hashes))
            body = Checkpoint.parse(split_note(bytes(note))[0])
            if body.size != size or body.root_hash != root or body.origin != self.origin:
                raise OperationalError("the latest checkpoint does not match the stored tree")

    # ----- the digest index ----------------------------------------------------------------

    def _put_digests(
        self, txn: Any, first: int, batch: Sequence[bytes], key: Callable[[bytes], bytes]
    ) -> None:
        """Index ``batch`` (entries ``first``...) by ``key``; the first occurrence wins."""
        for i, data in enumerate(batch):
            txn.put(key(data), _key(first + i), db=self._digests, overwrite=False)
        txn.put(b"digests", _key(first + len(batch)), db=self._meta)

    @_growing
    def _catch_up_digests(self, key: Callable[[bytes], bytes], chunk: int = 4096) -> None:
        """Index the entries appended while the index was off (a log that ran ``--open``)."""
        while True:
            with self._write_lock, self._write() as txn:
                raw = txn.get(b"digests", db=self._meta)
                done = 0 if raw is None else int.from_bytes(raw, "big")
                end = min(self._size(txn), done + chunk)
                if done >= end:
                    return
                batch: list[bytes] = []
                cur = txn.cursor(db=self._entries)
                if cur.set_key(_key(done)):
                    for _, value in cur:
                        batch.append(bytes(value))
                        if len(batch) == end - done:
                            break
                self._put_digests(txn, done, batch, key)

    def index_of(self, key: bytes) -> int | None:
        """The index of the first entry whose ``entry_key`` is ``key`` (None: no such entry)."""
        with self._read() as txn:
            raw = txn.get(key, db=self._digests)
            return None if raw is None else int.from_bytes(raw, "big")

    # ----- reads -------------------------------------------------------------------------

    def _size(self, txn: Any) -> int:
        raw = txn.get(b"size", db=self._meta)
        return 0 if raw is None else int.from_bytes(raw, "big")

    def size(self) -> int:
        with self._read() as txn:
            return self._size(txn)

    def latest_checkpoint(self) -> bytes | None:
        """The latest signed checkpoint note, or None for an empty log."""
        with self._read() as txn:
            size = self._size(txn)
            note = txn.get(_key(size), db=self._checkpoints)
            return None if note is None else bytes(note)

    def checkpoint_at(self, size: int) -> bytes | None:
        with self._read() as txn:
            note = txn.get(_key(size), db=self._checkpoints)
            return None if note is None else bytes(note)

    def checkpoint_sizes(self, limit: int, before: int | None = None) -> list[int]:
        """Sizes of signed checkpoints, newest first (for the dashboard's history)."""
        out: list[int] = []
        with self._read() as txn:
            cur = txn.cursor(db=self._checkpoints)
            if before is None:
                ok = cur.last()
            else:  # the last key below `before`
                ok = cur.prev() if cur.set_range(_key(before)) else cur.last()
            while ok and len(out) < limit:
                out.append(int.from_bytes(cur.key(), "big"))
                ok = cur.prev()
        return out

    def entry(self, index: int) -> bytes:
        with self._read() as txn:
            raw = txn.get(_key(index), db=self._entries)
            if raw is None:
                raise UsageError(f"entry {index} is not in the log (size {self._size(txn)})")
            return bytes(raw)

    def entries(self, start: int, end: int) -> list[bytes]:
        """Entries start..end-1, all of which must exist."""
        out: list[bytes] = []
        with self._read() as txn:
            if end > self._size(txn) or start > end:
                raise UsageError(f"entries {start}..{end} are not in the log")
            cur = txn.cursor(db=self._entries)
            if start < end and cur.set_key(_key(start)):
                for _, value in cur:
                    out.append(bytes(value))
                    if len(out) == end - start:
                        break
        return out

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        with self._read() as txn:
            return _TxnHashReader(txn, self._hashes).read_hashes(indexes)

    def _within(self, txn: Any, size: int) -> None:
        current = self._size(txn)
        if size > current:
            raise UsageError(f"tree size {size} is beyond the log's size {current}")

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        with self._read() as txn:
            self._within(txn, size)
            if not 0 <= index < size:
                raise UsageError(f"index {index} is not below tree size {size}")
            return tlog.prove_record(size, index, _TxnHashReader(txn, self._hashes))

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        with self._read() as txn:
            self._within(txn, new)
            if not 0 < old <= new:
                raise UsageError(f"no consistency proof from size {old} to size {new}")
            return tlog.prove_tree(new, old, _TxnHashReader(txn, self._hashes))

    def tree_hash(self, size: int) -> bytes:
        with self._read() as txn:
            self._within(txn, size)
            return tlog.tree_hash(size, _TxnHashReader(txn, self._hashes))

    def tile_data(self, tile: tiles.Tile) -> bytes:
        """The bytes of a hash tile, which must lie within the current tree."""
        with self._read() as txn:
            return tiles.read_tile_data(tile, _TxnHashReader(txn, self._hashes))

    def published_size(self) -> int:
        """The size of the newest checkpoint that gathered a quorum of cosignatures (0: none)."""
        with self._read() as txn:
            raw = txn.get(b"published", db=self._meta)
            return 0 if raw is None else int.from_bytes(raw, "big")

    def cosignatures_at(self, size: int) -> dict[str, bytes]:
        """The cosignature lines stored for the checkpoint of ``size``, by witness name."""
        prefix = _key(size)
        out: dict[str, bytes] = {}
        with self._read() as txn:
            cur = txn.cursor(db=self._cosignatures)
            if cur.set_range(prefix):
                for key, value in cur:
                    if key[:_U64] != prefix:
                        break
                    out[bytes(key[_U64:]).decode()] = bytes(value)
        return out

    # ----- the write path (sequencer thread only) -----------------------------------------

    @_growing
    def add_cosignatures(self, size: int, lines: dict[str, bytes], quorum: int) -> int:
        """Store cosignature lines for the checkpoint of ``size``; publish it at a quorum.

        Returns the published size afterwards. The published size only ever grows.
        """
        with self._write_lock, self._write() as txn:
            if txn.get(_key(size), db=self._checkpoints) is None:
                raise UsageError(f"the log signed no checkpoint of size {size}")
            for name, line in lines.items():
                txn.put(_key(size) + name.encode(), line, db=self._cosignatures)
            count = 0
            cur = txn.cursor(db=self._cosignatures)
            if cur.set_range(_key(size)):
                for key in cur.iternext(values=False):
                    if key[:_U64] != _key(size):
                        break
                    count += 1
            raw = txn.get(b"published", db=self._meta)
            published = 0 if raw is None else int.from_bytes(raw, "big")
            if count >= quorum and size > published:
                txn.put(b"published", _key(size), db=self._meta)
                published = size
            return published

    @_growing
    def append_batch(
        self, batch: Sequence[bytes], sign: Callable[[Checkpoint], bytes]
    ) -> tuple[int, bytes]:
        """Append entries and a checkpoint signed over the result, durably, in one transaction.

        Returns the index of the first entry and the signed checkpoint note. ``sign`` is called
        inside the transaction: if it fails, nothing is written.
        """
        if not batch:
            raise UsageError("empty batch")
        with self._write_lock, self._write() as txn:
            size = self._size(txn)
            frontier = Frontier.load(size, _TxnHashReader(txn, self._hashes))
            new_hashes: list[bytes] = []
            for data in batch:
                new_hashes += frontier.append(data)
            new_size = size + len(batch)
            note = sign(Checkpoint(self.origin, new_size, frontier.tree_hash()))
            txn.cursor(db=self._entries).putmulti(
                ((_key(size + i), data) for i, data in enumerate(batch)), append=True
            )
            first = tlog.stored_hash_index(0, size)
            txn.cursor(db=self._hashes).putmulti(
                ((_key(first + i), h) for i, h in enumerate(new_hashes)), append=True
            )
            txn.put(_key(new_size), note, db=self._checkpoints, append=True)
            txn.put(b"size", _key(new_size), db=self._meta)
            if self._entry_key is not None:
                self._put_digests(txn, size, batch, self._entry_key)
        return size, note
