"""A deterministic simulator of the consensus core: real replicas over a seeded faulty network.

A :class:`Scenario` fixes, round by round, the leaders and the partitions of the replica
instances (Twins: some keys run in two instances at once), and may add crashes, dropped and
delayed messages and a Byzantine replica (:data:`BYZANTINE_KINDS`). :func:`run_scenario` runs
the unmodified ``witness.consensus.Replica`` on it and checks SAFETY (no two honest commits
conflict) and LIVENESS (commits resume after the network heals). A :class:`Campaign` samples
many scenarios from one seed; :func:`run_campaign` runs them (over processes if asked) and
:func:`run_and_report` prints the summary of ``synchronicity witness simulate``. Scenario i of
seed X is the same on every machine.

Modules: ``scenarios`` (sampling), ``network`` (the engine and checkers), ``byzantine``
(misbehaving replicas) and ``campaign`` (many scenarios, one report).

Twenty scenarios with one twin at n = 4 (f = 1) are safe and live; with two twins, more
faulty keys than f, the checker finds a violation::

    >>> from witness.sim import Campaign, run_campaign
    >>> report = run_campaign(Campaign(n=4, twins=1, scenarios=20, seed=7))
    >>> report.scenarios, report.safety_violations, report.liveness_failures
    (20, 0, 0)
    >>> run_campaign(Campaign(n=4, twins=2, scenarios=300)).safety_violations > 0
    True

One scenario, every message round-tripped through its byte encoding::

    >>> result = run_scenario(Campaign(seed=7).scenario(0), SimOptions(wire=True))
    >>> result.safety_violations, result.liveness_failure
    ([], None)
"""

from __future__ import annotations

from witness.sim.campaign import Campaign, CampaignReport, run_and_report, run_campaign
from witness.sim.network import ScenarioResult, SimOptions, Simulation, run_scenario
from witness.sim.scenarios import BYZANTINE_KINDS, Scenario, sample_scenario

__all__ = [
    "BYZANTINE_KINDS",
    "Campaign",
    "CampaignReport",
    "Scenario",
    "ScenarioResult",
    "SimOptions",
    "Simulation",
    "run_and_report",
    "run_campaign",
    "run_scenario",
    "sample_scenario",
]
