"""The append-only log: Merkle core, signed notes, formats, storage, sequencer and HTTP API.

The pure modules (``tlog``, ``tiles``, ``note``, ``checkpoint``, ``cosignature``, ``proof``,
``policy``) do no I/O and depend only on the standard library and PyNaCl, so an offline
verifier can import them without the server's dependencies.
"""
