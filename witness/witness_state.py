"""The witness's durable memory for add-checkpoint: the latest cosigned tree head per log.

One LMDB environment (``sync=True``), one table: key SHA-256(origin), value
``u64 big-endian size || 32-byte root || origin in UTF-8`` (the origin is kept to detect a
corrupt or mismatched record, which is an error, never a silent reset).

:meth:`WitnessState.check_and_persist` is the spec's atomic check-and-persist: it reads the
stored head, lets a pure ``decide`` function compare, and writes the accepted head, all in ONE
write transaction that is flushed to disk before it returns. Two racing requests from the same
old size are therefore serialised: the second sees the first one's head and gets a 409. The
caller releases a cosignature only after this returns, so a cosigned head survives SIGKILL and
power loss, and after a restart the witness still refuses a smaller size, another root at the
same size or an unproven extension.

Write transactions belong to one thread: the HTTP edge funnels every call through a
single-thread executor; a lock here keeps direct callers safe too.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import lmdb

from logserver.errors import OperationalError, UsageError
from witness.addcheckpoint import Accepted, Decision, TreeHead

DEFAULT_MAP_SIZE = 64 << 20  # about a million logs
_TABLE = b"add-checkpoint-heads-v1"
_HEAD = struct.Struct(">Q32s")


def _key(origin: str) -> bytes:
    return hashlib.sha256(origin.encode("utf-8")).digest()


def encode_head(origin: str, head: TreeHead) -> bytes:
    """The stored value of ``head`` for ``origin``."""
    return _HEAD.pack(head.size, head.root_hash) + origin.encode("utf-8")


def decode_head(origin: str, value: bytes) -> TreeHead:
    """Read a stored value back; a value that is not ``origin``'s is an OperationalError."""
    if len(value) < _HEAD.size or value[_HEAD.size :] != origin.encode("utf-8"):
        raise OperationalError(f"corrupt witness state record for log {origin!r}")
    size, root = _HEAD.unpack_from(value)
    try:
        return TreeHead(size, root)
    except UsageError as exc:
        raise OperationalError(f"corrupt witness state record for log {origin!r}: {exc}") from exc


class WitnessState:
    """The latest cosigned :class:`TreeHead` of every log this witness serves, in LMDB."""

    def __init__(self, path: Path, map_size: int = DEFAULT_MAP_SIZE) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._env = lmdb.open(
                str(path),
                map_size=map_size,
                max_dbs=2,
                max_readers=126,
                sync=True,
                metasync=True,
            )
            self._db = self._env.open_db(_TABLE)
        except (OSError, lmdb.Error) as exc:
            raise OperationalError(f"cannot open the witness state in {path}: {exc}") from exc
        self._write_lock = threading.Lock()

    def latest(self, origin: str) -> TreeHead | None:
        """The stored head of ``origin``, None if the witness never cosigned for it."""
        with self._env.begin(db=self._db) as txn:
            value = txn.get(_key(origin))
            return None if value is None else decode_head(origin, bytes(value))

    def check_and_persist(
        self, origin: str, decide: Callable[[TreeHead | None], Decision]
    ) -> Decision:
        """Run ``decide`` on the stored head and durably store an accepted new head, atomically.

        The new head is on disk (synchronous LMDB commit) when this returns an Accepted.
        """
        try:
            with self._write_lock, self._env.begin(write=True, db=self._db) as txn:
                value = txn.get(_key(origin))
                stored = None if value is None else decode_head(origin, bytes(value))
                decision = decide(stored)
                if isinstance(decision, Accepted):
                    if decision.submission.origin != origin:
                        raise OperationalError("decision for another log than the one locked")
                    if decision.new_head != stored:
                        txn.put(_key(origin), encode_head(origin, decision.new_head))
                return decision
        except lmdb.Error as exc:
            raise OperationalError(f"witness state write failed: {exc}") from exc

    def close(self) -> None:
        self._env.close()
