"""A witness node's durable consensus data in LMDB: safety state, anchor, committed payloads.

Every write is a synchronous LMDB transaction, so when a method returns the data is on disk:
the node persists the safety state before any vote or timeout leaves it. What the witness
co-signed is not here but in witness/cosign/store.py, the one store of cosigned tree heads
(its own log's and other logs').
"""

from __future__ import annotations

from pathlib import Path

import lmdb

from logserver.core.errors import OperationalError
from witness.consensus import SafetyState


class NodeState:
    """The consensus core's safety state, the last committed block and committed payloads."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        try:
            self._env = lmdb.open(
                str(path / "witness.lmdb"), map_size=1 << 32, max_dbs=4, sync=True
            )
        except lmdb.Error as e:
            raise OperationalError(f"cannot open the witness state in {path}: {e}") from e
        self._meta = self._env.open_db(b"meta")
        self._committed = self._env.open_db(b"committed")

    def close(self) -> None:
        self._env.close()

    def safety(self) -> SafetyState | None:
        with self._env.begin() as txn:
            raw = txn.get(b"safety", db=self._meta)
        return None if raw is None else SafetyState.from_bytes(bytes(raw))

    def persist_safety(self, state: SafetyState) -> None:
        with self._env.begin(write=True) as txn:
            txn.put(b"safety", state.to_bytes(), db=self._meta)

    def record_commit(self, height: int, payload: bytes) -> None:
        with self._env.begin(write=True) as txn:
            txn.put(height.to_bytes(8, "big"), payload, db=self._committed)

    def save_anchor(self, height: int, block: bytes) -> None:
        """The last committed block, so that a restart need not fetch history from genesis."""
        with self._env.begin(write=True) as txn:
            txn.put(b"anchor", height.to_bytes(8, "big") + block, db=self._meta)

    def anchor(self) -> tuple[int, bytes] | None:
        with self._env.begin() as txn:
            raw = txn.get(b"anchor", db=self._meta)
        if raw is None:
            return None
        raw = bytes(raw)
        return int.from_bytes(raw[:8], "big"), raw[8:]

    def last_commit(self) -> tuple[int, bytes] | None:
        with self._env.begin() as txn:
            cur = txn.cursor(db=self._committed)
            if not cur.last():
                return None
            return int.from_bytes(cur.key(), "big"), bytes(cur.value())
