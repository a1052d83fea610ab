"""The log's state in one process (``LogService``) and what it is configured with.

One process owns the log: the ``LogService`` holds the LMDB store, the sequencer thread (the
store's only writer), the blob store, the witness bookkeeping and the metrics. Every route of
the HTTP API (the other modules of this package) is a short call into it. Nothing here knows
about routes; errors are raised as the exceptions of ``logserver.core.errors`` and answered
by the one table in ``logserver.http.errors``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from logserver import blobs
from logserver.batcher import ProtocolBatcher
from logserver.blobs import BlobStore
from logserver.core import note, proof, tiles
from logserver.core.checkpoint import Checkpoint
from logserver.core.cosignature import CosignatureVerifier
from logserver.core.errors import FormatError, UsageError, VerificationError
from logserver.http.growth import DEFAULT_MAX_WAITERS
from logserver.http.problems import ProblemError
from logserver.protocol.fold import protocol_config
from logserver.protocol.network import NetworkConfig
from logserver.protocol.rules import ProtocolViolation
from logserver.sequencer import Integrated, QueueFull, Sequencer
from logserver.storage import DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE, LogStore, StorageFull

if TYPE_CHECKING:
    from fastapi import FastAPI

MAX_ENTRY_SIZE = 65_535  # an entry bundle prefixes each entry with a uint16 length

EntryCheck = Callable[[bytes], None]
"""The log's admission policy: returns if an entry may be logged, raises the reason if not."""


def accept_any(entry: bytes) -> None:
    """The ``--open`` policy: any entry of a valid size is logged."""


def accept_signed_notes(verifiers: list[note.Verifier]) -> EntryCheck:
    """Accept only entries that are signed notes carrying a signature by one of ``verifiers``."""

    def check(entry: bytes) -> None:
        note.open_note(entry, verifiers)

    return check


def note_text_key(entry: bytes) -> bytes:
    """What a log that accepts signed notes logs once: a note's text (SHA-256), whatever
    signature lines come with it, so that adding a line to a replayed note makes no new note.
    Bytes that are not a note (logged while the log was ``--open``) are keyed by themselves."""
    try:
        text, _ = note.split_note(entry)
    except FormatError:
        return hashlib.sha256(b"entry\n" + entry).digest()
    return hashlib.sha256(b"note text\n" + text).digest()


@dataclass
class LogConfig:
    """How to run one log: where its data lives, its key, what it accepts and how it batches.

    ``network`` makes the log publish only checkpoints a quorum of its witnesses cosigned, and
    takes blob uploads signed by its builders. Without a network, ``blob_signers`` are the keys
    whose ``X-Blob-Signature`` the log accepts (none: it takes no blob uploads), and
    ``deduplicate`` logs each note once (``note_text_key``; for a log that accepts signed
    notes: a replayed note is answered with the index it already has). ``extra_routes`` are
    called with the app and the service after every other route.
    """

    data_dir: Path
    signer: note.Signer
    check_entry: EntryCheck = accept_any
    blob_signers: tuple[note.Verifier, ...] = ()
    deduplicate: bool = False
    max_batch: int = 256
    max_delay: float = 0.002
    max_queue: int = 8192
    max_waiters: int = DEFAULT_MAX_WAITERS  # /latest-checkpoint requests waiting at once
    map_size: int = DEFAULT_MAP_SIZE  # the LMDB map to start with; it grows by itself ...
    max_map_size: int = DEFAULT_MAX_MAP_SIZE  # ... up to this, then new entries are 507
    network: NetworkConfig | None = None  # with witnesses: publish only cosigned checkpoints
    extra_routes: list[Callable[[FastAPI, LogService], None]] = field(default_factory=list)


