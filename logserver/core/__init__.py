"""The pure C2SP core: Merkle trees, tiles, signed notes, checkpoints, cosignatures, policies and
proof files, and the shared encodings (errors, canonical JSON).

Only the standard library and PyNaCl are imported here (a test checks it), so a verify-only
install (``pip install synchronicity``) carries all of it. Nothing in this package does I/O.

A worked example: a log of three entries, its signed checkpoint, and an inclusion proof.

>>> from logserver.core import checkpoint, note, tlog
>>> store = tlog.MemoryHashStore()
>>> for entry in (b"alpha", b"beta", b"gamma"):
...     _ = store.append_record(entry)
>>> root = store.tree_hash(3)
>>> log_key = note.Signer("example.com/log", bytes(32))
>>> signed = note.sign_note(checkpoint.Checkpoint("example.com/log", 3, root).to_bytes(), log_key)
>>> opened = note.open_note(signed, [log_key.verifier()])
>>> checkpoint.Checkpoint.parse(opened.text).size
3
>>> proof = tlog.prove_record(3, 1, store)
>>> tlog.check_record(proof, 3, root, 1, tlog.record_hash(b"beta"))  # raises if it fails
"""

__all__ = [
    "canonical_json",
    "checkpoint",
    "compact",
    "cosignature",
    "errors",
    "note",
    "policy",
    "proof",
    "tiles",
    "tlog",
]
