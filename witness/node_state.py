"""A witness node's durable consensus data in LMDB: safety state, stored blocks, anchor, commit.

What the consensus core asks a driver to keep (spec/consensus.md, "Persistence order"):

- the safety state (last voted round, highest QC, last timeout round, highest TC), written
  together with the blocks of the same ``Persist`` in ONE synchronous transaction, before the
  vote or timeout that depends on it leaves the node;
- the anchor: the proof of the last commit; each new anchor drops the stored blocks at or
  below it, so the store holds only the blocks above the last commit (bounded by pruning);
- the last committed payload (the checkpoint the witness last acted on). Only the last one is
  kept: a long-lived network must not grow this store with every commit;
- the consensus epoch the data belongs to (the consensus network id, which names the key set):
  after a key change the consensus data of the old epoch is of no use (its certificates are
  signed by old keys) and is dropped, while the committed payload stays.

When the memory map fills up, it is grown (doubled, up to ``max_map_size``) and the write is
retried; a write that still cannot be made raises OperationalError and the caller must not
let the vote that depended on it leave. What the witness co-signed is not here but in
witness/cosign/store.py (its own log's and other logs').
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb

from logserver.core.errors import FormatError, OperationalError
from witness.consensus import CommittedBlock, SafetyState
from witness.consensus.encoding import Reader, Writer
from witness.consensus.types import Block, CommitProof

INITIAL_MAP_SIZE = 64 << 20
MAX_MAP_SIZE = 64 << 30
_ANCHOR_PROOF = b"P"  # an anchor stored as a CommitProof (older versions: u64 height + block)


def _block_key(block: Block) -> bytes:
    return block.round.to_bytes(8, "big") + block.id


class NodeState:
    """The consensus core's durable data for one witness node (one writer: its thread)."""

    def __init__(
        self,
        path: Path,
        network_id: bytes,
        *,
        map_size: int = INITIAL_MAP_SIZE,
        max_map_size: int = MAX_MAP_SIZE,
    ) -> None:
        path.mkdir(parents=True, exist_ok=True)
        try:
            self._env = lmdb.open(str(path / "witness.lmdb"), map_size=map_size, max_dbs=4)
        except lmdb.Error as e:
            raise OperationalError(f"cannot open the witness state in {path}: {e}") from e
        self._network_id = network_id
        self._max_map_size = max(max_map_size, map_size)
        self._meta = self._env.open_db(b"meta")
        self._blocks = self._env.open_db(b"blocks")
        self._legacy_commits = self._env.open_db(b"committed")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._env.close()

    # ----- writes ------------------------------------------------------------------------

    def _write(self, fn: Callable[[Any], None]) -> None:
        """Run ``fn`` in one synchronous write transaction, growing the map when it is full."""
        with self._lock:
            while True:
                try:
                    with self._env.begin(write=True) as txn:
                        fn(txn)
                    return
                except lmdb.MapFullError:
                    size = self._env.info()["map_size"]
                    if size >= self._max_map_size:
                        raise OperationalError(
                            f"the witness state is full ({size} bytes, the maximum)"
                        ) from None
                    self._env.set_mapsize(min(2 * size, self._max_map_size))
                except lmdb.Error as e:
                    raise OperationalError(f"cannot write the witness state: {e}") from e

    def persist(self, state: SafetyState, blocks: tuple[Block, ...] = ()) -> None:
        """The safety state and the blocks of one ``Persist``, durable together."""

        def write(txn: Any) -> None:
            txn.put(b"safety", state.to_bytes(), db=self._meta)
            for block in blocks:
                out = Writer()
                block.encode(out)
                txn.put(_block_key(block), out.getvalue(), db=self._blocks)

        self._write(write)

    def save_commit(self, proof: CommitProof | None, payload: bytes | None) -> None:
        """A new anchor (dropping the blocks it covers) and, if given, the committed payload."""

        def write(txn: Any) -> None:
            if proof is not None:
                txn.put(b"anchor", _ANCHOR_PROOF + proof.to_bytes(), db=self._meta)
                floor = (proof.block.round + 1).to_bytes(8, "big")
                cursor = txn.cursor(db=self._blocks)
                if cursor.first():
                    while cursor.key() < floor:
                        if not cursor.delete():
                            break
            if payload is not None:
                txn.put(b"committed", payload, db=self._meta)
                txn.drop(self._legacy_commits, delete=False)

        self._write(write)

    def begin_epoch(self, epoch: bytes) -> bool:
        """Make ``epoch`` current; True if the data of another epoch was dropped for it."""
        with self._env.begin() as txn:
            current = txn.get(b"epoch", db=self._meta)
        if current is not None and bytes(current) == epoch:
            return False

        def write(txn: Any) -> None:
            if current is not None:
                for key in (b"safety", b"anchor"):
                    txn.delete(key, db=self._meta)
                txn.drop(self._blocks, delete=False)
            txn.put(b"epoch", epoch, db=self._meta)

        self._write(write)
        return current is not None

    # ----- reads -------------------------------------------------------------------------

    def safety(self) -> SafetyState | None:
        with self._env.begin() as txn:
            raw = txn.get(b"safety", db=self._meta)
        return None if raw is None else SafetyState.from_bytes(bytes(raw))

    def anchor(self) -> CommitProof | CommittedBlock | None:
        """The last commit's proof (or, as an older version kept it, the block and height)."""
        with self._env.begin() as txn:
            raw = txn.get(b"anchor", db=self._meta)
        if raw is None:
            return None
        data = bytes(raw)
        if data[:1] == _ANCHOR_PROOF:
            return CommitProof.from_bytes(data[1:], self._network_id)
        if len(data) < 8:
            raise FormatError("witness anchor", "truncated")
        reader = Reader(data[8:], "witness anchor")
        block = Block.decode(reader, self._network_id)
        reader.end()
        return CommittedBlock(int.from_bytes(data[:8], "big"), block)

    def stored_blocks(self) -> list[Block]:
        """The blocks kept above the anchor, in round order."""
        out: list[Block] = []
        with self._env.begin() as txn:
            for _, value in txn.cursor(db=self._blocks):
                reader = Reader(bytes(value), "stored block")
                out.append(Block.decode(reader, self._network_id))
                reader.end()
        return out

    def committed_payload(self) -> bytes:
        """The last committed payload the node acted on (empty before the first)."""
        with self._env.begin() as txn:
            raw = txn.get(b"committed", db=self._meta)
            if raw is not None:
                return bytes(raw)
            cursor = txn.cursor(db=self._legacy_commits)  # an older version kept them all
            return bytes(cursor.value()) if cursor.last() else b""

    @property
    def map_size(self) -> int:
        return int(self._env.info()["map_size"])
