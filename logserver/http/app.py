"""The log's FastAPI app: ``create_app(service)`` puts the route modules together.

Each route module (``entries``, ``tiles``, ``witnesses``, ``blobs``, ``proofs``, ``crates``,
``ops``) registers a few short handlers that call into the ``LogService`` and write out what it
returns; the errors they raise are answered in one place (``logserver.http.errors``). Bad
input is a problem+json 4xx; a 5xx means the server itself is broken or busy.
"""

from __future__ import annotations

from fastapi import FastAPI

from logserver.dashboard.routes import add_dashboard
from logserver.http import blobs, crates, entries, ops, proofs, tiles, witnesses
from logserver.http.errors import install_error_handlers
from logserver.http.service import LogService


def create_app(service: LogService) -> FastAPI:
    """The log's HTTP API over ``service``, then its dashboard, then ``extra_routes``."""
    app = FastAPI(title="Synchronicity log", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    install_error_handlers(app)
    for routes in (entries, tiles, witnesses, blobs, proofs, crates, ops):
        routes.add_routes(app, service)
    add_dashboard(app, service)
    for add_routes in service.config.extra_routes:
        add_routes(app, service)
    return app
