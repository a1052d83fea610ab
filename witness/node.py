"""The builder-witness node: drives the consensus core over HTTP and co-signs what commits.

One thread owns the ``Replica`` (the sans-I/O DiemBFT v4 core). It takes verified messages
from an inbox and timer expiries, and executes the actions the core returns, in order: a
``Persist`` is written to LMDB (synced) before anything after it runs, so no vote or timeout
leaves the node before the safety data that justifies it is durable. Messages go out through
one sender thread per peer; commits are recorded, checked against the witness's own mirror of
the log, claimed in the witness's cosign store (witness/cosign/store.py: never two roots for
one size, durable before the cosignature leaves), co-signed (cosignature/v1) and sent to the log.

The payload of a block is a checkpoint signed by the log: exactly the log's note, with only
the log's signature line and at most ``MAX_PAYLOAD_BYTES``. A watcher thread long-polls the
log for its latest checkpoint; the leader proposes it when it is new (and nothing when the log
is idle: the consensus core then only times out, ever more slowly). Every replica votes only
for a checkpoint whose entries its mirror holds and re-hashes to that root, that extends the
parent block's checkpoint, and whose new entries pass the entry check (the build protocol's
rules). A committed checkpoint the witness did not vote for (catch-up, or a state-sync jump
past pruned history) is checked the same way, from its own mirror, before it is co-signed.

No exception of one message, one action or one answer of the log stops a thread: each is
logged and counted, and a ``Persist`` that cannot be written only keeps the vote or timeout
that depended on it from leaving.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import nacl.bindings

from builder.build import build_crate
from builder.environment import EnvironmentOptions
from builder.envsource import BlobSource, UrlSource
from logserver.client import LogClient
from logserver.core import note
from logserver.core.checkpoint import Checkpoint
from logserver.core.cosignature import CosignatureSigner
from logserver.core.errors import OperationalError, SynchronicityError, VerificationError
from logserver.protocol.fold import protocol_config
from logserver.protocol.network import NetworkConfig
from logserver.storage import LogStore
from witness import consensus, envelope
from witness.consensus import crypto
from witness.cosign.store import CosignStore
from witness.mirror import Mirror
from witness.node_state import NodeState
from witness.validation import ProtocolValidator
from witness.worker import BuildWorker, SigningWriter

log = logging.getLogger(__name__)

# Checks the entries [start, end) of the mirror before a vote; the build protocol plugs in here.
EntryCheck = Callable[[LogStore, int, int], bool]
KEEP_ROUNDS = 1000  # blocks older than this many rounds are pruned (a setting: --keep-rounds)
MAX_PAYLOAD_BYTES = 4096  # a checkpoint note signed by the log alone is far smaller
WATCH_WAIT_MS = 5000  # the watcher's long poll of the log
_PAYLOAD_READY = (-1, b"")  # an inbox item: the log has a new checkpoint


def consensus_epoch(network: NetworkConfig) -> bytes:
    """The consensus network id: the network's id and a digest of its witnesses' current keys.

    Every consensus signature is over it, so a change of keys (spec/network.md, key epochs)
    starts a new consensus instance whose messages cannot be confused with the old one's; the
    log, the mirror and what was co-signed carry over.
    """
    keys = b"".join(w.public_key for w in network.witnesses)
    return network.network_id.encode() + b"#" + hashlib.sha256(keys).hexdigest()[:16].encode()


def accept_all_entries(store: LogStore, start: int, end: int) -> bool:
    return True


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


def _size_of(payload: bytes) -> int:
    return 0 if not payload else Checkpoint.parse(note.split_note(payload)[0]).size


@dataclass
class NodeStats:
    """Counters and sizes a node reports on ``/status`` and ``/metrics``."""

    commits: int = 0
    cosigned_size: int = 0
    committed_size: int = 0
    proposals: int = 0
    invalid_payloads: int = 0
    messages_in: int = 0
    messages_rejected: int = 0
    step_failures: int = 0


class PeerSender:
    """Sends envelopes to one peer from its own thread; a slow peer delays only itself."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") + "/consensus"
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=1024)
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"peer {url}")
        self.failures = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.send(None)

    def send(self, data: bytes | None) -> None:
        while True:
            try:
                self._queue.put_nowait(data)
                return
            except queue.Full:  # consensus tolerates loss: drop the oldest
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()

    def _run(self) -> None:
        with httpx.Client(timeout=2.0) as http:
            while (data := self._queue.get()) is not None:
                try:
                    http.post(self.url, content=data)
                except httpx.HTTPError:
                    self.failures += 1