class Metrics:
    """The log's Prometheus metrics, in a registry of their own (served at ``/metrics``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.appended = Counter("log_entries_appended", "Entries durably appended", registry=r)
        self.rejected = Counter(
            "log_entries_rejected", "Submissions refused", ["reason"], registry=r
        )
        self.batch_size = Histogram(
            "log_batch_size",
            "Entries per integrated batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.integration_seconds = Histogram(
            "log_integration_seconds", "Time to integrate one batch durably", registry=r
        )
        self.tree_size = Gauge("log_tree_size", "Entries in the log", registry=r)
        self.queue_depth = Gauge("log_queue_depth", "Submissions waiting", registry=r)
        self.published_size = Gauge(
            "log_published_size", "Size of the checkpoint clients are served", registry=r
        )
        self.cosignatures = Counter(
            "log_cosignatures_received", "Witness cosignatures accepted", registry=r
        )
        self.duplicates = Counter(
            "log_entries_duplicate", "Submissions answered with an earlier index", registry=r
        )
        self.failed_batches = Gauge(
            "log_batches_failed", "Batches refused because preparing them failed", registry=r
        )
        self.unloggable = Gauge(
            "log_due_entries_unloggable", "Due entries that cannot be logged", registry=r
        )

    def on_integrated(self, done: Integrated) -> None:
        """Sequencer listener: count one durable batch."""
        self.appended.inc(done.count)
        self.batch_size.observe(done.count)
        self.integration_seconds.observe(done.seconds)
        self.tree_size.set(done.first_index + done.count)


class LogService:
    """The log's state in one process: store, sequencer, signer and metrics."""

    def __init__(self, config: LogConfig) -> None:
        self.config = config
        self.origin = config.signer.name
        self.store = LogStore(
            config.data_dir,
            self.origin,
            config.map_size,
            max_map_size=config.max_map_size,
            entry_key=note_text_key if config.deduplicate else None,
        )
        self._in_flight: dict[bytes, asyncio.Future[int]] = {}  # digest -> its pending index
        self.metrics = Metrics()
        self.metrics.tree_size.set(self.store.size())
        self.protocol: ProtocolBatcher | None = None
        if config.network is not None and config.network.entries == "protocol":
            self.protocol = ProtocolBatcher(
                protocol_config(config.network), config.signer, self.store
            )
        self.sequencer = Sequencer(
            self.store,
            self._sign_checkpoint,
            max_batch=config.max_batch,
            max_delay=config.max_delay,
            max_queue=config.max_queue,
            batcher=self.protocol,
        )
        self.sequencer.add_listener(self.metrics.on_integrated)
        self.metrics.failed_batches.set_function(lambda: self.sequencer.failed_batches)
        if self.protocol is not None:
            protocol = self.protocol
            self.metrics.unloggable.set_function(lambda: len(protocol.unloggable))
        self.blobs = BlobStore(config.data_dir / "blobs")
        self.network = config.network
        self.witness_verifiers: dict[str, CosignatureVerifier] = {}
        self.builder_verifiers: dict[str, note.Verifier] = {}
        self.last_cosigned: dict[str, tuple[int, float]] = {}  # name -> (size, unix time)
        if self.network is not None:
            if self.network.log.vkey != config.signer.vkey:
                raise UsageError("the log's key is not the one the network config names")
            self.witness_verifiers = {
                w.name: CosignatureVerifier.from_vkey(w.vkey) for w in self.network.witnesses
            }
            self.builder_verifiers = {
                w.name: note.Verifier(w.name, w.public_key) for w in self.network.witnesses
            }

    def _sign_checkpoint(self, cp: Checkpoint) -> bytes:
        return note.sign_note(cp.to_bytes(), self.config.signer)

    def start(self) -> None:
        """Start the sequencer thread; the log takes entries from now on."""
        self.sequencer.start()

    def stop(self) -> None:
        """Integrate what is queued, stop the sequencer and close the store."""
        self.sequencer.stop()
        self.store.close()

    async def add_entry(self, entry: bytes) -> int:
        """Log ``entry`` if the log's policy accepts it; its index once it is durable.

        Raises what refuses it (``FormatError``, ``VerificationError``, ``ProtocolViolation``,
        ``QueueFull``, ``OperationalError``) and counts each refusal by reason. A log that
        ``deduplicate``s answers an entry it holds, or is about to hold, with that index.
        """
        rejected = self.metrics.rejected
        try:
            self.config.check_entry(entry)
        except (FormatError, VerificationError):
            rejected.labels("invalid").inc()
            raise
        if not self.config.deduplicate:
            return await self._submit(entry)
        digest = note_text_key(entry)
        known = self.store.index_of(digest)
        if known is not None:
            self.metrics.duplicates.inc()
            return known
        pending = self._in_flight.get(digest)
        if pending is not None:
            self.metrics.duplicates.inc()
            return await asyncio.shield(pending)
        pending = asyncio.ensure_future(self._submit(entry))
        self._in_flight[digest] = pending
        try:
            return await asyncio.shield(pending)
        finally:
            if pending.done():
                self._in_flight.pop(digest, None)
            else:  # the client left: forget the digest once the entry is durable
                pending.add_done_callback(lambda _: self._in_flight.pop(digest, None))

    async def _submit(self, entry: bytes) -> int:
        rejected = self.metrics.rejected
        try:
            release = self.store.reserve(len(entry))  # held until stored or refused
        except StorageFull:  # answered 507 while the sequencer still runs
            rejected.labels("storage-full").inc()
            raise
        try:
            fut = self.sequencer.submit(entry)
        except QueueFull:
            release()
            rejected.labels("queue-full").inc()
            raise
        except BaseException:
            release()
            raise
        fut.add_done_callback(lambda _: release())
        self.metrics.queue_depth.set(self.sequencer.queue_depth)
        try:
            return await asyncio.wrap_future(fut)
        except ProtocolViolation:  # a well-formed entry the build protocol refuses
            rejected.labels("protocol").inc()
            raise
        except (FormatError, VerificationError):
            rejected.labels("invalid").inc()
            raise

    def entry(self, index: int) -> bytes:
        """The entry at ``index``; ``UsageError`` if the log does not hold it yet."""
        if index >= self.store.size():
            raise UsageError(f"entry {index} is not in the log")
        return self.store.entry(index)

    def published_checkpoint(self) -> bytes | None:
        """The checkpoint clients should see: without witnesses the latest one the log signed;
        with witnesses the newest with a quorum of cosignatures, carrying all it has."""
        if self.network is None:
            return self.store.latest_checkpoint()
        size = self.store.published_size()
        signed = self.store.checkpoint_at(size) if size else None
        if signed is None:
            return None
        lines = self.store.cosignatures_at(size)
        return signed + b"".join(lines[name] for name in sorted(lines))

    def published_size(self) -> int:
        """The size of the tree ``published_checkpoint`` commits to."""
        if self.network is not None:
            return self.store.published_size()
        return self.store.size()

    def tile(self, path: str) -> tuple[bytes, bool]:
        """The tile at ``tile/<path>`` and whether it is full (and so never changes).

        Tiles are immutable, so they are served before witnessing too. ``FormatError`` for a
        malformed path, ``UsageError`` for a tile beyond the tree.
        """
        t = tiles.parse_tile_path("tile/" + path)
        size = self.store.size()
        present = tiles.tile_in_tree(t, size)
        if present is None or present.width < t.width:
            raise UsageError(f"tile {path} is beyond the tree of size {size}")
        if t.is_entries:
            start = t.n * tiles.TILE_WIDTH
            data = tiles.encode_entry_bundle(self.store.entries(start, start + t.width))
        else:
            data = self.store.tile_data(t)
        return data, t.width == tiles.TILE_WIDTH

    def tlog_proof(self, index: int) -> bytes:
        """A C2SP tlog-proof file for entry ``index`` under the published checkpoint."""
        cp = self.published_checkpoint()
        size = self.published_size()
        if cp is None or index >= size:
            raise UsageError(f"entry {index} is not covered by the published checkpoint")
        hashes = self.store.inclusion_proof(index, size)
        entry = self.store.entry(index)
        return proof.TlogProof(index, tuple(hashes), cp, extra=entry).to_bytes()

    def check_upload(self, name: str, signature_header: str) -> None:
        """Refuse a blob upload before its body is read: a bad name (``FormatError``), or no
        valid ``X-Blob-Signature`` by a key the log takes blobs from: a network's builders, or
        else ``blob_signers`` (the ``--accept`` keys). A log with neither takes no blobs."""
        blobs.check_name(name)
        if self.network is not None:
            keys = [self.builder_verifiers[b] for b in sorted(self.builder_verifiers)]
            self.check_blob_signature(name, signature_header, keys, "a network builder")
        elif self.config.blob_signers:
            keys = list(self.config.blob_signers)
            self.check_blob_signature(name, signature_header, keys, "a key the log accepts")
        else:
            raise ProblemError(403, "this log takes no blob uploads: it has no builders")

    @staticmethod
    def check_blob_signature(name: str, header: str, keys: list[note.Verifier], who: str) -> None:
        """An upload must carry ``X-Blob-Signature: <key name> <base64 sig>`` by one of
        ``keys`` over the blob's upload message (``ProblemError`` 403 otherwise)."""
        signer, _, encoded = header.partition(" ")
        named = [key for key in keys if key.name == signer]
        if not named:
            raise ProblemError(403, f"blob uploads need X-Blob-Signature by {who}")
        try:
            signature = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise ProblemError(403, "X-Blob-Signature is not base64") from None
        message = blobs.upload_message(name)
        if not any(key.verify(message, signature) for key in named):
            raise ProblemError(403, f"bad blob signature by {signer}")

    def blob(self, name: str) -> bytes:
        """The blob ``name``; ``FormatError`` for a bad name, ``UsageError`` if it is absent."""
        data = self.blobs.get(blobs.check_name(name))
        if data is None:
            raise UsageError(f"no blob {name}")
        return data

    def add_cosignatures(self, cosigned: bytes) -> int:
        """Take witnesses' cosignatures on a checkpoint this log signed; return the published
        size. The body is the checkpoint text with one or more cosignature lines."""
        assert self.network is not None
        text, _ = note.split_note(cosigned)
        size = Checkpoint.parse(text).size
        ours = self.store.checkpoint_at(size)
        if ours is None or note.split_note(ours)[0] != text:
            raise ProblemError(409, f"the log signed no such checkpoint of size {size}")
        opened = note.open_note(cosigned, self.witness_verifiers.values())
        lines = {sig.name: sig.to_line() for sig in opened.sigs}
        quorum = self.network.quorum
        published: int = self.sequencer.call(
            lambda: self.store.add_cosignatures(size, lines, quorum)
        ).result(30)
        now = time.time()
        for name in lines:
            if self.last_cosigned.get(name, (-1, 0.0))[0] <= size:
                self.last_cosigned[name] = (size, now)
        self.metrics.published_size.set(published)
        self.metrics.cosignatures.inc()
        return published

    def witness_health(self) -> dict[str, object]:
        """The quorum and, per witness, the last size it cosigned and when (``/witnesses``)."""
        if self.network is None:
            return {"quorum": 0, "witnesses": []}
        rows = []
        for w in self.network.witnesses:
            size, at = self.last_cosigned.get(w.name, (0, 0.0))
            rows.append({"name": w.name, "url": w.url, "last_size": size, "last_time": at})
        return {"quorum": self.network.quorum, "witnesses": rows}

    def prometheus(self) -> bytes:
        """The metrics in Prometheus' text format, with the queue depth read just now."""
        self.metrics.queue_depth.set(self.sequencer.queue_depth)
        return generate_latest(self.metrics.registry)
