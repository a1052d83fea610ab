"""Tests of logserver.protocol.rules: every rule of the build protocol, and verdict properties."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from logserver.core.errors import FormatError, UsageError
from logserver.core.note import Signer
from logserver.protocol.entries import (
    Close,
    Commit,
    DiffReport,
    Entry,
    Evidence,
    Failure,
    Group,
    Request,
    Reveal,
    Verdict,
    compute_commitment,
    failure_digest,
)
from logserver.protocol.rules import (
    ProtocolConfig,
    ProtocolState,
    ProtocolViolation,
    RetiredKey,
    default_threshold,
    validate_leaves,
)
from logserver.protocol.signed import KeyRef, Leaf, SignedEntry, sign_entry
from tests.protocol.test_entries import (
    BUILDER_KEYS,
    LOG_KEY,
    NETWORK,
    digest,
    make_leaf,
    recipe,
)

KEYS = {key.name: key for key in BUILDER_KEYS}
A, B, C = digest("output A"), digest("output B"), digest("output C")
BUILD_DEADLINE, REVEAL_DEADLINE = 1000, 500


def make_config(
    n: int = 4, threshold: int = 0, build: int = BUILD_DEADLINE, reveal: int = REVEAL_DEADLINE
) -> ProtocolConfig:
    builders = {key.name: key.verifier() for key in BUILDER_KEYS[:n]}
    return ProtocolConfig(
        LOG_KEY.verifier(), builders, build, reveal, threshold, network_id=NETWORK
    )


def name(i: int) -> str:
    return BUILDER_KEYS[i - 1].name


class Driver:
    """Plays the log: appends due log entries before every submission, like the sequencer."""

    def __init__(self, config: ProtocolConfig | None = None) -> None:
        self.state = ProtocolState(config or make_config())
        self.leaves: list[Leaf] = []
        self.nonces: dict[tuple[str, str], str] = {}

    def append(self, leaf: Leaf) -> None:
        self.state.apply(leaf)
        self.leaves.append(leaf)

    def tick(self, now: int) -> list[Close | Verdict]:
        due = self.state.due_entries(now)
        for entry in due:
            self.append(make_leaf(entry, LOG_KEY, now))
        return due

    def submit(self, entry: Entry, signer: Signer, now: int) -> None:
        self.tick(now)
        self.append(make_leaf(entry, signer, now))

    def request(self, now: int = 0, package: str = "itoa") -> str:
        request = Request(recipe(package))
        self.submit(request, BUILDER_KEYS[0], now)
        return request.job

    def commit(self, job: str, i: int, output: str | None, now: int, failure: str = "") -> None:
        nonce = digest(f"nonce {job} {i}")
        self.nonces[job, name(i)] = nonce
        committed = output if output is not None else failure_digest(failure)
        commitment = compute_commitment(job, name(i), committed, nonce)
        self.submit(Commit(job, name(i), commitment), BUILDER_KEYS[i - 1], now)

    def reveal(self, job: str, i: int, output: str | None, now: int, failure: str = "") -> None:
        nonce = self.nonces.get((job, name(i)), digest("never committed"))
        if output is None:
            reveal = Reveal(job, name(i), nonce, failure=failure)
        else:
            reveal = Reveal(job, name(i), nonce, output_digest=output, manifest_sha256=output)
        self.submit(reveal, BUILDER_KEYS[i - 1], now)

    def verdict(self, job: str) -> Verdict:
        verdict = self.state.jobs[job].verdict
        assert verdict is not None
        return verdict


def violation(rule: str, action: Callable[[], Any]) -> ProtocolViolation:
    with pytest.raises(ProtocolViolation) as info:
        action()
    assert info.value.rule == rule, str(info.value)
    return info.value


def rejected_unchanged(driver: Driver, rule: str, leaf: Leaf) -> None:
    before = driver.state.copy()
    error = violation(rule, lambda: driver.state.apply(leaf))
    assert error.leaf_index == before.size
    assert driver.state == before


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize(("n", "k"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 5)])
def test_default_threshold(n: int, k: int) -> None:
    assert default_threshold(n) == k
    assert make_config(n).threshold == k


@pytest.mark.parametrize(
    "make",
    [
        lambda: make_config(4, threshold=2),
        lambda: make_config(4, threshold=5),
        lambda: make_config(build=-1),
        lambda: make_config(reveal=-1),
        lambda: ProtocolConfig(LOG_KEY.verifier(), {}, 1, 1, network_id=NETWORK),
        lambda: dataclasses.replace(make_config(), network_id=""),
        lambda: dataclasses.replace(make_config(), network_id="n" * 256),
        lambda: ProtocolConfig(
            LOG_KEY.verifier(), {"other": LOG_KEY.verifier()}, 1, 1, network_id=NETWORK
        ),
        lambda: ProtocolConfig(
            LOG_KEY.verifier(), {LOG_KEY.name: LOG_KEY.verifier()}, 1, 1, network_id=NETWORK
        ),
    ],
)
def test_config_rejects_misuse(make: Callable[[], ProtocolConfig]) -> None:
    with pytest.raises(UsageError):
        make()


def test_config_builders_are_read_only() -> None:
    config = make_config()
    with pytest.raises(TypeError):
        config.builders["x"] = LOG_KEY.verifier()  # type: ignore[index]


# ---------------------------------------------------------------------------- authorship


def test_signer_rules() -> None:
    driver = Driver()
    job = driver.request()
    stranger = Signer("stranger", b"s" * 32)
    impostor = Signer(name(1), b"i" * 32)
    commit = Commit(job, name(1), A)
    rejected_unchanged(driver, "unknown-signer", make_leaf(Commit(job, "stranger", A), stranger, 1))
    rejected_unchanged(driver, "unregistered-key", make_leaf(commit, impostor, 1))
    signed = sign_entry(commit, BUILDER_KEYS[0], NETWORK)
    forged = SignedEntry(commit, signed.signer, bytes(64))
    rejected_unchanged(driver, "bad-signature", Leaf(forged, 1))
    other = SignedEntry(Commit(job, name(1), B), signed.signer, signed.signature)
    rejected_unchanged(driver, "bad-signature", Leaf(other, 1))
    relabelled = SignedEntry(commit, KeyRef(name(2), BUILDER_KEYS[1].key_id), signed.signature)
    rejected_unchanged(driver, "bad-signature", Leaf(relabelled, 1))
    rejected_unchanged(driver, "author-mismatch", make_leaf(commit, BUILDER_KEYS[1], 1))
    rejected_unchanged(driver, "wrong-author", make_leaf(commit, LOG_KEY, 1))
    rejected_unchanged(driver, "wrong-author", make_leaf(Request(recipe("x")), LOG_KEY, 1))
    close = Close(job, "deadline", ())
    rejected_unchanged(driver, "wrong-author", make_leaf(close, BUILDER_KEYS[0], BUILD_DEADLINE))
    driver.append(make_leaf(commit, BUILDER_KEYS[0], 1))
    assert driver.state.size == 2


def test_entries_signed_for_another_network_are_refused() -> None:
    driver = Driver()
    job = driver.request()
    commit = Commit(job, name(1), A)
    elsewhere = make_leaf(commit, BUILDER_KEYS[0], 1, network="another.network")
    error = violation("bad-signature", lambda: driver.state.copy().apply(elsewhere))
    assert "another.network" not in error.detail and NETWORK in error.detail
    rejected_unchanged(driver, "bad-signature", elsewhere)
    there = Driver(dataclasses.replace(make_config(), network_id="another.network"))
    there.append(make_leaf(Request(recipe()), BUILDER_KEYS[0], 0, network="another.network"))
    there.append(elsewhere)
    driver.append(make_leaf(commit, BUILDER_KEYS[0], 1))
    assert driver.state.size == there.state.size == 2


def test_a_replaced_key_signs_until_its_end_time() -> None:
    old, new, rotated_at = BUILDER_KEYS[0], Signer(name(1), b"n" * 32), 100
    config = dataclasses.replace(
        make_config(),
        builders={**make_config().builders, name(1): new.verifier()},
        retired_keys={name(1): [RetiredKey(old.verifier(), rotated_at)]},
    )
    assert config.builder_key(name(1), rotated_at - 1) == old.verifier()
    assert config.builder_key(name(1), rotated_at) == new.verifier()
    assert config.builder_key(name(2), 0) == BUILDER_KEYS[1].verifier()
    assert config.builder_key("stranger", 0) is None
    driver = Driver(config)
    job = driver.request(now=0)
    rejected_unchanged(driver, "unregistered-key", make_leaf(Request(recipe("x")), new, 99))
    driver.append(make_leaf(Commit(job, name(1), A), old, rotated_at - 1))  # still checked:
    forged = SignedEntry(Request(recipe("y")), KeyRef(name(1), old.key_id), bytes(64))
    rejected_unchanged(driver, "bad-signature", Leaf(forged, rotated_at - 1))
    rejected_unchanged(driver, "unregistered-key", make_leaf(Request(recipe("y")), old, 100))
    driver.append(make_leaf(Request(recipe("y")), new, rotated_at))
    assert driver.state.size == 3


@pytest.mark.parametrize(
    "retired",
    [
        {"stranger": [RetiredKey(BUILDER_KEYS[0].verifier(), 1)]},
        {name(1): [RetiredKey(BUILDER_KEYS[1].verifier(), 1)]},
        {name(1): [RetiredKey(Signer(name(1), b"a" * 32).verifier(), 0)]},
        {
            name(1): [
                RetiredKey(Signer(name(1), b"a" * 32).verifier(), 5),
                RetiredKey(Signer(name(1), b"b" * 32).verifier(), 5),
            ]
        },
    ],
)
def test_retired_keys_must_be_a_builders_in_time_order(retired: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        dataclasses.replace(make_config(), retired_keys=retired)


def test_time_must_not_go_backwards() -> None:
    driver = Driver()
    driver.request(now=50)
    job2 = Request(recipe("serde"))
    rejected_unchanged(driver, "time-backwards", make_leaf(job2, BUILDER_KEYS[1], 49))
    driver.append(make_leaf(job2, BUILDER_KEYS[1], 50))
    assert driver.state.last_time == 50


def test_duplicate_request_and_unknown_job() -> None:
    driver = Driver()
    job = driver.request()
    rejected_unchanged(
        driver, "duplicate-request", make_leaf(Request(recipe()), BUILDER_KEYS[2], 1)
    )
    other = digest("no such job")
    unknown: list[tuple[Entry, Signer]] = [
        (Commit(other, name(1), A), BUILDER_KEYS[0]),
        (Reveal(other, name(1), A, output_digest=A, manifest_sha256=A), BUILDER_KEYS[0]),
        (Close(other, "deadline", ()), LOG_KEY),
        (DiffReport(other, A, tuple(sorted((A, B)))), LOG_KEY),
    ]
    for entry, key in unknown:
        rejected_unchanged(driver, "unknown-job", make_leaf(entry, key, 1))
    assert list(driver.state.jobs) == [job]


# ---------------------------------------------------------------------------- commits


def test_commit_rules() -> None:
    driver = Driver()
    job = driver.request(now=100)
    driver.commit(job, 1, A, 100)
    again = Commit(job, name(1), B)
    rejected_unchanged(driver, "duplicate-commit", make_leaf(again, BUILDER_KEYS[0], 200))
    late = make_leaf(Commit(job, name(2), A), BUILDER_KEYS[1], 100 + BUILD_DEADLINE)
    rejected_unchanged(driver, "commit-after-deadline", late)
    driver.commit(job, 2, A, 100 + BUILD_DEADLINE - 1)  # the last millisecond is in time
    assert driver.tick(100 + BUILD_DEADLINE) == [Close(job, "deadline", (name(1), name(2)))]
    third = make_leaf(Commit(job, name(3), B), BUILDER_KEYS[2], 1100)
    rejected_unchanged(driver, "commit-after-close", third)


def test_all_committed_closes_before_the_deadline() -> None:
    driver = Driver()
    job = driver.request()
    for time, i in enumerate((3, 1, 4)):
        driver.commit(job, i, A, time)
        assert driver.state.due_entries(40) == []
    driver.commit(job, 2, B, 40)
    close = Close(job, "all-committed", (name(1), name(2), name(3), name(4)))
    assert driver.state.due_entries(40) == [close]
    assert driver.tick(40) == [close]
    assert driver.state.jobs[job].close_time == 40


# ---------------------------------------------------------------------------- reveals


def test_reveal_rules() -> None:
    driver = Driver()
    job = driver.request()
    driver.commit(job, 1, A, 1)
    driver.commit(job, 2, A, 2)
    nonce = driver.nonces[job, name(1)]
    reveal = Reveal(job, name(1), nonce, output_digest=A, manifest_sha256=A)
    rejected_unchanged(driver, "reveal-before-close", make_leaf(reveal, BUILDER_KEYS[0], 3))
    driver.tick(BUILD_DEADLINE)  # close at 1000
    outsider = Reveal(job, name(3), nonce, output_digest=A, manifest_sha256=A)
    rejected_unchanged(driver, "reveal-not-committed", make_leaf(outsider, BUILDER_KEYS[2], 1000))
    driver.append(make_leaf(reveal, BUILDER_KEYS[0], 1000))
    rejected_unchanged(driver, "duplicate-reveal", make_leaf(reveal, BUILDER_KEYS[0], 1001))
    late = Reveal(job, name(2), driver.nonces[job, name(2)], output_digest=A, manifest_sha256=A)
    end = BUILD_DEADLINE + REVEAL_DEADLINE
    rejected_unchanged(driver, "reveal-after-deadline", make_leaf(late, BUILDER_KEYS[1], end))
    driver.tick(end)
    verdict = driver.verdict(job)
    assert (verdict.outcome, verdict.reason, verdict.missing) == (
        "not-reproduced",
        "deadline",
        (name(2),),
    )
    assert verdict.groups == (Group(A, (name(1),)),)
    rejected_unchanged(driver, "reveal-after-verdict", make_leaf(late, BUILDER_KEYS[1], end))


def test_duplicate_reveal_is_reported_before_reveal_after_verdict() -> None:
    driver = Driver(make_config(n=1))
    job = driver.request()
    driver.commit(job, 1, A, 0)
    driver.tick(0)
    driver.reveal(job, 1, A, 0)
    driver.tick(0)
    assert driver.verdict(job).outcome == "reproduced"
    nonce = driver.nonces[job, name(1)]
    again = Reveal(job, name(1), nonce, output_digest=A, manifest_sha256=A)
    rejected_unchanged(driver, "duplicate-reveal", make_leaf(again, BUILDER_KEYS[0], 1))


def test_mismatched_reveal_is_accepted_as_evidence() -> None:
    driver = Driver()
    job = driver.request()
    for i in range(1, 5):
        driver.commit(job, i, A, i)
    driver.tick(5)
    driver.reveal(job, 1, A, 10)
    driver.reveal(job, 2, B, 11)  # committed to A: a lie
    driver.reveal(job, 3, A, 12)
    assert driver.state.jobs[job].reveals[name(2)].opens_commit is False
    driver.reveal(job, 4, A, 13)
    driver.tick(13)
    verdict = driver.verdict(job)
    assert verdict.outcome == "reproduced" and verdict.reason == "all-revealed"
    assert verdict.agreeing == (name(1), name(3), name(4)) and verdict.output_digest == A
    commit_leaf = 2  # leaf 0 is the request, 1 the commit of builder-1
    reveal_leaf = driver.state.jobs[job].reveals[name(2)].leaf_index
    assert verdict.evidence == (Evidence(name(2), commit_leaf, reveal_leaf),)
    assert isinstance(driver.leaves[commit_leaf].entry.entry, Commit)
    assert driver.leaves[reveal_leaf].entry.entry.builder == name(2)  # type: ignore[union-attr]


def test_failure_reveals() -> None:
    driver = Driver()
    job = driver.request()
    driver.commit(job, 1, None, 1, failure="linker not found")
    driver.commit(job, 2, None, 2, failure="out of memory")
    driver.commit(job, 3, A, 3)
    driver.commit(job, 4, None, 4, failure="honest")
    driver.tick(4)
    driver.reveal(job, 1, None, 5, failure="linker not found")
    driver.reveal(job, 2, None, 6, failure="different story")  # does not open its commit
    driver.reveal(job, 3, A, 7)
    driver.tick(4 + REVEAL_DEADLINE)
    verdict = driver.verdict(job)
    assert verdict.outcome == "not-reproduced"
    reveal_leaf = driver.state.jobs[job].reveals[name(1)].leaf_index
    assert verdict.failures == (Failure(name(1), reveal_leaf),)
    assert driver.leaves[reveal_leaf].entry.entry == Reveal(
        job, name(1), driver.nonces[job, name(1)], failure="linker not found"
    )
    assert [e.builder for e in verdict.evidence] == [name(2)]
    assert verdict.groups == (Group(A, (name(3),)),) and verdict.missing == (name(4),)


def test_all_failures_give_failed() -> None:
    driver = Driver(make_config(n=2))
    job = driver.request()
    for i in (1, 2):
        driver.commit(job, i, None, i, failure="no")
    driver.tick(3)
    for i in (1, 2):
        driver.reveal(job, i, None, 3, failure="no")
    driver.tick(3)
    verdict = driver.verdict(job)
    assert (verdict.outcome, verdict.groups, len(verdict.failures)) == ("failed", (), 2)


# ---------------------------------------------------------------------------- verdicts


def run_job(outputs: dict[int, str | None], revealed: dict[int, str] | None = None) -> Verdict:
    """Builders i commit outputs[i] and reveal revealed[i] (default: the same)."""
    driver = Driver()
    job = driver.request()
    for i, output in outputs.items():
        driver.commit(job, i, output, i)
    driver.tick(BUILD_DEADLINE)
    for i, output in (revealed if revealed is not None else outputs).items():
        if output is not None:
            driver.reveal(job, i, output, BUILD_DEADLINE + i)
    driver.tick(BUILD_DEADLINE + REVEAL_DEADLINE)
    return driver.verdict(job)


def test_three_of_four_agree() -> None:
    verdict = run_job({1: A, 2: A, 3: B, 4: A})
    assert verdict.outcome == "reproduced" and verdict.threshold == 3
    assert verdict.groups == (Group(A, (name(1), name(2), name(4))), Group(B, (name(3),)))


def test_twins_two_against_two() -> None:
    verdict = run_job({1: B, 2: A, 3: B, 4: A})
    assert verdict.outcome == "not-reproduced" and verdict.output_digest is None
    assert verdict.groups == tuple(
        sorted(
            [Group(A, (name(2), name(4))), Group(B, (name(1), name(3)))],
            key=lambda g: g.output_digest,
        )
    )


def test_two_of_four_is_not_enough() -> None:
    verdict = run_job({1: A, 2: A, 3: B})
    assert verdict.outcome == "not-reproduced" and verdict.missing == ()
    assert run_job({1: A, 2: A, 3: A}).outcome == "reproduced"


def test_missing_reveals_are_listed() -> None:
    verdict = run_job({1: A, 2: A, 3: A, 4: A}, {1: A, 3: A, 4: A})
    assert verdict.outcome == "reproduced" and verdict.missing == (name(2),)
    assert verdict.reason == "deadline"


def test_no_commits_closes_and_fails_at_once() -> None:
    driver = Driver()
    job = driver.request(now=7)
    assert driver.state.due_entries(7 + BUILD_DEADLINE - 1) == []
    due = driver.tick(7 + BUILD_DEADLINE)
    assert due == [
        Close(job, "deadline", ()),
        Verdict(job, "all-revealed", "failed", 3, None, (), ()),
    ]
    assert driver.state.due_entries(10**9) == []


def test_zero_reveal_deadline_gives_the_verdict_with_the_close() -> None:
    driver = Driver(make_config(reveal=0))
    job = driver.request()
    driver.commit(job, 1, A, 0)
    due = driver.tick(BUILD_DEADLINE)
    assert [type(e) for e in due] == [Close, Verdict]
    assert driver.verdict(job).missing == (name(1),)


def test_due_entries_follow_request_order() -> None:
    driver = Driver()
    jobs = [driver.request(now=t, package=p) for t, p in [(0, "a"), (5, "b"), (9, "c")]]
    driver.commit(jobs[1], 1, A, 10)
    due = driver.state.due_entries(BUILD_DEADLINE + 9)
    assert [(e.job, type(e)) for e in due] == [
        (jobs[0], Close),
        (jobs[0], Verdict),
        (jobs[1], Close),
        (jobs[2], Close),
        (jobs[2], Verdict),
    ]
    with pytest.raises(UsageError):
        driver.state.due_entries(9)  # before the last leaf


def test_log_entries_must_be_due_and_exact() -> None:
    driver = Driver()
    job = driver.request()
    driver.commit(job, 1, A, 1)
    driver.commit(job, 2, A, 2)
    early = make_leaf(Close(job, "deadline", (name(1), name(2))), LOG_KEY, BUILD_DEADLINE - 1)
    rejected_unchanged(driver, "log-entry-not-due", early)
    verdict = Verdict(job, "all-revealed", "failed", 3, None, (), ())
    rejected_unchanged(driver, "log-entry-not-due", make_leaf(verdict, LOG_KEY, 5000))
    for wrong in [
        Close(job, "deadline", (name(1),)),
        Close(job, "all-committed", (name(1), name(2))),
        Close(job, "deadline", (name(1), name(2), name(3))),
    ]:
        rejected_unchanged(driver, "log-entry-mismatch", make_leaf(wrong, LOG_KEY, BUILD_DEADLINE))
    driver.tick(BUILD_DEADLINE)
    again = make_leaf(Close(job, "deadline", (name(1), name(2))), LOG_KEY, BUILD_DEADLINE)
    rejected_unchanged(driver, "log-entry-not-due", again)
    driver.reveal(job, 1, A, BUILD_DEADLINE)
    rejected_unchanged(driver, "log-entry-not-due", make_leaf(verdict, LOG_KEY, BUILD_DEADLINE))
    driver.reveal(job, 2, A, BUILD_DEADLINE + 1)
    rejected_unchanged(
        driver, "log-entry-mismatch", make_leaf(verdict, LOG_KEY, BUILD_DEADLINE + 1)
    )
    driver.tick(BUILD_DEADLINE + 1)
    assert driver.verdict(job).outcome == "not-reproduced"  # 2 < k = 3
    rejected_unchanged(driver, "log-entry-not-due", make_leaf(driver.verdict(job), LOG_KEY, 9999))


# ---------------------------------------------------------------------------- diff reports


def test_diff_reports() -> None:
    driver = Driver()
    job = driver.request()
    pair = tuple(sorted((A, B)))
    report = DiffReport(job, digest("report"), pair)
    driver.commit(job, 1, A, 1)
    driver.commit(job, 2, B, 2)
    driver.tick(BUILD_DEADLINE)
    rejected_unchanged(driver, "diff-report-without-mismatch", make_leaf(report, LOG_KEY, 1000))
    driver.reveal(job, 1, A, 1000)
    driver.reveal(job, 2, B, 1000)
    driver.tick(1000)
    unknown = DiffReport(job, digest("report"), tuple(sorted((A, C))))
    rejected_unchanged(driver, "diff-report-unknown-group", make_leaf(unknown, LOG_KEY, 1000))
    driver.append(make_leaf(report, LOG_KEY, 1001))
    driver.append(make_leaf(report, BUILDER_KEYS[3], 1002))
    assert driver.state.jobs[job].diff_reports == (report, report)
    copied = driver.state.copy()
    copied.apply(make_leaf(report, BUILDER_KEYS[0], 1003))
    assert len(copied.jobs[job].diff_reports) == 3 and len(driver.state.jobs[job].diff_reports) == 2
    reproduced = Driver(make_config(n=1))
    job = reproduced.request()
    reproduced.commit(job, 1, A, 0)
    reproduced.tick(0)
    reproduced.reveal(job, 1, A, 0)
    reproduced.tick(0)
    late = make_leaf(DiffReport(job, digest("r"), pair), LOG_KEY, 1)
    rejected_unchanged(reproduced, "diff-report-without-mismatch", late)


# ---------------------------------------------------------------------------- validation


def test_validate_leaves_checks_clock_and_leaves_state_alone() -> None:
    driver = Driver()
    job = driver.request()
    driver.commit(job, 1, A, 10)
    leaves = list(driver.leaves)
    fresh = ProtocolState(make_config())
    validated = validate_leaves(fresh, leaves, now_ms=5, max_skew_ms=5)
    assert validated == driver.state and fresh.size == 0
    error = violation("time-ahead", lambda: validate_leaves(fresh, leaves, now_ms=4, max_skew_ms=5))
    assert error.leaf_index == 1
    assert fresh == ProtocolState(make_config())


def test_validate_leaves_bounds_the_clock_both_ways() -> None:
    config = make_config(build=10**6)
    driver = Driver(config)
    job = driver.request(now=1_000)
    driver.commit(job, 1, A, 1_000)
    driver.commit(job, 2, A, 40_000)
    leaves, fresh = list(driver.leaves), ProtocolState(config)

    def check(now: int, last_accepted: int | None) -> ProtocolState:
        return validate_leaves(fresh, leaves, now, 30_000, last_accepted_ms=last_accepted)

    # Behind: the batch's newest leaf against the last acceptance; older ones may be older.
    assert check(70_000, 70_000) == driver.state  # 30 s behind exactly
    error = violation("time-behind", lambda: check(70_001, 70_001))
    assert error.leaf_index == 2 and fresh.size == 0
    assert check(10**9, 40_000) == driver.state  # proposed late, on time when appended
    assert check(10**9, None) == driver.state  # nothing to compare with: not judged
    # Ahead: every leaf against the clock now.
    assert check(10_000, None) == driver.state  # 30 s ahead exactly
    error = violation("time-ahead", lambda: check(9_999, None))
    assert error.leaf_index == 2


def test_apply_bytes() -> None:
    driver = Driver()
    job = driver.request()
    fresh = ProtocolState(make_config())
    assert fresh.apply_bytes(driver.leaves[0].to_bytes()) == driver.leaves[0]
    assert list(fresh.jobs) == [job]
    with pytest.raises(FormatError):
        fresh.apply_bytes(b"{}")


# ---------------------------------------------------------------------------- properties

behaviours = st.sampled_from(["A"] * 5 + ["B", "C", "fail", "liar", "silent", "absent"])


def offsets(deadline: int) -> st.SearchStrategy[int]:
    """Mostly within ``deadline``, sometimes at or after it."""
    late = st.integers(deadline, deadline * 2 + 10)
    if deadline == 0:
        return late
    return rarely(late, st.integers(0, deadline - 1))


def rarely(
    exception: st.SearchStrategy[int], rule: st.SearchStrategy[int]
) -> st.SearchStrategy[int]:
    """``exception`` one time in ten, else ``rule``."""
    return st.tuples(st.integers(0, 9), exception, rule).map(lambda t: t[1] if t[0] == 0 else t[2])


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 7))
    k = draw(st.integers(n // 2 + 1, n))
    deadlines = rarely(st.just(0), st.integers(1, 3000))
    build, reveal = draw(deadlines), draw(deadlines)
    builders = range(1, n + 1)
    return {
        "config": make_config(n, k, build, reveal),
        "request_time": draw(st.integers(0, 10**6)),
        "behaviour": {i: draw(behaviours) for i in builders},
        "commit_at": {i: draw(offsets(build)) for i in builders},
        "reveal_at": {i: draw(offsets(reveal)) for i in builders},
        "order_seed": draw(st.randoms(use_true_random=False)),
    }


def play(s: dict[str, Any]) -> tuple[Driver, str, dict[int, str]]:
    """Run one job; returns the driver, the job, and what each builder's accepted leaf was."""
    driver = Driver(s["config"])
    start = s["request_time"]
    job = driver.request(start)
    accepted: dict[int, str] = {}
    outputs = {"A": A, "B": B, "C": C, "liar": A, "silent": A, "fail": None}
    committers = [i for i, b in s["behaviour"].items() if b != "absent"]
    s["order_seed"].shuffle(committers)
    for i in sorted(committers, key=lambda i: s["commit_at"][i]):  # stable: shuffled ties
        kind = s["behaviour"][i]
        try:
            driver.commit(job, i, outputs[kind], start + s["commit_at"][i], failure="broken")
            accepted[i] = "committed"
        except ProtocolViolation as error:
            assert error.rule in {"commit-after-deadline", "commit-after-close"}
    close_time = max(driver.state.last_time, start + s["config"].build_deadline_ms)
    driver.tick(close_time)
    revealers = [i for i in accepted if s["behaviour"][i] != "silent"]
    s["order_seed"].shuffle(revealers)
    for i in sorted(revealers, key=lambda i: s["reveal_at"][i]):
        kind = s["behaviour"][i]
        output = B if kind == "liar" else outputs[kind]
        try:
            driver.reveal(job, i, output, close_time + s["reveal_at"][i], failure="broken")
            accepted[i] = "revealed"
        except ProtocolViolation as error:
            assert error.rule in {"reveal-after-deadline", "reveal-after-verdict"}
    driver.tick(max(driver.state.last_time, close_time + s["config"].reveal_deadline_ms))
    return driver, job, accepted