class CosignatureSender:
    """Delivers the newest cosignature to the log, retrying until it is taken."""

    def __init__(self, client: LogClient) -> None:
        self._client = client
        self._pending: bytes | None = None
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="cosignatures")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def submit(self, cosigned: bytes) -> None:
        with self._cond:
            self._pending = cosigned
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stopped:
                    self._cond.wait()
                if self._stopped or self._pending is None:
                    return
                cosigned, self._pending = self._pending, None
            try:
                self._client.send_cosignature(cosigned)
            except OperationalError as e:
                log.warning("cosignature not delivered; retrying", extra={"error": str(e)})
                time.sleep(0.5)
                with self._cond:
                    if self._pending is None:
                        self._pending = cosigned


class WitnessNode:
    """One builder-witness of a network: consensus, its mirror of the log, and co-signing.

    ``data_dir`` holds the node's consensus data (``state/``) and mirror; ``cosigned`` is the
    witness's one store of cosigned tree heads, shared with its add-checkpoint endpoint in the
    same process. The node records its own log's checkpoints there before co-signing them; the
    caller opens and closes it (after :meth:`stop`).
    """

    def __init__(
        self,
        network: NetworkConfig,
        signer: CosignatureSigner,
        seed: bytes,
        data_dir: Path,
        *,
        cosigned: CosignStore,
        misbehave: str | None = None,
        keep_rounds: int = KEEP_ROUNDS,
        max_builds: int = 1,
        environment: EnvironmentOptions | None = None,
    ) -> None:
        self.network = network
        self.signer = signer
        names = [w.name for w in network.witnesses]
        if signer.name not in names:
            raise OperationalError(f"{signer.name} is not a witness of this network")
        self.index = names.index(signer.name)
        if network.witnesses[self.index].public_key != signer.public_key:
            raise OperationalError("the key does not match this witness in the network config")
        self.config = consensus.ConsensusConfig(
            network_id=consensus_epoch(network),
            replicas=tuple((w.name, w.public_key) for w in network.witnesses),
            f=network.f,
            base_timeout_ms=network.timeouts.round_ms,
            max_timeout_ms=network.timeouts.max_round_ms,
        )
        self._public_keys = tuple(key for _, key in self.config.replicas)
        self._secret = nacl.bindings.crypto_sign_seed_keypair(seed)[1]
        self.state = NodeState(data_dir / "state", self.config.network_id)
        if self.state.begin_epoch(self.config.network_id):
            log.warning("the witnesses' keys changed: consensus starts a new epoch")
        self.cosigned = cosigned
        self.log_client = LogClient(network.log.url, timeout=5.0)
        self.mirror = Mirror(
            data_dir / "mirror", note.Verifier.from_vkey(network.log.vkey), self.log_client.tile
        )
        self._committed_payload = self.state.committed_payload()
        self.stats = NodeStats(committed_size=_size_of(self._committed_payload))
        self._latest = self._committed_payload  # the newest checkpoint the watcher saw
        self._latest_lock = threading.Lock()
        self._entry_check: EntryCheck = accept_all_entries
        self._checked: Callable[[], int] = lambda: self.stats.committed_size
        self.worker: BuildWorker | None = None
        if network.entries == "protocol":
            validator = ProtocolValidator(
                protocol_config(network), self.mirror.store, self.stats.committed_size
            )
            self._entry_check = validator.check
            self._checked = lambda: validator.state.size
            self.writer = SigningWriter(
                LogClient(network.log.url, timeout=60.0),
                note.Signer(signer.name, seed),
                network.network_id,
            )
            self.worker = BuildWorker(
                signer.name,
                self.writer,
                self.mirror.store,
                data_dir / "worker",
                build_deadline_ms=network.builds.build_deadline_ms,
                reveal_deadline_ms=network.builds.reveal_deadline_ms,
                misbehave=misbehave,
                max_builds=max_builds,
                builders=tuple(names),  # for the host variations (builder.variation)
                build=functools.partial(
                    build_crate, environment=self._environment(environment or EnvironmentOptions())
                ),
            )
        cosigned_head = self.cosigned.latest(network.log.origin)
        self.stats.cosigned_size = 0 if cosigned_head is None else cosigned_head.size
        self.replica = consensus.Replica(
            self.config,
            crypto.ReplicaSigner(seed),
            self.state.safety(),
            self._validate,
            _now_ms(),
            propose=self._propose,
            anchor=self.state.anchor(),
            stored_blocks=self.state.stored_blocks(),
            keep_rounds=keep_rounds,
        )
        self._inbox: queue.Queue[tuple[int, bytes] | None] = queue.Queue(maxsize=4096)
        self._replay = envelope.ReplayGuard()
        self._replay_lock = threading.Lock()
        self._peers = {
            i: PeerSender(w.url) for i, w in enumerate(network.witnesses) if i != self.index
        }
        self._cosignatures = CosignatureSender(self.log_client)
        self._thread = threading.Thread(target=self._loop, daemon=True, name="consensus")
        self._watcher = threading.Thread(target=self._watch_log, daemon=True, name="log watcher")
        self._stopping = threading.Event()
        self._deadline = _now_ms()
        self._failed: Exception | None = None

    def _environment(self, options: EnvironmentOptions) -> EnvironmentOptions:
        """Where this builder gets a build environment it lacks: its own sources, then the
        network's (``environment_sources``), then the log's blob store (spec/builds.md 10)."""
        network = tuple(UrlSource(url) for url in self.network.environment_sources)
        blobs = BlobSource(self.writer.blob)
        return dataclasses.replace(options, sources=options.sources + network + (blobs,))

    # ----- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        if self.worker is not None:
            self.worker.start()
            self.worker.committed(self.stats.committed_size)
        for peer in self._peers.values():
            peer.start()
        self._cosignatures.start()
        self._thread.start()
        self._watcher.start()

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop(wait=5.0)  # its scanner reads the mirror, closed below
        self._stopping.set()
        self._inbox.put(None)
        self._thread.join(10)
        for peer in self._peers.values():
            peer.stop()
        self._cosignatures.stop()
        self.mirror.close()
        self.state.close()

    def threads(self) -> dict[str, bool]:
        """Every thread of the node by name, and whether it is running (for ``/readyz``)."""
        alive = {"consensus": self._failed is None and self._thread.is_alive()}
        alive[self._watcher.name] = self._watcher.is_alive()
        for peer in self._peers.values():
            alive[peer._thread.name] = peer._thread.is_alive()
        alive[self._cosignatures._thread.name] = self._cosignatures._thread.is_alive()
        if self.worker is not None:
            alive |= {f"worker {name}": up for name, up in self.worker.threads().items()}
        return alive

    @property
    def healthy(self) -> bool:
        return all(self.threads().values())

    # ----- inbound -----------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Take an envelope from the HTTP server: verified here, processed by the core."""
        self.stats.messages_in += 1
        try:
            env = envelope.open_envelope(
                self.config.network_id, data, self._public_keys, int(time.time() * 1000)
            )
        except SynchronicityError:
            self.stats.messages_rejected += 1
            raise
        with self._replay_lock:
            fresh = self._replay.first_time(data)
        if not fresh:
            self.stats.messages_rejected += 1
            raise VerificationError("a replayed envelope")
        try:
            self._inbox.put_nowait((env.sender, env.message))
        except queue.Full:
            raise OperationalError("the consensus inbox is full") from None

    # ----- the consensus thread ----------------------------------------------------------

    def _loop(self) -> None:
        try:
            self._execute(self.replica.start(_now_ms()))
            while True:
                wait = max(0, self._deadline - _now_ms()) / 1000
                try:
                    item = self._inbox.get(timeout=wait)
                except queue.Empty:
                    self._step(self.replica.on_timer)
                    continue
                if item is None:
                    return
                if item is _PAYLOAD_READY:
                    self._step(self.replica.on_payload_ready)
                    continue
                sender, message = item
                self._step(functools.partial(self.replica.on_bytes, sender, message))
        except Exception as e:  # only start-up can get here: every step is guarded below
            self._failed = e
            log.exception("the consensus thread stopped")

    def _step(self, step: Callable[[int], list[consensus.Action]]) -> None:
        """One input to the core and its actions; an exception is logged, never fatal."""
        try:
            self._execute(step(_now_ms()))
        except Exception:
            self.stats.step_failures += 1
            log.exception("a consensus step failed; going on")

    def _execute(self, actions: list[consensus.Action]) -> None:
        persisted = True
        for action in actions:
            try:
                if isinstance(action, consensus.Persist):
                    self.state.persist(action.state, action.blocks)
                elif isinstance(action, consensus.Send | consensus.Broadcast):
                    # Nothing may leave that a Persist before it failed to cover.
                    if persisted:
                        self._send(action)
                elif isinstance(action, consensus.CommitBlocks):
                    self._on_commit(action)
                else:
                    self._deadline = action.deadline_ms
            except Exception:
                if isinstance(action, consensus.Persist):
                    persisted = False
                self.stats.step_failures += 1
                log.exception("a consensus action failed", extra={"action": type(action).__name__})

    def _send(self, action: consensus.Send | consensus.Broadcast) -> None:
        sealed = self._seal(action.message)
        if isinstance(action, consensus.Send):
            if action.to in self._peers:
                self._peers[action.to].send(sealed)
        else:
            for peer in self._peers.values():
                peer.send(sealed)

    def _seal(self, message: consensus.Message) -> bytes:
        return envelope.seal(
            self.config.network_id,
            self.index,
            int(time.time() * 1000),
            message.to_bytes(),
            self._secret,
        )

    def _check_payload(self, payload: bytes) -> None:
        """A payload is the log's checkpoint note, bounded, with the log's signature alone:
        a leader cannot pad what every witness stores and relays."""
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise VerificationError(f"a payload of {len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
        _, signatures = note.split_note(payload)
        if len(signatures) != 1 or signatures[0].name != self.network.log.origin:
            raise VerificationError("a payload must carry the log's signature and no other")

    def _validate(self, parent_payload: bytes, payload: bytes) -> bool:
        if payload == parent_payload:
            return True  # an empty round: nothing new to check
        try:
            self._check_payload(payload)
            cp = self.mirror.advance(payload)  # fetches the entries, re-hashes the root
            parent_size = 0
            if parent_payload:
                parent = self.mirror.open_checkpoint(parent_payload)
                self.mirror.check(parent)
                parent_size = parent.size
            if cp.size < max(parent_size, self.stats.committed_size):
                raise VerificationError("the checkpoint is smaller than one already agreed")
            if not self._entry_check(self.mirror.store, parent_size, cp.size):
                raise VerificationError("new entries break the build protocol")
        except SynchronicityError as e:
            self.stats.invalid_payloads += 1
            log.warning("refusing to vote", extra={"reason": str(e)})
            return False
        return True

    # ----- the log watcher and proposals -------------------------------------------------

    def _watch_log(self) -> None:
        """Long-poll the log's latest checkpoint; wake the consensus thread when it grows."""
        backoff = 0.5
        while not self._stopping.is_set():
            with self._latest_lock:
                known = _size_of(self._latest)
            try:
                latest = self.log_client.latest_checkpoint(known, WATCH_WAIT_MS)
                size = 0 if latest is None else _size_of(latest)
            except Exception as e:  # noqa: BLE001 - down, or garbage: this loop must not die
                log.warning("cannot read the log's latest checkpoint", extra={"error": str(e)})
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            if latest is None or size <= known:
                continue
            with self._latest_lock:
                self._latest = latest
            with contextlib.suppress(queue.Full):  # a full inbox wakes the loop anyway
                self._inbox.put_nowait(_PAYLOAD_READY)

    def _propose(self, parent_payload: bytes, round_: int) -> bytes | None:
        """The log's newest checkpoint if it is newer than the parent's, else None (idle)."""
        with self._latest_lock:
            latest = self._latest
        try:
            if _size_of(latest) <= _size_of(parent_payload):
                return None
        except SynchronicityError:
            return None
        self.stats.proposals += 1
        return latest

    # ----- commits -----------------------------------------------------------------------

    def _on_commit(self, action: consensus.CommitBlocks) -> None:
        """Keep the anchor; check and co-sign the newest committed checkpoint."""
        self.stats.commits += len(action.blocks)
        payload = action.blocks[-1].block.payload
        fresh = bool(payload) and payload != self._committed_payload
        self.state.save_commit(action.proof, payload if fresh else None)
        if not fresh:
            return
        self._committed_payload = payload
        try:
            self._check_payload(payload)
            cp = self.mirror.advance(payload)
            # Committed leaves are certified: folded by the rules, not judged behind the clock.
            if cp.size > self._checked() and not self._entry_check(
                self.mirror.store, cp.size, cp.size
            ):
                raise VerificationError("committed entries break the build protocol")
        except SynchronicityError as e:
            # A quorum committed what this witness cannot verify: never co-sign it.
            log.error("committed checkpoint fails verification", extra={"reason": str(e)})
            return
        self.stats.committed_size = cp.size
        if self.worker is not None:
            self.worker.committed(cp.size)
        try:
            fresh = self.cosigned.claim_cosignature(self.network.log.origin, cp)
        except VerificationError as e:
            log.error("refusing to co-sign", extra={"reason": str(e)})
            return
        if fresh:
            self.stats.cosigned_size = cp.size
            self._cosignatures.submit(note.sign_note(cp.to_bytes(), self.signer))

    def status(self) -> dict[str, object]:
        """What ``GET /status`` shows."""
        return {
            "name": self.signer.name,
            "index": self.index,
            "round": self.replica.round,
            "committed_height": self.replica.committed_height,
            "committed_size": self.stats.committed_size,
            "cosigned_size": self.stats.cosigned_size,
            "mirror_size": self.mirror.size,
            "mirror_root": base64.b64encode(self.mirror.root()).decode(),
            "healthy": self.healthy,
        } | (
            {}
            if self.worker is None
            else {"builds": {"running": self.worker.running(), "max": self.worker.max_builds}}
        )
