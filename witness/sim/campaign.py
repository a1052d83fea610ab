"""Campaigns of the deterministic consensus simulator: many scenarios, one report.

:func:`run_campaign` samples Twins-style scenarios from a seed and runs each one on real
replicas (see :mod:`witness.sim.network`), optionally over several processes;
:func:`run_and_report` (``synchronicity witness simulate``) also prints a human summary and,
last, one JSON line with the counts. Scenario i of seed X is the same on every machine, so a
reported violation is reproduced with ``--seed X`` and its index.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace

from witness.sim.network import ScenarioResult, SimOptions, run_scenario
from witness.sim.scenarios import Scenario, sample_scenario

MAX_EXAMPLES = 5


@dataclass(frozen=True)
class Campaign:
    """What to simulate: n replicas, the faults to sample, how many scenarios from which seed."""

    n: int = 4
    twins: int = 1
    scenarios: int = 100
    seed: int = 0
    rounds: int = 8
    partitions: int = 2
    crash: bool = False
    byzantine: str | None = None
    drop_rate: float = 0.02
    restart_without_state: bool = False
    crash_all: bool = False
    absence: bool = False

    def scenario(self, index: int) -> Scenario:
        rng = random.Random(f"{self.seed}/{index}")  # noqa: S311 - reproducible sampling
        scenario = sample_scenario(
            rng,
            n=self.n,
            twins=self.twins,
            rounds=self.rounds,
            partitions=self.partitions,
            crash=self.crash,
            byzantine=self.byzantine,
            drop_rate=self.drop_rate,
            crash_all=self.crash_all,
            absence=self.absence,
        )
        return replace(scenario, restart_without_state=self.restart_without_state)


@dataclass
class CampaignReport:
    """The counts of a campaign, and the first few violations as examples."""

    scenarios: int = 0
    safety_violations: int = 0
    liveness_failures: int = 0
    events: int = 0
    commits: int = 0
    max_recovery_ms: int = 0
    max_recovery_rounds: int = 0
    state_syncs: int = 0
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)

    def add(self, index: int, result: ScenarioResult) -> None:
        self.scenarios += 1
        self.events += result.events
        self.commits += result.commits
        self.max_recovery_ms = max(self.max_recovery_ms, result.recovery_ms or 0)
        self.max_recovery_rounds = max(self.max_recovery_rounds, result.recovery_rounds or 0)
        self.state_syncs += result.state_syncs
        if result.safety_violations:
            self.safety_violations += 1
            self._example(f"scenario {index}: SAFETY {result.safety_violations[0]}")
        if result.liveness_failure is not None:
            self.liveness_failures += 1
            self._example(f"scenario {index}: LIVENESS {result.liveness_failure}")

    def merge(self, other: CampaignReport) -> None:
        counts = ("scenarios", "safety_violations", "liveness_failures", "events", "commits")
        for name in (*counts, "state_syncs"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.max_recovery_ms = max(self.max_recovery_ms, other.max_recovery_ms)
        self.max_recovery_rounds = max(self.max_recovery_rounds, other.max_recovery_rounds)
        for example in other.examples:
            self._example(example)

    def _example(self, text: str) -> None:
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(text)


def run_range(
    campaign: Campaign, start: int, stop: int, options: SimOptions | None = None
) -> CampaignReport:
    report = CampaignReport()
    for index in range(start, stop):
        report.add(index, run_scenario(campaign.scenario(index), options))
    return report


def run_campaign(
    campaign: Campaign, options: SimOptions | None = None, jobs: int = 1
) -> CampaignReport:
    """Run every scenario of ``campaign``; ``jobs`` > 1 spreads them over processes."""
    began = time.perf_counter()
    total = campaign.scenarios
    if jobs <= 1 or total < 2 * jobs:
        report = run_range(campaign, 0, total, options)
    else:
        chunks = jobs * 4
        bounds = [total * i // chunks for i in range(chunks + 1)]
        report = CampaignReport()
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [
                pool.submit(run_range, campaign, lo, hi, options)
                for lo, hi in itertools.pairwise(bounds)
                if hi > lo
            ]
            for future in futures:
                report.merge(future.result())
    report.seconds = time.perf_counter() - began
    return report


def run_and_report(campaign: Campaign, jobs: int = 1, options: SimOptions | None = None) -> int:
    """Run ``campaign``, print a summary and, last, one JSON line; 0 if nothing failed, else 1."""
    options = options or SimOptions()
    report = run_campaign(campaign, options, jobs=jobs)
    rate = report.scenarios / report.seconds if report.seconds > 0 else 0.0
    c = campaign
    faults = f"{c.twins} twin(s)" + (f", Byzantine {c.byzantine}" if c.byzantine else "")
    faulty_keys = c.twins + (1 if c.byzantine else 0)
    if faulty_keys > (c.n - 1) // 3:
        faults += f"; {faulty_keys} faulty keys exceed f={(c.n - 1) // 3}: expect violations"
    restarts = [
        name
        for name, on in (
            ("crashes", c.crash),
            ("whole-network crashes", c.crash_all),
            ("long absences", c.absence),
        )
        if on
    ]
    print(
        f"n={c.n} ({', '.join([faults, *restarts])}): {report.scenarios} scenarios "
        f"in {report.seconds:.1f} s ({rate:.1f}/s), {report.commits} commits, "
        f"{report.state_syncs} state syncs"
    )
    print(
        f"safety violations: {report.safety_violations}; "
        f"liveness failures: {report.liveness_failures} (every honest replica must commit "
        f"within {options.liveness_window_ms} ms after the last fault heals); "
        f"worst recovery after healing: {report.max_recovery_ms} ms, "
        f"{report.max_recovery_rounds} rounds"
    )
    for example in report.examples:
        print(f"  {example}")
    summary = {
        "scenarios": report.scenarios,
        "safety_violations": report.safety_violations,
        "liveness_failures": report.liveness_failures,
        "scenarios_per_s": round(rate, 1),
        "seconds": round(report.seconds, 2),
        "n": c.n,
        "twins": c.twins,
        "seed": c.seed,
        "rounds": c.rounds,
        "partitions": c.partitions,
        "crash": c.crash,
        "crash_all": c.crash_all,
        "absence": c.absence,
        "idle_rate": options.idle_rate,
        "liveness_window_ms": options.liveness_window_ms,
        "state_syncs": report.state_syncs,
        "byzantine": c.byzantine,
        "events": report.events,
        "commits": report.commits,
        "max_recovery_ms": report.max_recovery_ms,
        "max_recovery_rounds": report.max_recovery_rounds,
    }
    print(json.dumps(summary, sort_keys=True))
    return 0 if report.safety_violations == report.liveness_failures == 0 else 1
