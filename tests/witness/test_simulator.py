"""Simulator campaigns: safety and liveness on real replicas, and negative controls.

Each negative control weakens exactly one thing (more faults than f, a safety rule, the
persist-before-send order, or the persisted state itself) and checks that the simulator's
checker reports it; the matching campaign with correct rules reports nothing.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from synchronicity.cli import BYZANTINE_KINDS as CLI_BYZANTINE_KINDS
from synchronicity.cli import main
from witness.consensus.safety import SafetyRules
from witness.consensus.types import TimeoutCert
from witness.sim.campaign import Campaign, run_campaign
from witness.sim.network import SimOptions, run_scenario
from witness.sim.scenarios import BYZANTINE_KINDS


class VoteWithoutQcCheck(SafetyRules):
    """Forgets the lock: votes for any block of a higher round."""

    def safe_to_vote(
        self, block_round: int, qc_round: int, tc: TimeoutCert | None, last_voted_round: int
    ) -> bool:
        return block_round > last_voted_round


class CommitWithoutConsecutiveRounds(SafetyRules):
    """Commits a block as soon as any certified child exists."""

    def commits_parent(self, block_round: int, parent_round: int) -> bool:
        return True


class SendBeforePersist(SafetyRules):
    persist_before_send = False


class NeverVote(SafetyRules):
    def safe_to_vote(
        self, block_round: int, qc_round: int, tc: TimeoutCert | None, last_voted_round: int
    ) -> bool:
        return False


def simulate(*args: str) -> int:
    """``synchronicity witness simulate ARGS`` in this process."""
    return main(["witness", "simulate", *args])


def test_simulate_prints_a_summary_and_json_last(capsys: pytest.CaptureFixture[str]) -> None:
    code = simulate("--n", "4", "--twins", "1", "--scenarios", "40", "--seed", "7", "--jobs", "1")
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert code == 0
    assert summary["scenarios"] == 40
    assert summary["safety_violations"] == 0 and summary["liveness_failures"] == 0
    assert summary["scenarios_per_s"] > 0 and summary["commits"] > 0
    assert "safety violations: 0" in "\n".join(lines[:-1])


def test_simulate_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert simulate("--n", "5", "--scenarios", "1") == 2
    assert simulate("--n", "4", "--twins", "5", "--scenarios", "1") == 2
    assert "3f+1" in capsys.readouterr().err
    assert CLI_BYZANTINE_KINDS == BYZANTINE_KINDS  # the CLI's choices are the simulator's


def test_two_twins_at_n4_break_safety_and_simulate_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = simulate("--n", "4", "--twins", "2", "--scenarios", "300", "--jobs", "1")
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1
    assert summary["safety_violations"] > 0


def test_one_twin_at_n4_is_safe_and_live() -> None:
    report = run_campaign(Campaign(n=4, twins=1, scenarios=400, seed=1))
    assert report.scenarios == 400 and report.commits > 0
    assert report.safety_violations == 0, report.examples
    assert report.liveness_failures == 0, report.examples
    # After healing, every honest replica commits a block at most a few rounds later.
    assert 1 <= report.max_recovery_rounds <= 6
    assert report.max_recovery_ms <= 4 * SimOptions().max_timeout_ms


@pytest.mark.slow
def test_ten_thousand_scenarios_with_twins_crashes_whole_network_restarts_and_absences() -> None:
    """Every scenario: a twin, partitions and drops, 1-3 single crashes, one crash of every
    honest replica at once, and one absence past the pruning horizon; each replica restarts
    from only its durable state. Liveness: all commit again within the window after healing."""
    campaign = Campaign(
        n=4, twins=1, scenarios=10_000, seed=2026, crash=True, crash_all=True, absence=True
    )
    report = run_campaign(campaign, jobs=2)
    assert report.scenarios == 10_000
    assert report.safety_violations == 0, report.examples
    assert report.liveness_failures == 0, report.examples
    assert report.state_syncs > 1000  # the absences were caught up by state sync
    assert report.max_recovery_ms <= SimOptions().liveness_window_ms
    rate = report.scenarios / report.seconds
    print(f"n=4, 1 twin, every restart kind: {rate:.0f} scenarios/s")
    assert report.seconds < 300


@pytest.mark.parametrize("n", [7, 10])
@pytest.mark.parametrize("crash", [False, True])
def test_larger_networks(n: int, crash: bool) -> None:
    report = run_campaign(Campaign(n=n, twins=0, scenarios=40, seed=n, crash=crash))
    assert report.safety_violations == 0, report.examples
    assert report.liveness_failures == 0, report.examples
    assert report.commits >= 40 * n


@pytest.mark.parametrize("n", [7, 10])
def test_f_twins_in_larger_networks(n: int) -> None:
    f = (n - 1) // 3
    report = run_campaign(Campaign(n=n, twins=f, scenarios=40, seed=3, crash=True))
    assert report.safety_violations == 0, report.examples
    assert report.liveness_failures == 0, report.examples


@pytest.mark.parametrize("kind", BYZANTINE_KINDS)
def test_byzantine_replica_is_survived(kind: str) -> None:
    campaign = Campaign(n=4, twins=0, scenarios=120, seed=11, byzantine=kind, crash=True)
    report = run_campaign(campaign)
    assert report.safety_violations == 0, report.examples
    assert report.liveness_failures == 0, report.examples


def test_messages_survive_the_wire_encoding() -> None:
    campaign = Campaign(n=4, twins=1, scenarios=30, seed=5, byzantine=None, crash=True)
    report = run_campaign(campaign, SimOptions(wire=True))
    assert report.safety_violations == 0 and report.liveness_failures == 0


def test_scenarios_are_deterministic() -> None:
    campaign = Campaign(n=4, twins=1, scenarios=5, seed=9, crash=True)
    first = [run_scenario(campaign.scenario(i)) for i in range(5)]
    second = [run_scenario(campaign.scenario(i)) for i in range(5)]
    assert [(r.events, r.commits, r.max_round) for r in first] == [
        (r.events, r.commits, r.max_round) for r in second
    ]


# -- negative controls ----------------------------------------------------------------------


def test_vote_rule_without_qc_check_is_caught() -> None:
    campaign = Campaign(n=4, twins=0, scenarios=150, seed=4, byzantine="stale-qc", partitions=1)
    weakened = run_campaign(campaign, SimOptions(rules=VoteWithoutQcCheck()))
    assert weakened.safety_violations > 0
    assert run_campaign(campaign).safety_violations == 0


def test_commit_without_consecutive_rounds_is_caught() -> None:
    campaign = Campaign(n=4, twins=0, scenarios=200, seed=4, byzantine="fork", partitions=1)
    weakened = run_campaign(campaign, SimOptions(rules=CommitWithoutConsecutiveRounds()))
    assert weakened.safety_violations > 0
    assert run_campaign(campaign).safety_violations == 0


def test_vote_sent_before_persist_is_caught() -> None:
    campaign = Campaign(
        n=4, twins=0, scenarios=800, seed=4, byzantine="equivocate", partitions=1, crash=True
    )
    weakened = run_campaign(campaign, SimOptions(rules=SendBeforePersist()))
    assert weakened.safety_violations > 0
    assert any("voted twice" in example for example in weakened.examples)
    assert run_campaign(campaign).safety_violations == 0


def test_restart_without_persisted_state_is_caught() -> None:
    campaign = Campaign(
        n=4,
        twins=0,
        scenarios=300,
        seed=4,
        byzantine="equivocate",
        partitions=1,
        crash=True,
        restart_without_state=True,
    )
    assert run_campaign(campaign).safety_violations > 0


class NoTcPersistence(SafetyRules):
    """The defect of an earlier version: the TC that led into a round is not kept."""

    persist_timeout_certificate = False


def test_whole_network_restarts_and_long_absences_are_survived() -> None:
    campaign = Campaign(n=4, twins=1, scenarios=300, seed=8, crash=True, crash_all=True)
    report = run_campaign(replace(campaign, absence=True))
    assert report.safety_violations == 0, report.examples
    assert report.liveness_failures == 0, report.examples
    assert report.state_syncs > 0


def test_an_idle_log_defers_proposals_and_stays_live() -> None:
    campaign = Campaign(n=4, twins=1, scenarios=200, seed=12, crash=True, crash_all=True)
    options = SimOptions(idle_rate=0.5, liveness_window_ms=180_000)
    report = run_campaign(campaign, options)
    assert report.safety_violations == 0, report.examples
    assert report.liveness_failures == 0, report.examples


def test_restart_without_the_timeout_certificate_is_caught() -> None:
    """Negative control for the TC persistence: whole-network restarts then hang."""
    campaign = Campaign(n=4, twins=0, scenarios=300, seed=3, crash_all=True)
    weakened = run_campaign(campaign, SimOptions(rules=NoTcPersistence()))
    assert weakened.liveness_failures > 0
    assert any("made no new commit" in example for example in weakened.examples)
    assert run_campaign(campaign).liveness_failures == 0


def test_restart_without_the_stored_blocks_is_caught() -> None:
    """Negative control for block persistence: after a whole-network restart nobody holds
    the block of the highest QC."""
    campaign = Campaign(n=4, twins=0, scenarios=300, seed=3, crash_all=True)
    assert run_campaign(campaign, SimOptions(keep_blocks=False)).liveness_failures > 0


def test_simulate_reports_state_syncs_and_the_liveness_bound(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = simulate(
        "--n", "4", "--scenarios", "30", "--crash-all", "--absence", "--seed", "3", "--jobs", "1"
    )
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert code == 0 and summary["crash_all"] and summary["absence"]
    assert summary["state_syncs"] > 0 and summary["liveness_failures"] == 0
    assert "after the last fault heals" in out[-2]


def test_liveness_checker_reports_a_stuck_network() -> None:
    campaign = Campaign(n=4, twins=0, scenarios=3, seed=1)
    report = run_campaign(campaign, SimOptions(rules=NeverVote(), liveness_window_ms=20_000))
    assert report.liveness_failures == 3 and report.commits == 0
