"""Host variations on a network (builder/variation.py, witness/worker.py, spec/builds.md 4.1).

- Build workers (no Docker): each builder builds a job under the variation its position in
  the network config gives it; a build that depends on the CPU count is not reproduced, and
  the diff report of the builder heading the first group starts with each group's builders
  and variations and says "the groups differ only in CPU count".
- A real network (a log and four witness processes, real Docker): the ``cpu-count`` fixture
  (its build script embeds ``available_parallelism()``) is not reproduced, with a diff report
  naming the binary and the CPU count; the ``build-year`` fixture (the year of the build,
  SOURCE_DATE_EPOCH ignored) is not reproduced, explained by the clock; every builder's build
  log starts with its own variation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from builder.diff import diff_outputs
from builder.manifest import collect_manifest
from builder.recipe import Recipe
from builder.variation import Variation, assign, variation_of
from logserver.client import LogClient
from logserver.protocol.entries import DiffReport, Verdict
from synchronicity.client import logged_entries
from synchronicity.localnet import LocalNetwork
from tests.support.builder_helpers import pack_fixture
from tests.witness.test_protocol_network import client_of, run_job
from tests.witness.test_worker import (
    FAST,
    KEYS,
    NETWORK,
    Built,
    FakeLog,
    LogClock,
    make_recipe,
    wait_for,
)
from witness.worker import BuildWorker, SigningWriter

NAMES = tuple(key.name for key in KEYS)


@pytest.fixture
def workers() -> Iterator[list[BuildWorker]]:
    running: list[BuildWorker] = []
    yield running
    for worker in running:
        worker.stop(wait=5)


def test_builders_build_under_their_variations_and_the_report_names_the_cpu_count(
    tmp_path: Path, workers: list[BuildWorker]
) -> None:
    log = FakeLog(list(KEYS), LogClock())
    job = log.request("1.0.0")
    seen: dict[str, Variation] = {}

    def builds_by_cpus(name: str) -> Any:
        def build(recipe: Recipe, out_dir: Path, *, variation: Variation, **_: object) -> Built:
            seen[name] = variation
            artifacts = out_dir / "artifacts"
            artifacts.mkdir(parents=True, exist_ok=True)
            cpus = "all" if variation.cpus is None else str(variation.cpus)
            (artifacts / "cpu-count").write_bytes(f"built with {cpus} CPUs".encode())
            (artifacts / "cpu-count").chmod(0o755)  # a binary
            return Built(True, collect_manifest(artifacts, ("bin",)))

        return build

    for key in KEYS:
        worker = BuildWorker(
            key.name,
            SigningWriter(log, key, NETWORK),
            log,
            tmp_path / key.name,
            build=builds_by_cpus(key.name),
            diff=lambda left, right: diff_outputs(left, right, use_diffoscope=False),
            build_deadline_ms=log.build_ms,
            reveal_deadline_ms=log.reveal_ms,
            clock=log.clock,
            backoff=FAST,
            builders=NAMES,
        )
        log.on_append.append(worker.committed)
        worker.committed(log.size())
        workers.append(worker)
        worker.start()
    wait_for(lambda: log.verdict(job), timeout=30)
    for position, name in enumerate(NAMES):  # each built under its assigned variation
        assert seen[name] == assign(job, position, 4) == workers[position].variation(job)
    verdict = log.verdict(job)
    assert verdict is not None and verdict.outcome == "not-reproduced"
    assert sorted(len(g.builders) for g in verdict.groups) == [2, 2]
    wait_for(lambda: log.entries(DiffReport), timeout=30)
    report = log.blobs[log.entries(DiffReport)[0].report_sha256].decode()
    assert report.startswith("Host variations of the builders")
    for group in verdict.groups:
        for name in group.builders:
            assert f"  {name}: {variation_of(job, name, NAMES).spec()}" in report
    assert "the groups differ only in CPU count: every builder of group 1 built with" in report
    assert "DIFFERENT: cpu-count" in report  # then the comparison itself


def test_a_builder_outside_the_network_config_builds_under_the_plain_conditions(
    tmp_path: Path,
) -> None:
    log = FakeLog(list(KEYS), LogClock())
    worker = BuildWorker(
        KEYS[0].name,
        SigningWriter(log, KEYS[0], NETWORK),
        log,
        tmp_path,
        build_deadline_ms=log.build_ms,
        reveal_deadline_ms=log.reveal_ms,
    )
    assert worker.variation(make_recipe("1.0.0").job_id) == Variation()


# ----- a real network --------------------------------------------------------------------


def _report(client: LogClient, verdict: Verdict, at: int) -> str:
    for _ in range(600):
        later = logged_entries(client, at + 1, client.size())
        found = [x.entry for x in later if isinstance(x.entry, DiffReport)]
        if found:
            assert found[0].job == verdict.job
            return client.blob(found[0].report_sha256).decode(errors="replace")
        time.sleep(0.5)
    raise AssertionError("no diff report was logged")


def _builds(net: LocalNetwork, job: str) -> dict[str, Path]:
    return {
        w.name: net.dir / f"witness-{i}" / "worker" / "builds" / job
        for i, w in enumerate(net.config.witnesses, start=1)
    }


@pytest.mark.docker
@pytest.mark.slow
def test_host_dependent_crates_are_not_reproduced_and_the_variation_is_named(
    tmp_path: Path,
) -> None:
    cpu_crate = pack_fixture("cpu-count", tmp_path)
    year_crate = pack_fixture("build-year", tmp_path)
    net = LocalNetwork.create(tmp_path / "net").start()
    names = [w.name for w in net.config.witnesses]
    try:
        with client_of(net) as client:
            _, verdict, at = run_job(net, client, cpu_crate)
            assert verdict.outcome == "not-reproduced", verdict
            assert sorted(len(g.builders) for g in verdict.groups) == [2, 2]
            for group in verdict.groups:  # the split is the CPU split
                assert len({variation_of(verdict.job, b, names).cpus for b in group.builders}) == 1
            report = _report(client, verdict, at)
            assert report.startswith("Host variations of the builders")
            assert "the groups differ only in CPU count" in report
            assert "cpu-count" in report.split("the groups differ only in CPU count")[1]
            for name, build in _builds(net, verdict.job).items():
                variation = variation_of(verdict.job, name, names)
                first = (build / "build.log").read_text().splitlines()[0]
                assert first.startswith(f"synchronicity: host variation {variation.spec()}")
                evidence = json.loads((build / "variation.json").read_bytes())
                assert evidence["spec"] == variation.spec()

            _, verdict, at = run_job(net, client, year_crate)
            assert verdict.outcome == "not-reproduced", verdict
            report = _report(client, verdict, at)
            assert "the groups differ only in clock" in report, report[:2000]
    finally:
        net.stop()
