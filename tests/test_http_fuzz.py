"""A property-based fuzz of every HTTP endpoint of the log and the witness, on real processes.

Three servers on 127.0.0.1: a log with ``--network`` in protocol mode and its witness (one
witness, n = 1), and an ``--open`` log holding a few hundred entries. Hypothesis generates
batches of hostile requests (``tests/support/http_fuzz.py``) from every route of each; every
answer must keep the rules (no 5xx; every 4xx a problem+json with a detail). Afterwards the
servers still work: no process died or logged a traceback, the open log appends an entry and
proves it, and the network log appends a signed entry that its witness checks and co-signs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings

from logserver.core import canonical_json, note
from logserver.http import LogConfig, LogService, create_app
from logserver.protocol.entries import Request
from logserver.protocol.signed import sign_entry
from synchronicity.cmd_network import init_network
from synchronicity.launcher import ServerProcess, free_ports
from synchronicity.localnet import LocalNetwork
from tests.conftest import RunningLog, start_log
from tests.support.http_fuzz import (
    LOG_ROUTES,
    WITNESS_ROUTES,
    Batch,
    Fuzzer,
    Route,
    Samples,
    alive,
    batches,
)
from tests.support.paths import ROOT
from witness.app import create_app as create_witness_app
from witness.cosign.http import AddCheckpointHandler, add_routes

BATCH = 100
BATCHES = 70  # per server: 3 x 70 x 100 = 21,000 requests
MIN_REQUESTS = 20_000


@dataclass
class Servers:
    network: LocalNetwork
    open_log: RunningLog
    samples: Samples

    @property
    def processes(self) -> list[ServerProcess]:
        return [self.network.log, *self.network.witnesses, self.open_log.proc]


def _signed_request(network: LocalNetwork, name: str) -> bytes:
    """A build-protocol ``request`` entry signed by witness 1, ready for ``/add-entry``."""
    private = (network.dir / "witness-1.key").read_text().strip()
    signer = note.Signer(network.config.witnesses[0].name, note.parse_private_key(private).key)
    signed = sign_entry(Request({"name": name}), signer, network.config.network_id)
    return canonical_json.encode(signed.to_json())


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    network = LocalNetwork.create(tmp_path_factory.mktemp("network"), witnesses=1)
    # The fuzz is one client: lift the witness's per-client bound on build requests.
    network.witnesses[0].args += ["--request-rate", "0", "--request-burst", "1000000"]
    network.start()
    open_log = start_log(tmp_path_factory.mktemp("open"))
    try:
        with httpx.Client(base_url=open_log.url) as c:
            for i in range(300):
                assert c.post("/add-entry", content=b"entry %d\n" % i).status_code == 200
            notes = (c.get("/checkpoint").content, c.get("/latest-checkpoint").content)
        entries = tuple(_signed_request(network, f"sample-{i}") for i in range(3))
        yield Servers(network, open_log, Samples(notes, entries))
    finally:
        network.stop()
        open_log.proc.stop()


def _fuzz(url: str, routes: Sequence[Route], samples: Samples) -> int:
    """Run ``BATCHES`` batches of hostile requests against ``url``; the number sent."""
    fuzzer = Fuzzer(url)

    @settings(
        max_examples=BATCHES,
        deadline=None,
        database=None,
        # No shrinking: a failure names the very requests that broke a rule, and shrinking
        # a batch against live servers takes minutes.
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(batches(routes, samples, BATCH))
    def fuzz(batch: Batch) -> None:
        broken = fuzzer.run(batch)
        assert not broken, "\n".join(broken[:10])

    try:
        fuzz()
    finally:
        fuzzer.close()
    return fuzzer.sent


@pytest.mark.slow
def test_hostile_requests_never_break_the_servers(servers: Servers) -> None:
    started = time.monotonic()
    network, samples = servers.network, servers.samples
    sent = _fuzz(network.log.url, LOG_ROUTES, samples)
    sent += _fuzz(network.witnesses[0].url, WITNESS_ROUTES, samples)
    sent += _fuzz(servers.open_log.url, LOG_ROUTES, samples)
    took = time.monotonic() - started
    print(f"\n{sent} hostile requests in {took:.0f} s ({sent / took:.0f} a second)")
    assert sent >= MIN_REQUESTS

    # Nothing died or logged a traceback.
    for proc in servers.processes:
        assert proc.proc is not None and proc.proc.poll() is None, proc.args
        tracebacks = [line for line in proc.stderr_lines if "Traceback" in line]
        assert not tracebacks, tracebacks[:3]

    # The open log appends and proves.
    with httpx.Client(base_url=servers.open_log.url) as c:
        r = c.post("/add-entry", content=b"after the fuzz\n")
        assert r.status_code == 200, r.text
        index = r.json()["index"]
        assert c.get(f"/entry/{index}").content == b"after the fuzz\n"
        size = c.get("/readyz").json()["size"]
        proof = c.get("/proof/inclusion", params={"index": index, "size": size})
        assert proof.status_code == 200 and proof.json()["index"] == index
        assert c.get("/proof/tlog", params={"index": index}).status_code == 200

    # The network log appends a signed entry, the witness checks and co-signs it.
    with httpx.Client(base_url=network.log.url, timeout=10) as c:
        r = c.post("/add-entry", content=_signed_request(network, "after the fuzz"))
        assert r.status_code == 200, r.text
        index = r.json()["index"]
        proof = c.get("/proof/inclusion", params={"index": index, "size": index + 1})
        assert proof.status_code == 200, proof.text
        assert alive(lambda: c.get("/proof/tlog", params={"index": index}).status_code == 200)
    status = httpx.get(network.witnesses[0].url + "/status", timeout=10)
    assert status.status_code == 200 and status.json()["cosigned_size"] > index
    assert httpx.get(network.witnesses[0].url + "/readyz", timeout=10).status_code == 200


def _declared(routes: Sequence[object]) -> set[tuple[str, str]]:
    """(method, path pattern) of an app's routes, their segments named ``{}``."""
    out = set()
    for route in routes:
        path = re.sub(r"\{[a-z_0-9]+(?::path)?\}", "{}", getattr(route, "path", ""))
        out |= {(method, path) for method in getattr(route, "methods", None) or ()}
    return out


