"""The build worker runs up to ``max_builds`` builds at once, keeping every guarantee.

Against the fake log of test_worker.py (the real protocol rules, no Docker, no HTTP), with
builds that wait for the test to let them finish:

- at most ``max_builds`` builds run at once, started in request order; with the default of 1,
  one at a time in request order, as before;
- a long build does not hold up the jobs behind it: they are built, committed, revealed and
  reach their verdicts while it runs;
- an exception of one build is that job's committed failure while the others run on;
- a job whose build deadline passes while it waits for a place is not built late (skipped,
  counted);
- the running builds show in ``running()`` (the ``witness_builds_running`` gauge), their time
  in ``stats["build_seconds"]``, and ``stop`` waits for them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.recipe import Recipe
from logserver.protocol.entries import Commit
from tests.witness.test_worker import (
    BUILD_MS,
    KEYS,
    ME,
    Built,
    FakeLog,
    LogClock,
    builds_bytes,
    make_worker,
    wait_for,
)
from witness.worker import BuildWorker


class Gate:
    """Builds that wait until released; records which run and the most at once."""

    def __init__(self, fail: str | None = None) -> None:
        self.lock = threading.Lock()
        self.running: list[str] = []
        self.started: list[str] = []
        self.most = 0
        self.released: set[str] = set()
        self.changed = threading.Condition(self.lock)
        self.fail = fail
        self.normal = builds_bytes()

    def build(self, recipe: Recipe, out_dir: Path, **kwargs: object) -> Built:
        with self.changed:
            self.running.append(recipe.version)
            self.started.append(recipe.version)
            self.most = max(self.most, len(self.running))
            self.changed.notify_all()
            self.changed.wait_for(
                lambda: recipe.version in self.released or "*" in self.released, 30
            )
            self.running.remove(recipe.version)
        if recipe.version == self.fail:
            raise RuntimeError("the disk filled up")
        return self.normal(recipe, out_dir, **kwargs)

    def release(self, *versions: str) -> None:
        with self.changed:
            self.released.update(versions or ("*",))
            self.changed.notify_all()


@pytest.fixture
def workers() -> Iterator[list[BuildWorker]]:
    started: list[BuildWorker] = []
    yield started
    for worker in started:
        worker.stop(wait=5)


def run(
    log: FakeLog, path: Path, gate: Gate, workers: list[BuildWorker], max_builds: int
) -> BuildWorker:
    worker = make_worker(log, path, gate.build, max_builds=max_builds)
    workers.append(worker)
    worker.start()
    return worker


VERSIONS = [f"1.0.{i}" for i in range(5)]


def test_at_most_max_builds_run_at_once_started_in_request_order(
    tmp_path: Path, workers: list[BuildWorker]
) -> None:
    log = FakeLog([ME], LogClock())
    jobs = [log.request(v) for v in VERSIONS]
    gate = Gate()
    worker = run(log, tmp_path, gate, workers, max_builds=3)
    wait_for(lambda: len(gate.running) == 3)
    time.sleep(0.3)  # no fourth starts while three run
    assert sorted(gate.running) == VERSIONS[:3] and worker.running() == 3
    assert worker.threads() == {"scanner": True, "builder": True, "outbox": True}
    gate.release()
    wait_for(lambda: all(log.verdict(job) for job in jobs))
    assert gate.most == 3
    assert gate.started[:3] == sorted(gate.started[:3]) and set(gate.started) == set(VERSIONS)
    assert all(v is not None and v.outcome == "reproduced" for v in map(log.verdict, jobs))
    assert worker.stats["builds_ok"] == 5 and worker.running() == 0
    assert worker.stats["build_seconds"] >= 0.3 * 3


def test_by_default_one_build_at_a_time_in_request_order(
    tmp_path: Path, workers: list[BuildWorker]
) -> None:
    log = FakeLog([ME], LogClock())
    jobs = [log.request(v) for v in VERSIONS]
    gate = Gate()
    gate.release()
    worker = run(log, tmp_path, gate, workers, max_builds=1)
    wait_for(lambda: all(log.verdict(job) for job in jobs))
    assert gate.most == 1 and gate.started == VERSIONS
    assert worker.max_builds == 1


def test_a_long_build_does_not_hold_up_the_jobs_behind_it_nor_a_failing_one(
    tmp_path: Path, workers: list[BuildWorker]
) -> None:
    log = FakeLog([ME], LogClock())
    slow, failing, *quick = [log.request(v) for v in VERSIONS]
    gate = Gate(fail="1.0.1")
    worker = run(log, tmp_path, gate, workers, max_builds=2)
    wait_for(lambda: "1.0.0" in gate.running)
    gate.release(*VERSIONS[1:])  # everything but the first finishes
    wait_for(lambda: all(log.verdict(job) for job in [failing, *quick]))
    assert log.verdict(slow) is None and gate.running == ["1.0.0"]
    failed = log.verdict(failing)
    assert failed is not None and failed.outcome == "failed"
    assert all(v is not None and v.outcome == "reproduced" for v in map(log.verdict, quick))
    gate.release()
    wait_for(lambda: log.verdict(slow))
    verdict = log.verdict(slow)
    assert verdict is not None and verdict.outcome == "reproduced"
    assert worker.stats["builds_failed"] == 1 and worker.stats["builds_ok"] == 4
    assert worker.threads() == {"scanner": True, "builder": True, "outbox": True}


def test_a_job_whose_deadline_passes_while_it_waits_for_a_place_is_not_built(
    tmp_path: Path, workers: list[BuildWorker]
) -> None:
    clock = LogClock()
    log = FakeLog([ME, KEYS[1]], clock)
    first = log.request("1.0.0")
    clock.now_ms += BUILD_MS // 2
    second = log.request("1.0.1")
    gate = Gate()
    worker = run(log, tmp_path, gate, workers, max_builds=1)
    wait_for(lambda: gate.running == ["1.0.0"])
    clock.now_ms += BUILD_MS // 2 + BUILD_MS // 4  # past 1.0.0's deadline, not 1.0.1's
    third = log.request("1.0.2")
    clock.now_ms += BUILD_MS // 2  # now past 1.0.1's too; 1.0.2 still has time
    gate.release()
    wait_for(lambda: [c.job for c in log.entries(Commit)] == [third])
    time.sleep(0.2)
    assert gate.started == ["1.0.0", "1.0.2"]  # 1.0.1 waited past its deadline: not built
    assert worker.stats["builds_skipped"] == 1
    # 1.0.0's build ended after the log closed the job at its deadline: no commit was sent
    assert worker.records.get(first).state == "abandoned"  # type: ignore[union-attr]
    assert worker.records.get(second).state == "abandoned"  # type: ignore[union-attr]


def test_stop_waits_for_the_running_builds(tmp_path: Path, workers: list[BuildWorker]) -> None:
    log = FakeLog([ME], LogClock())
    for version in VERSIONS[:2]:
        log.request(version)
    gate = Gate()
    worker = run(log, tmp_path, gate, workers, max_builds=2)
    wait_for(lambda: len(gate.running) == 2)
    threading.Timer(0.3, gate.release).start()
    started = time.monotonic()
    worker.stop(wait=10)
    assert 0.2 < time.monotonic() - started < 5
    assert worker.running() == 0 and worker.stats["builds_ok"] == 2
