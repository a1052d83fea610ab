"""What a witness co-signed, per log origin: its one durable store of cosigned tree heads.

Both ways a witness co-signs go through this store: ``POST /add-checkpoint`` for other logs
(:meth:`CosignStore.check_and_persist`) and the node for its own network's log after consensus
commits a checkpoint (:meth:`CosignStore.claim_cosignature`). The own log's origin is reserved
from add-checkpoint (``WitnessedLogs.from_pairs(..., reserved=...)``), so each origin has one
writer of rules.

One LMDB environment (``sync=True``), one table: key SHA-256(origin), value
``u64 big-endian size || 32-byte root || origin in UTF-8`` (the origin is kept to detect a
corrupt or mismatched record, which is an error, never a silent reset).

Each update reads the stored head, lets a pure rule from witness/cosign/rules.py compare, and
writes the accepted head, all in ONE write transaction that is flushed to disk before it
returns. Two racing requests from the same old size are therefore serialised: the second sees
the first one's head and gets a 409. The caller releases a cosignature only after this
returns, so a cosigned head survives SIGKILL and power loss, and after a restart the witness
still refuses a smaller size, another root at the same size or an unproven extension.

Write transactions belong to one thread: the HTTP edge funnels every call through a
single-thread executor, the node calls from its consensus thread; a lock here serialises them,
so one store may be shared by both in one process (never open one directory twice).
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import lmdb

from logserver.core.checkpoint import Checkpoint
from logserver.core.errors import OperationalError, UsageError
from witness.cosign.rules import Decision, Rejected, TreeHead, decide_own_checkpoint

DEFAULT_MAP_SIZE = 64 << 20  # about a million logs
STORE_DIR = "cosigned"
"""The store's directory inside a witness node's data directory."""

# Named for its first user; kept so that an existing standalone witness's state stays readable.
_TABLE = b"add-checkpoint-heads-v1"
_HEAD = struct.Struct(">Q32s")

_Result = TypeVar("_Result")


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


class CosignStore:
    """The latest cosigned :class:`TreeHead` of every log this witness co-signs, in LMDB."""

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

        def step(stored: TreeHead | None) -> tuple[Decision, TreeHead | None]:
            decision = decide(stored)
            if isinstance(decision, Rejected):
                return decision, None
            if decision.submission.origin != origin:
                raise OperationalError("decision for another log than the one locked")
            return decision, decision.new_head

        return self._update(origin, step)

    def claim_cosignature(self, origin: str, checkpoint: Checkpoint) -> bool:
        """Record that ``checkpoint`` of the witness's own log ``origin`` is about to be co-signed.

        False if it adds nothing new (it is not co-signed again). Raises VerificationError for
        another log's checkpoint or one that conflicts with the stored head (see
        :func:`~witness.cosign.rules.decide_own_checkpoint`). The caller must also have
        checked that ``checkpoint`` extends the previous one (the node's mirror does). The new
        head is on disk when this returns True.
        """

        def step(stored: TreeHead | None) -> tuple[bool, TreeHead | None]:
            new_head = decide_own_checkpoint(origin, checkpoint, stored)
            return new_head is not None, new_head

        return self._update(origin, step)

    def _update(
        self, origin: str, step: Callable[[TreeHead | None], tuple[_Result, TreeHead | None]]
    ) -> _Result:
        """Read, decide and write ``origin``'s head in one synchronous write transaction.

        ``step`` gives its result and the head to store (None: keep the stored one); an
        exception it raises aborts the transaction.
        """
        try:
            with self._write_lock, self._env.begin(write=True, db=self._db) as txn:
                value = txn.get(_key(origin))
                stored = None if value is None else decode_head(origin, bytes(value))
                result, new_head = step(stored)
                if new_head is not None and new_head != stored:
                    txn.put(_key(origin), encode_head(origin, new_head))
                return result
        except lmdb.Error as exc:
            raise OperationalError(f"witness state write failed: {exc}") from exc

    def close(self) -> None:
        self._env.close()
