"""Co-signing checkpoints: the rules, the one durable store of what was co-signed, and HTTP.

A witness co-signs a checkpoint only once it durably remembers it, so that it never signs two
roots for one size, nor a smaller tree after a larger one, whatever crashes in between. Two
ways lead there, and one :class:`CosignStore` (one LMDB environment a process) serves both:

- ``POST /add-checkpoint`` for other logs (c2sp.org/tlog-witness, spec/add-checkpoint.md):
  :func:`prepare` does the checks that need no state, :func:`decide` compares with the stored
  tree head inside :meth:`CosignStore.check_and_persist`, :func:`cosignature_lines` makes the
  200 body; :class:`AddCheckpointHandler`, :func:`add_routes` and :func:`create_app` serve it.
- the node's own log, after consensus commits a checkpoint:
  :meth:`CosignStore.claim_cosignature`, under the rule :func:`decide_own_checkpoint`.

Modules: ``rules`` (pure, no I/O), ``store`` (LMDB) and ``http`` (FastAPI).

A witness of ``example.com/log`` co-signs that log's first checkpoint::

    >>> import tempfile, time
    >>> from pathlib import Path
    >>> from logserver.core.checkpoint import Checkpoint
    >>> from logserver.core.cosignature import CosignatureSigner
    >>> from logserver.core.note import Signer, sign_note
    >>> log_key = Signer("example.com/log", bytes(32))
    >>> witness_key = CosignatureSigner("witness.example", bytes([1]) * 32)
    >>> logs = WitnessedLogs.from_pairs([("example.com/log", log_key.vkey)])
    >>> store = CosignStore(Path(tempfile.mkdtemp()))
    >>> checkpoint = Checkpoint("example.com/log", 3, bytes(range(32)))
    >>> submission = prepare(b"old 0\\n\\n" + sign_note(checkpoint.to_bytes(), log_key), logs)
    >>> decision = store.check_and_persist(
    ...     submission.origin, lambda stored: decide(submission, stored)
    ... )
    >>> decision.new_head == store.latest("example.com/log") == TreeHead(3, bytes(range(32)))
    True
    >>> body = cosignature_lines(submission.checkpoint_text, [witness_key], int(time.time()))

and the same store keeps its node from co-signing its own log twice at one size::

    >>> mine = Checkpoint("example.net/network-log", 5, bytes(32))
    >>> store.claim_cosignature("example.net/network-log", mine)  # new: persisted, co-sign it
    True
    >>> store.claim_cosignature("example.net/network-log", mine)  # nothing new
    False
    >>> other_root = Checkpoint("example.net/network-log", 5, bytes([7]) * 32)
    >>> store.claim_cosignature("example.net/network-log", other_root)
    Traceback (most recent call last):
    ...
    logserver.core.errors.VerificationError: refusing a second root for size 5
"""

from __future__ import annotations

from witness.cosign.http import AddCheckpointHandler, add_routes, create_app
from witness.cosign.rules import (
    Accepted,
    Decision,
    Rejected,
    Status,
    Submission,
    TreeHead,
    WitnessedLogs,
    cosignature_lines,
    decide,
    decide_own_checkpoint,
    prepare,
    process,
)
from witness.cosign.store import CosignStore

__all__ = [
    "Accepted",
    "AddCheckpointHandler",
    "CosignStore",
    "Decision",
    "Rejected",
    "Status",
    "Submission",
    "TreeHead",
    "WitnessedLogs",
    "add_routes",
    "cosignature_lines",
    "create_app",
    "decide",
    "decide_own_checkpoint",
    "prepare",
    "process",
]