def expected_verdict(
    s: dict[str, Any], accepted: dict[int, str]
) -> tuple[str, dict[str, set[str]]]:
    groups: dict[str, set[str]] = {}
    for i, state in accepted.items():
        kind = s["behaviour"][i]
        if state == "revealed" and kind in {"A", "B", "C"}:
            groups.setdefault(kind, set()).add(name(i))
    largest = max((len(g) for g in groups.values()), default=0)
    if largest >= s["config"].threshold:
        return "reproduced", groups
    return ("not-reproduced" if groups else "failed"), groups


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_verdict_matches_a_reference_model(s: dict[str, Any]) -> None:
    driver, job, accepted = play(s)
    verdicts = [leaf.entry.entry for leaf in driver.leaves if isinstance(leaf.entry.entry, Verdict)]
    assert len(verdicts) == 1 and verdicts[0] == driver.verdict(job)
    verdict = verdicts[0]
    event(f"{verdict.outcome}, {len(verdict.evidence)} lying")
    outcome, groups = expected_verdict(s, accepted)
    assert verdict.outcome == outcome
    letter = {A: "A", B: "B", C: "C"}
    assert {letter[g.output_digest]: set(g.builders) for g in verdict.groups} == groups
    if outcome == "reproduced":
        assert set(verdict.agreeing) == max(groups.values(), key=len)
    committed = {name(i) for i in accepted}
    revealed = {name(i) for i, state in accepted.items() if state == "revealed"}
    liars = {name(i) for i in accepted if s["behaviour"][i] == "liar"}
    assert set(verdict.missing) == committed - revealed
    assert {e.builder for e in verdict.evidence} == liars & revealed
    assert {f.builder for f in verdict.failures} == {
        name(i) for i in accepted if s["behaviour"][i] == "fail"
    } & revealed


