"""The witness node's HTTP API: consensus messages in, status, health and metrics out.

``POST /consensus`` takes one signed envelope (witness/envelope.py) from another witness of the
network; ``POST /add-checkpoint`` is the C2SP tlog-witness endpoint for other logs. ``POST
/request`` (a recipe to build) and ``PUT /crate/<sha256>`` (a local ``.crate`` for one) are
admitted by ``witness.admission.RequestGate``: rate-limited per client, a crates.io recipe
checked against the index, a local one or an upload signed by a requester of the network,
each job logged once, the jobs waiting for a verdict bounded. Who may call what, with which
bound, is the table in spec/api.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator

from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from builder import recipe as recipes
from logserver.blobs import check_name
from logserver.core.errors import FormatError, OperationalError, VerificationError
from logserver.http.errors import Answer, answering, answers
from logserver.http.problems import ProblemError, install_handlers, problem, read_body
from logserver.protocol.entries import MAX_REQUEST_RECIPE_BYTES
from logserver.protocol.entries import Request as BuildRequest
from logserver.protocol.requester import REQUEST_SIGNATURE_HEADER
from witness.admission import RequestGate, RequestLimits
from witness.cosign.http import AddCheckpointHandler, add_routes
from witness.envelope import MAX_MESSAGE
from witness.node import WitnessNode
from witness.worker import SigningWriter

# The shared table's answers (logserver/http/errors.py), with this node's own for its
# environment failing: a busy or failing node asks the peer to retry soon; a failure of the
# log behind this builder is a bad gateway.
_UPSTREAM: dict[type[Exception], Answer] = {OperationalError: Answer(502)}
_CONSENSUS = answers(FormatError, VerificationError) | {
    OperationalError: Answer(503, retry_after=1)
}
_BUILD_REQUEST = answers(FormatError) | _UPSTREAM


class _NodeCollector(Collector):
    def __init__(self, node: WitnessNode) -> None:
        self._node = node

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        node = self._node
        gauges = {
            "witness_round": ("Current consensus round", node.replica.round),
            "witness_committed_height": ("Committed blocks", node.replica.committed_height),
            "witness_committed_size": ("Log size last committed", node.stats.committed_size),
            "witness_cosigned_size": ("Log size last co-signed", node.stats.cosigned_size),
            "witness_mirror_size": ("Entries in the mirror", node.mirror.size),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=value)
        counters = {
            "witness_proposals": ("Blocks proposed", node.stats.proposals),
            "witness_commits": ("Blocks committed", node.stats.commits),
            "witness_invalid_payloads": ("Proposals refused", node.stats.invalid_payloads),
            "witness_messages_in": ("Envelopes received", node.stats.messages_in),
            "witness_messages_rejected": ("Envelopes refused", node.stats.messages_rejected),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=value)
        if node.worker is not None:
            builds = CounterMetricFamily("witness_builds", "Builds by outcome", labels=["outcome"])
            builds.add_metric(["ok"], node.worker.stats["builds_ok"])
            builds.add_metric(["failed"], node.worker.stats["builds_failed"])
            yield builds
            yield GaugeMetricFamily(
                "witness_last_build_seconds",
                "Wall time of the last build",
                value=node.worker.stats["last_build_seconds"],
            )
            yield GaugeMetricFamily(
                "witness_builds_running",
                "Builds and diffs running now",
                value=node.worker.running(),
            )
            yield GaugeMetricFamily(
                "witness_max_builds",
                "Builds and diffs that may run at once (witness run --max-builds)",
                value=node.worker.max_builds,
            )
            yield CounterMetricFamily(
                "witness_build_seconds",
                "Wall time spent in builds and diffs, summed over all of them",
                value=node.worker.stats["build_seconds"],
            )
        events = CounterMetricFamily(
            "witness_consensus_events", "Consensus core events by kind", labels=["kind"]
        )
        for kind, count in sorted(node.replica.stats.items()):
            events.add_metric([kind], count)
        yield events


def create_app(
    node: WitnessNode,
    add_checkpoint: AddCheckpointHandler | None = None,
    limits: RequestLimits | None = None,
) -> FastAPI:
    """The witness's API over ``node``; ``limits`` bound its build requests and uploads."""
    app = FastAPI(title="Synchronicity witness", docs_url=None, redoc_url=None, openapi_url=None)
    if add_checkpoint is not None:
        add_routes(app, add_checkpoint)  # the C2SP tlog-witness endpoint, for other logs
    registry = CollectorRegistry()
    registry.register(_NodeCollector(node))

    install_handlers(app)

    @app.post("/consensus")
    async def consensus_message(request: Request) -> Response:
        try:
            data = await read_body(request, MAX_MESSAGE + 1024)
        except ClientDisconnect:  # a peer died mid-request: nothing to answer
            return Response(status_code=204)
        with answering(_CONSENSUS):
            node.receive(data)
        return Response(status_code=204)

    if node.worker is not None:
        gate = RequestGate(node.network, node.mirror.store, node.log_client, limits)
        _add_build_routes(app, node.writer, gate)
    else:

        @app.post("/request")
        async def no_requests() -> Response:
            return problem(404, "this network's log takes no build requests")

        @app.put("/crate/{sha256}")
        async def no_crates(sha256: str) -> Response:
            return problem(404, "this network's log takes no build requests")

    @app.get("/status")
    async def status() -> Response:
        return Response(json.dumps(node.status()).encode(), media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status": "ok"}', media_type="application/json")

    @app.get("/readyz")
    async def readyz() -> Response:
        """Ready while every thread of the node runs; 503 naming those that do not."""
        threads = node.threads()
        dead = sorted(name for name, alive in threads.items() if not alive)
        if dead:
            return problem(503, f"not running: {', '.join(dead)}", threads=threads)
        body = json.dumps({"status": "ready", "threads": threads}).encode()
        return Response(body, media_type="application/json")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def _add_build_routes(app: FastAPI, node_writer: SigningWriter, gate: RequestGate) -> None:
    """``POST /request`` and ``PUT /crate/<sha256>`` of a builder, admitted by ``gate``."""

    @app.post("/request")
    async def request_build(request: Request) -> Response:
        """Anyone may ask for a crates.io release; a local recipe needs a requester."""
        gate.take_token(_client(request))
        signed = gate.requester(request.headers.get(REQUEST_SIGNATURE_HEADER))
        body = await read_body(request, recipes.MAX_RECIPE_BYTES)
        if signed is not None:
            gate.check_signed(signed, "POST", "/request", body, "a signed request")
        with answering(_BUILD_REQUEST):
            recipe = recipes.from_json(body)
        if len(body) > MAX_REQUEST_RECIPE_BYTES:
            raise ProblemError(
                413,
                f"the recipe ({len(body)} bytes) is too large for a request leaf: at most "
                f"{MAX_REQUEST_RECIPE_BYTES} bytes, as a request entry carries its recipe",
            )
        if recipe.source == recipes.SOURCE_LOCAL and signed is None:
            gate.check_signed(None, "POST", "/request", body, "a build of a local crate")  # 401
        if (index := await gate.existing(recipe.job_id)) is None:
            await gate.check_index(recipe)
            entry = BuildRequest(recipe.to_value())
            with answering(_UPSTREAM):
                admitted = await gate.request(entry.job, lambda: node_writer.add_entry(entry))
            job, index, existing = admitted.job, admitted.index, admitted.existing
        else:
            job, existing = recipe.job_id, True
        doc = {"job": job, "index": index, "existing": existing}
        return Response(json.dumps(doc).encode(), media_type="application/json")

    @app.put("/crate/{sha256}")
    async def upload_crate(sha256: str, request: Request) -> Response:
        """A requester hands over a local .crate; this builder stores it in the log's blobs."""
        gate.take_token(_client(request))
        with answering(_BUILD_REQUEST):
            check_name(sha256)
        signed = gate.requester(request.headers.get(REQUEST_SIGNATURE_HEADER))
        path = f"/crate/{sha256}"
        if signed is None:
            gate.check_signed(None, "PUT", path, b"", "uploading a crate")
        data = await read_body(request, gate.limits.max_crate_bytes)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ProblemError(400, "the crate's SHA-256 is not the one named")
        gate.check_signed(signed, "PUT", path, data, "uploading a crate")
        with answering(_UPSTREAM):
            await asyncio.to_thread(node_writer.put_blob, data)
        return Response(status_code=201)
