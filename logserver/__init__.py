"""The append-only log: its pure core, the build protocol, storage, sequencer, HTTP API, client.

Subpackages and modules, each with one concern:

- :mod:`logserver.core` — the pure C2SP core (Merkle trees, tiles, signed notes, checkpoints,
  cosignatures, policies, proof files) and shared encodings; standard library and PyNaCl only;
- :mod:`logserver.protocol` — the build protocol, pure: entries, rules, fold, the network
  config, verdict proofs;
- :mod:`logserver.storage` (LMDB), :mod:`logserver.sequencer` (the single writer),
  :mod:`logserver.batcher` (the protocol's side of each batch), :mod:`logserver.blobs`;
- :mod:`logserver.http` — the HTTP API; :mod:`logserver.dashboard` — the HTML pages;
- :mod:`logserver.client` — the one HTTP client of a log.

Nothing here imports ``witness``, ``builder`` or ``synchronicity`` (a test checks it).

A worked example: two entries appended durably in one batch, with a signed checkpoint.

>>> import tempfile, pathlib
>>> from logserver.core import checkpoint, note
>>> from logserver.storage import LogStore
>>> key = note.Signer("example.com/log", bytes(32))
>>> store = LogStore(pathlib.Path(tempfile.mkdtemp()), "example.com/log")
>>> first, signed = store.append_batch([b"hello", b"world"],
...                                    lambda cp: note.sign_note(cp.to_bytes(), key))
>>> (first, store.size(), checkpoint.Checkpoint.parse(note.split_note(signed)[0]).size)
(0, 2, 2)
>>> store.close()
"""

__all__ = [
    "batcher",
    "blobs",
    "client",
    "core",
    "dashboard",
    "fsutil",
    "http",
    "logs",
    "protocol",
    "sequencer",
    "storage",
]