def _fuzzed(routes: Sequence[Route]) -> set[tuple[str, str]]:
    return {(method, route.pattern) for route in routes for method in route.methods}


def _routes(tmp_path: Path) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(method, path pattern) of every route of the log and of a witness."""
    config = init_network(tmp_path, witnesses=1, ports=free_ports(2))
    signer = note.Signer.from_private_key((tmp_path / "log.key").read_text().strip())
    service = LogService(LogConfig(tmp_path / "log", signer, network=config))
    try:
        log_routes = _declared(create_app(service).routes)
    finally:
        service.store.close()
    witness_app = create_witness_app(SimpleNamespace(worker=None))  # type: ignore[arg-type]
    add_routes(witness_app, cast(AddCheckpointHandler, None))
    return log_routes, _declared(witness_app.routes)


def test_the_fuzz_covers_every_route(tmp_path: Path) -> None:
    """A route added to the log or the witness is fuzzed too: the tables must list it."""
    log_routes, witness_routes = _routes(tmp_path)
    assert log_routes == _fuzzed(LOG_ROUTES)
    assert witness_routes == _fuzzed(WITNESS_ROUTES)


def _documented(table: str) -> list[tuple[str | None, list[str]]]:
    """(method or None for any GET, path segments) of each code span of a spec table."""
    spans = []
    for span in re.findall(r"`([^`]+)`", table):
        method, _, path = span.rpartition(" ")
        if path.startswith("/"):
            spans.append((method or None, path.strip("/").split("/")))
    return spans


def _matches(segments: list[str], pattern: str) -> bool:
    """Whether documented ``segments`` (``<name>`` any one, ``...`` any rest) name ``pattern``."""
    wanted = pattern.strip("/").split("/")
    for i, segment in enumerate(segments):
        if segment == "...":
            return len(wanted) > i
        if i >= len(wanted) or not (
            segment == wanted[i] or (segment[:1] == "<" and wanted[i] == "{}")
        ):
            return False
    return len(segments) == len(wanted)


def test_spec_api_says_who_may_call_every_route(tmp_path: Path) -> None:
    """spec/api.md's 'Who may call what' has a row for every route of both servers."""
    text = (ROOT / "spec" / "api.md").read_text()
    section = text.split("## Who may call what", 1)[1].split("\n## ", 1)[0]
    log_table, witness_table = section.split("A builder-witness", 1)
    for routes, table in zip(_routes(tmp_path), (log_table, witness_table), strict=True):
        documented = _documented(table)
        for method, pattern in sorted(routes):
            assert any(
                (m == method or (m is None and method == "GET")) and _matches(segments, pattern)
                for m, segments in documented
            ), f"spec/api.md does not say who may call {method} {pattern}"
