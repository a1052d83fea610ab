"""The build protocol on a real network: a log and four builder-witness processes, real Docker
builds, real crates.io.

- a real crate is reproduced by all four builders, and its verdict is published with a quorum;
- a crate whose build script embeds the time is not reproduced, and a diff report is logged;
- a builder that contradicts its commitment cannot stop three honest builders, and is recorded;
- a hostile build that opens a network connection fails everywhere: verdict ``failed``.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from builder.build import resolve_recipe
from logserver.client import LogClient
from logserver.core.proof import verify_proof
from logserver.protocol.entries import DiffReport, Verdict
from synchronicity.client import (
    BuilderClient,
    LoggedEntry,
    follow,
    logged_entries,
    wait_published,
)
from synchronicity.localnet import LocalNetwork
from tests.support.builder_helpers import pack_fixture

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def run_job(
    net: LocalNetwork, client: LogClient, spec: str | Path, timeout: float = 600
) -> tuple[list[LoggedEntry], Verdict, int]:
    recipe = resolve_recipe(spec, progress=lambda line: None)
    # A local .crate is uploaded and requested by the network's requester (signed requests).
    requester = net.requester() if isinstance(spec, Path) else None
    with BuilderClient(net.config.witnesses[0].url, requester=requester) as builder:
        if isinstance(spec, Path):
            builder.upload_crate(recipe.crate_sha256, spec.read_bytes())
        job, index = builder.request(recipe)
    seen, verdict = follow(client, job, index, timeout, lambda line: None)
    assert isinstance(verdict.entry, Verdict)
    return seen, verdict.entry, verdict.index


def client_of(net: LocalNetwork) -> LogClient:
    return LogClient(net.log_url, timeout=60.0)


@pytest.mark.network
def test_real_crate_reproduced_and_proved(tmp_path: Path) -> None:
    net = LocalNetwork.create(tmp_path / "net").start()
    try:
        with client_of(net) as client:
            _, verdict, at = run_job(net, client, "itoa@1.0.11")
            assert verdict.outcome == "reproduced", verdict
            assert len(verdict.agreeing) == 4 and verdict.output_digest is not None
            policy = net.config.policy()
            wait_published(client, at, policy, 60)
            # The manifest is in the blob store under the output digest.
            assert b".rlib" in client.blob(verdict.output_digest)
            leaf = next(logged_entries(client, at, at + 1)).leaf.to_bytes()
            verified = verify_proof(client.tlog_proof(at), leaf, policy)
            assert len(verified.cosigners) >= 3
            metrics = httpx.get(net.config.witnesses[0].url + "/metrics").text
            assert 'witness_builds_total{outcome="ok"} 1.0' in metrics
    finally:
        net.stop()


def test_unreproducible_fixture_gets_a_diff_report(tmp_path: Path) -> None:
    crate = pack_fixture("unrepro", tmp_path)
    net = LocalNetwork.create(tmp_path / "net").start()
    try:
        with client_of(net) as client:
            _, verdict, at = run_job(net, client, crate)
            assert verdict.outcome == "not-reproduced"
            assert len(verdict.groups) >= 2
            report_entry = None
            for _ in range(300):
                later = logged_entries(client, at + 1, client.size())
                found = [x.entry for x in later if isinstance(x.entry, DiffReport)]
                if found:
                    report_entry = found[0]
                    break
                time.sleep(0.5)
            assert report_entry is not None, "no diff report was logged"
            assert report_entry.job == verdict.job
            report = client.blob(report_entry.report_sha256)
            assert len(report) > 0
    finally:
        net.stop()


@pytest.mark.network
@pytest.mark.parametrize("lie", ["contradict", "fabricate"])
def test_a_lying_builder_is_outvoted_and_recorded(tmp_path: Path, lie: str) -> None:
    net = LocalNetwork.create(tmp_path / "net")
    net = LocalNetwork(net.dir, misbehave={4: lie}).start()
    try:
        with client_of(net) as client:
            _, verdict, _ = run_job(net, client, "itoa@1.0.11")
            assert verdict.outcome == "reproduced", verdict
            assert "witness-4.synchronicity.local" not in verdict.agreeing
            assert len(verdict.agreeing) == 3
            if lie == "contradict":  # the reveal does not open the commitment: evidence
                assert [e.builder for e in verdict.evidence] == ["witness-4.synchronicity.local"]
            else:  # a consistent lie is simply outvoted: a group of its own
                assert not verdict.evidence
                liars = [
                    g.builders for g in verdict.groups if g.output_digest != verdict.output_digest
                ]
                assert liars == [("witness-4.synchronicity.local",)]
    finally:
        net.stop()


def test_hostile_build_fails_everywhere(tmp_path: Path) -> None:
    crate = pack_fixture("hostile-network", tmp_path)
    net = LocalNetwork.create(tmp_path / "net").start()
    try:
        with client_of(net) as client:
            _, verdict, _ = run_job(net, client, crate)
            assert verdict.outcome == "failed"
            assert len(verdict.failures) == 4
    finally:
        net.stop()
