"""A witness's full, verified mirror of the log.

The mirror is a ``LogStore`` of its own (entries, stored hashes, the log's signed checkpoints)
in the witness's data directory. To advance it to a checkpoint the log signed, the witness
fetches the missing entries from the log's entry bundles and appends them; the root is
recomputed from the mirror's own hashes inside the write transaction, and the transaction
stores the log's signature only if that root equals the checkpoint's. A log that signs a
checkpoint its entries do not produce, or two checkpoints that do not extend each other, is
caught here, and nothing of it is stored. Because the mirror holds every entry, the log's data
survives the loss of the log server.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from logserver.core import note, tiles
from logserver.core.checkpoint import Checkpoint
from logserver.core.errors import VerificationError
from logserver.storage import LogStore

# Fetches the bytes of one entry bundle (a tiles.Tile at ENTRIES_LEVEL) from the log, such as
# logserver.client.LogClient.tile.
BundleFetcher = Callable[[tiles.Tile], bytes]

MAX_CATCH_UP = 1 << 20  # entries fetched and appended in one step


class Mirror:
    """A verified copy of the log, advanced one log-signed checkpoint at a time."""

    def __init__(self, path: Path, log_verifier: note.Verifier, fetch: BundleFetcher) -> None:
        self.store = LogStore(path, log_verifier.name, metasync=False)
        self._verifier = log_verifier
        self._fetch = fetch
        self._lock = threading.Lock()

    def close(self) -> None:
        self.store.close()

    @property
    def size(self) -> int:
        return self.store.size()

    def root(self) -> bytes:
        """The root of the mirrored tree, recomputed from its own stored hashes."""
        return self.store.tree_hash(self.store.size())

    def open_checkpoint(self, signed: bytes) -> Checkpoint:
        """The checkpoint of a note that carries a valid signature by the log."""
        opened = note.open_note(signed, [self._verifier])
        cp = Checkpoint.parse(opened.text)
        if cp.origin != self._verifier.name:
            raise VerificationError(f"checkpoint origin {cp.origin!r} is not the log's")
        return cp

    def check(self, cp: Checkpoint) -> None:
        """Verify a checkpoint no larger than the mirror against the mirror's own tree."""
        if cp.size > self.store.size():
            raise VerificationError(f"the mirror has not reached size {cp.size}")
        if cp.size and self.store.tree_hash(cp.size) != cp.root_hash:
            raise VerificationError(
                f"the log's checkpoint of size {cp.size} does not match its own entries"
            )

    def advance(self, signed: bytes) -> Checkpoint:
        """Make the mirror hold every entry of a log-signed checkpoint, verified; return it."""
        cp = self.open_checkpoint(signed)
        with self._lock:
            size = self.store.size()
            if cp.size <= size:
                self.check(cp)
                return cp
            if cp.size - size > MAX_CATCH_UP:
                raise VerificationError(
                    f"the log is {cp.size - size} entries ahead; catch up in smaller steps"
                )
            entries = self._fetch_entries(size, cp.size)
            body = cp.to_bytes()

            def countersign(ours: Checkpoint) -> bytes:
                if ours.to_bytes() != body:
                    raise VerificationError(
                        f"the log's checkpoint of size {cp.size} does not match its entries"
                    )
                return signed

            self.store.append_batch(entries, countersign)
        return cp

    def _fetch_entries(self, start: int, end: int) -> list[bytes]:
        out: list[bytes] = []
        for bundle, skip in tiles.entry_bundle_plan(start, end):
            out.extend(tiles.decode_entry_bundle(self._fetch(bundle), bundle.width)[skip:])
        return out