@settings(max_examples=60, deadline=None)
@given(scenarios(), st.integers(0, 5000))
def test_same_leaves_give_same_state_and_due_entries(s: dict[str, Any], later: int) -> None:
    driver, _, _ = play(s)
    replayed = ProtocolState(s["config"])
    for leaf in driver.leaves:
        replayed.apply(Leaf.parse(leaf.to_bytes()))
    assert replayed == driver.state
    prefix = ProtocolState(s["config"])
    for leaf in driver.leaves[: len(driver.leaves) // 2]:
        prefix.apply(leaf)
    twin = validate_leaves(
        ProtocolState(s["config"]), driver.leaves[: len(driver.leaves) // 2], 0, 2**52
    )
    now = prefix.last_time + later
    assert twin == prefix and twin.due_entries(now) == prefix.due_entries(now)
    # Validating the rest on top of the prefix gives the full state and leaves the prefix alone.
    rest = driver.leaves[len(driver.leaves) // 2 :]
    assert validate_leaves(prefix, rest, 0, 2**52) == driver.state
    assert prefix == twin


@settings(max_examples=60, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_order_of_simultaneous_entries_does_not_change_the_verdict(
    s: dict[str, Any], other_order: Any
) -> None:
    at_once = s | {
        "commit_at": dict.fromkeys(s["commit_at"], 0),
        "reveal_at": dict.fromkeys(s["reveal_at"], 0),
    }
    driver, job, _ = play(at_once)
    reordered, _, _ = play(at_once | {"order_seed": other_order})
    first, second = driver.verdict(job), reordered.verdict(job)
    # Only the leaf indices inside evidence and failures may differ.
    assert [e.builder for e in first.evidence] == [e.builder for e in second.evidence]
    assert [f.builder for f in first.failures] == [f.builder for f in second.failures]
    assert dataclasses.replace(first, evidence=(), failures=()) == dataclasses.replace(
        second, evidence=(), failures=()
    )


def _tamperings(verdict: Verdict) -> list[Verdict]:
    """Well-formed verdicts that differ from ``verdict``."""
    changes: list[dict[str, Any]] = [
        {"threshold": verdict.threshold + 1},
        {"reason": "deadline" if verdict.reason == "all-revealed" else "all-revealed"},
        {"missing": tuple(sorted({*verdict.missing, "zz-not-a-builder"}))},
        {"evidence": verdict.evidence[1:]},
        {"failures": verdict.failures[1:]},
    ]
    if verdict.outcome == "reproduced":
        changes.append({"outcome": "not-reproduced", "output_digest": None, "agreeing": ()})
    if verdict.groups:
        top = verdict.groups[0]
        changes.append(
            {
                "outcome": "reproduced",
                "threshold": len(top.builders),
                "output_digest": top.output_digest,
                "agreeing": top.builders,
            }
        )
        rest = verdict.groups[1:]
        changes.append(
            {
                "groups": rest,
                "outcome": "not-reproduced" if rest else "failed",
                "output_digest": None,
                "agreeing": (),
            }
        )
    tampered = []
    for change in changes:
        try:
            option = dataclasses.replace(verdict, **change)
        except FormatError:
            continue
        if option != verdict:
            tampered.append(option)
    return tampered


@settings(max_examples=80, deadline=None)
@given(scenarios())
def test_a_wrong_verdict_is_rejected(s: dict[str, Any]) -> None:
    driver, job, _ = play(s)
    position = next(
        i for i, leaf in enumerate(driver.leaves) if isinstance(leaf.entry.entry, Verdict)
    )
    before = validate_leaves(ProtocolState(s["config"]), driver.leaves[:position], 0, 2**52)
    honest = driver.leaves[position]
    assert validate_leaves(before, [honest], 0, 2**52).jobs[job].verdict == honest.entry.entry
    assert isinstance(honest.entry.entry, Verdict)
    for wrong in _tamperings(honest.entry.entry):
        leaf = make_leaf(wrong, LOG_KEY, honest.time_ms)
        with pytest.raises(ProtocolViolation) as info:
            validate_leaves(before, [leaf], 0, 2**52)
        assert info.value.rule == "log-entry-mismatch"
