"""The host variations (builder/variation.py): assignment, spreading, specs, the explain
step's "differ only in" reasoning, and how the sandbox applies a variation (environment,
command, CPUs, wall-clock limit). Pure; exhaustive over every n = 3f+1 up to 100."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest

from builder.sandbox import (
    FAKETIME_LIBRARY,
    RUSTC_WRAPPER,
    WRAPPER_DIR,
    Applied,
    SandboxJob,
    SandboxLimits,
    applied,
    sandbox_command,
    sandbox_environment,
    wall_limit,
)
from builder.variation import (
    CLOCK_MIN_DAYS,
    CLOCK_SPAN_DAYS,
    DIMENSIONS,
    HOSTNAMES,
    Variation,
    VariedGroup,
    assign,
    assignments,
    clock_shift_days,
    conclusion,
    cpu_count,
    evidence,
    parse_variation,
    separating,
    variation_of,
    variation_report,
)
from logserver.core import canonical_json
from logserver.core.errors import FormatError, OperationalError

NETWORK_SIZES = [3 * f + 1 for f in range(34)]  # 1, 4, 7, ..., 100
JOBS = [hashlib.sha256(b"job %d" % i).hexdigest() for i in range(40)]


def sides(variations: list[Variation], dimension: str) -> Counter[object]:
    return Counter(v.value(dimension) for v in variations)


@pytest.mark.parametrize("n", NETWORK_SIZES)
def test_every_job_has_both_sides_of_every_dimension_spread_evenly(n: int) -> None:
    f = (n - 1) // 3
    for job in JOBS:
        variations = assignments(job, n)
        assert len(variations) == n
        if job in JOBS[:3]:  # one function: any builder's variation can be recomputed alone
            assert variations == [assign(job, p, n) for p in range(n)]
        if n == 1:  # a lone builder builds under the plain conditions
            assert variations == [Variation()]
            continue
        for dimension in DIMENSIONS:
            counts = sides(variations, dimension)
            assert len(counts) == 2, (n, job, dimension, counts)
            spread = max(counts.values()) - min(counts.values())
            # CPU count and clock as evenly as n allows; the host name within two
            assert spread <= (1 if dimension != "hostname" else 2), (n, dimension, counts)
            # A build that depends on this dimension alone splits the builders by it, and
            # neither side reaches the 2f+1 agreeing builders of a "reproduced" verdict.
            assert max(counts.values()) < 2 * f + 1, (n, dimension, counts)


@pytest.mark.parametrize("n", [n for n in NETWORK_SIZES if n >= 4])
def test_the_dimensions_are_pairwise_independent(n: int) -> None:
    """Every combination of the sides of any two dimensions occurs: e.g. the clock shift is
    independent of the CPU split, so no dimension's split is another's."""
    for job in JOBS:
        variations = assignments(job, n)
        for i, first in enumerate(DIMENSIONS):
            for second in DIMENSIONS[i + 1 :]:
                combos = {(v.value(first), v.value(second)) for v in variations}
                assert len(combos) == 4, (n, job, first, second, combos)


@pytest.mark.parametrize("n", [n for n in NETWORK_SIZES if n >= 4])
def test_a_build_depending_on_one_dimension_is_explained_by_it(n: int) -> None:
    """VariedGroup the builders as a build depending only on one dimension would: the reasoning of
    the diff report names exactly that dimension."""
    for job in JOBS[:10]:
        variations = assignments(job, n)
        for dimension in DIMENSIONS:
            values = sorted({v.value(dimension) for v in variations}, key=str)
            groups = [[v for v in variations if v.value(dimension) == x] for x in values]
            assert separating(groups[0], groups[1]) == (dimension,)


def test_four_builders_get_each_combination_once() -> None:
    for job in JOBS:
        variations = assignments(job, 4)
        combos = {(v.cpus, v.clock_days != 0) for v in variations}
        assert combos == {(1, False), (1, True), (None, False), (None, True)}
        for v in variations:  # the host name is (1 CPU) XOR (shifted)
            assert v.hostname == HOSTNAMES[(v.cpus == 1) ^ (v.clock_days != 0)]


def test_the_clock_shift_is_the_jobs_and_always_another_year() -> None:
    shifts = set()
    for job in JOBS:
        shift = clock_shift_days(job)
        shifts.add(shift)
        assert CLOCK_MIN_DAYS <= shift < CLOCK_MIN_DAYS + CLOCK_SPAN_DAYS and shift > 365
        for n in (4, 7, 100):
            assert {v.clock_days for v in assignments(job, n)} == {0, shift}
    assert len(shifts) > 30  # it depends on the job


def test_which_builder_builds_with_one_cpu_changes_from_job_to_job() -> None:
    jobs = [hashlib.sha256(b"other %d" % i).hexdigest() for i in range(400)]
    for n in (4, 7, 10):
        one_cpu = Counter(p for job in jobs for p, v in enumerate(assignments(job, n)) if v.cpus)
        for position in range(n):
            assert 0.35 < one_cpu[position] / len(jobs) < 0.65, (n, position, one_cpu)


def test_assignment_rejects_what_is_not_a_job_or_a_position() -> None:
    with pytest.raises(ValueError):
        assign("not a job", 0, 4)
    with pytest.raises(ValueError):
        assign(JOBS[0], 4, 4)
    with pytest.raises(ValueError):
        assignments(JOBS[0], 0)
    names = ["w1", "w2", "w3", "w4"]
    assert variation_of(JOBS[0], "w3", names) == assign(JOBS[0], 2, 4)
    with pytest.raises(ValueError):
        variation_of(JOBS[0], "w5", names)


def test_specs_round_trip_and_bad_ones_are_refused() -> None:
    for job in JOBS[:5]:
        for v in assignments(job, 7):
            assert parse_variation(v.spec()) == v
    assert parse_variation("cpus=1,clock=+3d,hostname=builder-b") == Variation(1, 3, "builder-b")
    assert parse_variation("clock=400") == Variation(None, 400, HOSTNAMES[0])
    assert parse_variation("cpus=all") == Variation()
    assert Variation(1, 401, "host-b.example.net").spec() == (
        "cpus=1,clock=+401d,hostname=host-b.example.net"
    )
    for bad in (
        "",
        "cpus=0",
        "cpus=-1",
        "cpus=two",
        "cpus=1,cpus=2",
        "clock=-3d",
        "clock=+3h",
        "clock=99999999d",
        "hostname=Bad_Name",
        "hostname=-x",
        "memory=1g",
        "cpus",
    ):
        with pytest.raises(FormatError):
            parse_variation(bad)


def test_cpu_count_is_the_limit_for_all_and_never_more_than_the_host() -> None:
    assert cpu_count(Variation(), limit=2, host_cpus=8) == 2
    assert cpu_count(Variation(), limit=2, host_cpus=1) == 1
    assert cpu_count(Variation(cpus=1), limit=2, host_cpus=8) == 1
    assert cpu_count(Variation(cpus=4), limit=2, host_cpus=8) == 4  # reproducing another host
    with pytest.raises(ValueError, match="this host has 2"):
        cpu_count(Variation(cpus=8), limit=2, host_cpus=2)


def test_evidence_is_canonical_json_naming_the_variation_and_what_was_applied() -> None:
    data = evidence(Variation(1, 400, "builder-a"), {"cpus": 1, "cpuset": "0"})
    value = canonical_json.decode_object(data)
    assert value["variation"] == {"cpus": 1, "clock_days": 400, "hostname": "builder-a"}
    assert value["spec"] == "cpus=1,clock=+400d,hostname=builder-a"
    assert value["applied"] == {"cpus": 1, "cpuset": "0"}


# ----- the explain step's reasoning --------------------------------------------------------


def group(digest: str, *members: tuple[str, Variation | None]) -> VariedGroup:
    return VariedGroup(digest, tuple(members))


ONE_A, ALL_B = Variation(1, 0, "builder-a"), Variation(None, 0, "host-b.example.net")
ONE_SHIFT_B, ALL_SHIFT_A = (
    Variation(1, 400, "host-b.example.net"),
    Variation(None, 400, "builder-a"),
)


def test_groups_differing_only_in_cpu_count_are_named() -> None:
    one = group("1" * 64, ("w1", ONE_A), ("w3", ONE_SHIFT_B))
    every = group("2" * 64, ("w2", ALL_B), ("w4", ALL_SHIFT_A))
    assert separating(one.known(), every.known()) == ("cpus",)
    text = conclusion(one, every)
    assert text.startswith("the groups differ only in CPU count:")
    assert "group 1 built with 1 CPU" in text and "group 2 with all CPUs" in text
    report = variation_report([one, every])
    assert report.splitlines()[2] == f"group 1: output digest {'1' * 64}, 2 builders"
    assert "  w3: cpus=1,clock=+400d,hostname=host-b.example.net" in report
    assert "the groups differ only in CPU count" in report


def test_groups_differing_only_in_the_clock_are_named() -> None:
    true = group("1" * 64, ("w1", ONE_A), ("w2", ALL_B))
    shifted = group("2" * 64, ("w3", ONE_SHIFT_B), ("w4", ALL_SHIFT_A))
    text = conclusion(true, shifted)
    assert text.startswith("the groups differ only in clock:")
    assert "the true clock" in text and "the clock 400 days ahead" in text


def test_groups_not_separated_by_any_dimension_say_so() -> None:
    a = group("1" * 64, ("w1", ONE_A), ("w4", ALL_SHIFT_A))
    b = group("2" * 64, ("w2", ALL_B), ("w3", ONE_SHIFT_B))
    assert separating(a.known(), b.known()) == ("hostname",)
    c = group("3" * 64, ("w1", ONE_A), ("w2", ALL_B))
    d = group("4" * 64, ("w3", ONE_SHIFT_B), ("w5", ONE_A))
    assert separating(c.known(), d.known()) == ()
    assert "do not differ in any varied dimension" in conclusion(c, d)


def test_single_builders_differ_in_several_dimensions_and_no_cause_is_claimed() -> None:
    a, b = group("1" * 64, ("w1", ONE_A)), group("2" * 64, ("w2", ALL_B))
    assert separating(a.known(), b.known()) == ("cpus", "hostname")
    assert conclusion(a, b).startswith("the groups differ in CPU count and host name:")


def test_unknown_builders_give_no_conclusion() -> None:
    a, b = group("1" * 64, ("w1", None)), group("2" * 64, ("w2", ALL_B))
    assert "not known" in conclusion(a, b)
    assert "  w1: unknown" in variation_report([a, b])


# ----- how the sandbox applies a variation (builder/sandbox.py, pure part) -----------------


def sandbox_job(variation: Variation) -> SandboxJob:
    return SandboxJob(
        job_id=JOBS[0],
        image="synchronicity-build:0123456789abcdef",
        src_dir=Path("/host/src"),
        deps_dir=Path("/host/deps"),
        toolchain_dir=None,
        crate_name="itoa",
        crate_version="1.0.11",
        target="x86_64-unknown-linux-gnu",
        variation=variation,
    )


def test_the_environments_of_two_variations_differ_only_in_what_they_vary() -> None:
    plain = sandbox_environment(sandbox_job(Variation()), cpus=2)
    varied = sandbox_environment(sandbox_job(Variation(1, 400, HOSTNAMES[1])), cpus=1)
    assert plain["CARGO_BUILD_JOBS"] == "2" and varied["CARGO_BUILD_JOBS"] == "1"
    assert "LD_PRELOAD" not in plain and "FAKETIME" not in plain
    assert varied["LD_PRELOAD"] == FAKETIME_LIBRARY and varied["FAKETIME"] == "+400d"
    assert varied["FAKETIME_DONT_FAKE_MONOTONIC"] == "1"
    differing = {key for key in plain.keys() | varied.keys() if plain.get(key) != varied.get(key)}
    assert differing == {
        "CARGO_BUILD_JOBS",
        "LD_PRELOAD",
        "FAKETIME",
        "FAKETIME_DONT_FAKE_MONOTONIC",
    }
    for env in (plain, varied):  # what stays pinned
        assert env["SOURCE_DATE_EPOCH"] == "315532800" and env["TZ"] == "UTC"
        assert env["LC_ALL"] == "C.UTF-8" and env["RUSTC"] == RUSTC_WRAPPER
        assert env["PATH"].startswith(WRAPPER_DIR + ":")


def test_the_command_states_the_variation_first_and_runs_rustc_without_the_preload() -> None:
    job = sandbox_job(Variation(1, 400, HOSTNAMES[1]))
    script = sandbox_command(job, applied(job.variation, 2, 8, first_cpu=7))[2]
    lines = script.splitlines()
    assert lines[0] == "umask 022"
    assert lines[1].startswith(
        'echo "synchronicity: host variation cpus=1,clock=+400d,hostname=host-b.example.net '
        "(1 CPU of the host's 8: cpuset 7, quota 1, cargo jobs 1; clock: libfaketime +400d); "
        "the sandbox sees: nproc $(nproc), date $(date -u"
    )
    assert "unset LD_PRELOAD" in lines and 'exec /opt/rust/bin/rustc "$@"' in lines
    assert "umask 022" in script and "cargo build --locked --offline" in script


def test_cpus_are_a_window_of_the_hosts_and_the_wall_limit_scales() -> None:
    assert applied(Variation(), 2, 2, first_cpu=5) == Applied(2, "0,1", 2)
    assert applied(Variation(cpus=1), 2, 4, first_cpu=6) == Applied(1, "2", 4)
    assert applied(Variation(), 4, 8, first_cpu=6) == Applied(4, "0,1,6,7", 8)
    with pytest.raises(OperationalError, match="this host has 2"):
        applied(Variation(cpus=4), 2, 2)
    limits = SandboxLimits(cpus=2, wall_seconds=1800)
    assert wall_limit(limits, Applied(2, "0,1", 2)) == 1800
    assert wall_limit(limits, Applied(1, "0", 2)) == 3600  # the same CPU time on one CPU
    assert wall_limit(limits, Applied(4, "0-3", 4)) == 1800
