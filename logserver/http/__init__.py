"""The log's HTTP server: one process that owns a log and serves its API and dashboard.

The package, from the inside out:

- ``service``: ``LogService``, the log's state in one process (LMDB store, sequencer thread,
  blob store, witness bookkeeping, metrics), configured by a ``LogConfig``;
- ``errors``: the one table from exception to HTTP status and headers;
- ``problems``: RFC 9457 problem+json answers and a size-limited body reader;
- ``entries``, ``tiles``, ``proofs``, ``blobs``, ``witnesses``, ``crates``, ``ops``: the routes, one
  module per concern, each a few handlers that call the service and write out its answer;
- ``app``: ``create_app(service)``, which puts them (and the dashboard) on a FastAPI app.

Serving a log (one process and one uvicorn worker: the sequencer is the store's only
writer)::

    from pathlib import Path

    import uvicorn

    from logserver.core import note
    from logserver.http import LogConfig, LogService, accept_any, create_app

    private, vkey = note.generate_key("example.test/log")  # keep ``private`` secret
    signer = note.Signer.from_private_key(private)
    service = LogService(LogConfig(Path("log-data"), signer, check_entry=accept_any))
    service.start()  # the sequencer thread
    try:
        uvicorn.run(create_app(service), host="127.0.0.1", port=8080, lifespan="off")
    finally:
        service.stop()  # integrate what is queued, close the store

``synchronicity log serve`` does the same from the command line (``synchronicity/cmd_log.py``).
"""

from logserver.http.app import create_app
from logserver.http.service import (
    EntryCheck,
    LogConfig,
    LogService,
    Metrics,
    accept_any,
    accept_signed_notes,
)

__all__ = [
    "EntryCheck",
    "LogConfig",
    "LogService",
    "Metrics",
    "accept_any",
    "accept_signed_notes",
    "create_app",
]
