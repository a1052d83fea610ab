"""Host variations: what the builders of one job vary, so that a host-dependent build is caught.

Real hosts differ in what a build can observe; a build that depends on it is not reproducible,
yet builders that all run on alike hosts would certify it. So the builders of one job build
under different **variations** of three things that honestly differ between hosts
(spec/builds.md, section 4.1):

- the **CPU count** the build may use: 1, or all that the builder's limit gives
  (:attr:`Variation.cpus` ``None``); the sandbox applies it as cpuset, CPU quota and cargo's jobs;
- the **clock**: the true clock, or the wall clock shifted forward by ``clock_days`` days
  (libfaketime; ``SOURCE_DATE_EPOCH`` stays fixed);
- the **host name**: one of :data:`HOSTNAMES`.

The assignment is a pure function of (job id, the builder's position in the network config,
n), so anyone can recompute any builder's variation (:func:`assign`). The positions are ranked
by a hash of the job id and position, and the i-th in that order takes the i-th entry of the
cycle (all CPUs, true clock), (1 CPU, shifted), (1 CPU, true clock), (all CPUs, shifted); the
host name is the one of index (1 CPU) XOR (shifted). So with n >= 4 every job has both sides
of every dimension, CPU count and clock split as evenly as n allows, the host name within two,
and any two dimensions independent: a build that depends on one of them splits the builders
by it, and no side reaches the 2f+1 that a "reproduced" verdict needs. Which builders take
which side changes from job to job; the clock shift (between :data:`CLOCK_MIN_DAYS` and
``CLOCK_MIN_DAYS + CLOCK_SPAN_DAYS - 1`` days, so always another year) depends on the job only,
so that the builders of its shifted side share it.

:func:`separating` and :func:`variation_report` are the explain step's reasoning: the diff
report of a mismatch starts with each group's builders and variations, and says when the two
compared groups differ in exactly one dimension ("the groups differ only in CPU count: ...").
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from logserver.core import canonical_json
from logserver.core.errors import FormatError

SCHEMA = "synchronicity/variation/v1"
_RANK_DOMAIN = b"synchronicity/variation/v1 rank\n"
_CLOCK_DOMAIN = b"synchronicity/variation/v1 clock\n"
HOSTNAMES = ("builder-a", "host-b.example.net")
CLOCK_MIN_DAYS = 366
CLOCK_SPAN_DAYS = 365
MAX_CPUS = 1024
MAX_CLOCK_DAYS = 36_500
# (1 CPU, clock shifted) of the i-th builder in the job's order, i modulo 4.
_CYCLE = ((False, False), (True, True), (True, False), (False, True))
DIMENSIONS = ("cpus", "clock", "hostname")
DIMENSION_NAMES = {"cpus": "CPU count", "clock": "clock", "hostname": "host name"}
_JOB = re.compile(r"[0-9a-f]{64}")
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
)
_CLOCK = re.compile(r"\+?(0|[1-9][0-9]{0,4})d?")
_CPUS = re.compile(r"all|[1-9][0-9]{0,3}")


@dataclass(frozen=True)
class Variation:
    """The host conditions of one build: CPU count (None: all the builder's limit gives),
    wall clock shift in days (0: the true clock), host name."""

    cpus: int | None = None
    clock_days: int = 0
    hostname: str = HOSTNAMES[0]

    def __post_init__(self) -> None:
        if self.cpus is not None and not 1 <= self.cpus <= MAX_CPUS:
            raise ValueError(f"cpus must be between 1 and {MAX_CPUS} or None (all)")
        if not 0 <= self.clock_days <= MAX_CLOCK_DAYS:
            raise ValueError(f"the clock shift must be between 0 and {MAX_CLOCK_DAYS} days")
        if _HOSTNAME.fullmatch(self.hostname) is None:
            raise ValueError(f"{self.hostname!r} is not a host name")

    def spec(self) -> str:
        """``cpus=1,clock=+400d,hostname=builder-a``: what ``parse_variation`` reads."""
        cpus = "all" if self.cpus is None else str(self.cpus)
        return f"cpus={cpus},clock=+{self.clock_days}d,hostname={self.hostname}"

    def value(self, dimension: str) -> object:
        return {"cpus": self.cpus, "clock": self.clock_days, "hostname": self.hostname}[dimension]

    def to_value(self) -> dict[str, object]:
        """The JSON members of the variation (``cpus`` is ``"all"`` or a count)."""
        return {
            "cpus": "all" if self.cpus is None else self.cpus,
            "clock_days": self.clock_days,
            "hostname": self.hostname,
        }


def parse_variation(spec: str) -> Variation:
    """Read ``cpus=N|all,clock=+Nd,hostname=NAME`` (any of them, in any order; the others
    default to all CPUs, the true clock and ``builder-a``). FormatError if it does not parse."""
    values: dict[str, str] = {}
    for part in spec.split(","):
        key, separator, value = part.strip().partition("=")
        if not separator or key not in ("cpus", "clock", "hostname"):
            raise FormatError("variation", f"{part!r} is not cpus=N, clock=+Nd or hostname=NAME")
        if key in values:
            raise FormatError("variation", f"{key} is given twice")
        values[key] = value
    cpus, clock = values.get("cpus", "all"), values.get("clock", "0")
    if _CPUS.fullmatch(cpus) is None:
        raise FormatError("variation", f"cpus={cpus}: a CPU count from 1 to {MAX_CPUS} or all")
    if _CLOCK.fullmatch(clock) is None:
        raise FormatError("variation", f"clock={clock}: days ahead of the true clock, as +Nd")
    try:
        return Variation(
            cpus=None if cpus == "all" else int(cpus),
            clock_days=int(clock.strip("+d")),
            hostname=values.get("hostname", HOSTNAMES[0]),
        )
    except ValueError as e:
        raise FormatError("variation", str(e)) from e


def _check_job(job: str) -> None:
    if _JOB.fullmatch(job) is None:
        raise ValueError("a job id is 64 lowercase hex digits")


def clock_shift_days(job: str) -> int:
    """How far ahead the shifted clock of ``job`` runs: one value for every builder of the job."""
    _check_job(job)
    digest = hashlib.sha256(_CLOCK_DOMAIN + job.encode()).digest()
    return CLOCK_MIN_DAYS + int.from_bytes(digest[:8], "big") % CLOCK_SPAN_DAYS


def _rank_key(job: str, position: int) -> bytes:
    return hashlib.sha256(_RANK_DOMAIN + f"{job}\n{position}".encode()).digest()


def assignments(job: str, n: int) -> list[Variation]:
    """The variation of every builder of ``job``, by position in the network config."""
    _check_job(job)
    if n < 1:
        raise ValueError("a network has at least one builder")
    keys = [_rank_key(job, position) for position in range(n)]
    ranks = {
        position: index for index, position in enumerate(sorted(range(n), key=keys.__getitem__))
    }
    return [_variation(job, ranks[position]) for position in range(n)]


def assign(job: str, position: int, n: int) -> Variation:
    """The variation of the builder at ``position`` (0-based) of n, for ``job``."""
    _check_job(job)
    if not 0 <= position < n:
        raise ValueError(f"position {position} is not one of the {n} builders")
    key = _rank_key(job, position)
    rank = sum(1 for other in range(n) if _rank_key(job, other) < key)
    return _variation(job, rank)


def _variation(job: str, rank: int) -> Variation:
    """The variation of the builder that comes ``rank``-th in the job's order."""
    one_cpu, shifted = _CYCLE[rank % len(_CYCLE)]
    return Variation(
        cpus=1 if one_cpu else None,
        clock_days=clock_shift_days(job) if shifted else 0,
        hostname=HOSTNAMES[one_cpu ^ shifted],
    )


def variation_of(job: str, builder: str, builders: Sequence[str]) -> Variation:
    """The variation of the builder named ``builder`` of the network's ``builders`` (in order)."""
    if builder not in builders:
        raise ValueError(f"{builder} is not a builder of the network")
    return assign(job, list(builders).index(builder), len(builders))


def cpu_count(variation: Variation, limit: int, host_cpus: int) -> int:
    """The CPUs a build under ``variation`` gets: its count, or ``limit`` for all; never more
    than the host has (ValueError when the variation asks for more)."""
    if variation.cpus is not None and variation.cpus > host_cpus:
        raise ValueError(f"the variation asks for {variation.cpus} CPUs; this host has {host_cpus}")
    return min(variation.cpus or limit, host_cpus)


def evidence(variation: Variation, applied: dict[str, object]) -> bytes:
    """``variation.json``: the variation and how the sandbox applied it (canonical JSON)."""
    value = {"schema": SCHEMA, "variation": variation.to_value(), "spec": variation.spec()}
    value["applied"] = applied
    return canonical_json.encode(value, "variation")


# ----- the explain step ------------------------------------------------------------------


def describe(dimension: str, value: object) -> str:
    """A side of a dimension in words: ``1 CPU``, ``all CPUs``, ``the clock 400 days ahead``."""
    if dimension == "cpus":
        return "all CPUs" if value is None else f"{value} CPU" + ("" if value == 1 else "s")
    if dimension == "clock":
        return "the true clock" if value == 0 else f"the clock {value} days ahead"
    return f"host name {value}"


def separating(first: Sequence[Variation], second: Sequence[Variation]) -> tuple[str, ...]:
    """The dimensions in which every builder of ``first`` has one value and every builder of
    ``second`` another: those that could explain why the two groups' outputs differ."""
    if not first or not second:
        return ()
    out = []
    for dimension in DIMENSIONS:
        a = {v.value(dimension) for v in first}
        b = {v.value(dimension) for v in second}
        if len(a) == 1 and len(b) == 1 and a != b:
            out.append(dimension)
    return tuple(out)


@dataclass(frozen=True)
class VariedGroup:
    """One group of a verdict: its output digest and its builders with their variations (None
    for a builder not in the network config)."""

    output_digest: str
    builders: tuple[tuple[str, Variation | None], ...]

    def known(self) -> list[Variation]:
        return [v for _, v in self.builders if v is not None]


def conclusion(first: VariedGroup, second: VariedGroup, names: tuple[str, str] = ("1", "2")) -> str:
    """One line: in which varied dimensions the two groups differ, in words."""
    a, b = first.known(), second.known()
    if not a or not b:
        return "the builders' variations are not known: no conclusion about them"
    dimensions = separating(a, b)
    if len(dimensions) == 1:
        (dimension,) = dimensions
        return (
            f"the groups differ only in {DIMENSION_NAMES[dimension]}: every builder of group "
            f"{names[0]} built with {describe(dimension, a[0].value(dimension))}, every builder "
            f"of group {names[1]} with {describe(dimension, b[0].value(dimension))}"
        )
    listed = ", ".join(DIMENSION_NAMES[d] for d in DIMENSIONS)
    if not dimensions:
        return (
            f"the groups do not differ in any varied dimension ({listed}): each side of each "
            "is in both groups, so the outputs differ for another reason (randomness, the "
            "time of day or the order of events in the build, ...)"
        )
    named = " and ".join(DIMENSION_NAMES[d] for d in dimensions)
    return (
        f"the groups differ in {named}: any of them may be the cause (groups of one builder "
        "cannot tell them apart)"
    )


def variation_report(groups: Sequence[VariedGroup], compared: tuple[int, int] = (0, 1)) -> str:
    """The head of a diff report: each group's builders and variations, then the conclusion
    about the two compared groups (indexes into ``groups``)."""
    lines = [
        "Host variations of the builders (spec/builds.md 4.1), recomputed from the job id and",
        "the network config:",
    ]
    for number, group in enumerate(groups, start=1):
        count = len(group.builders)
        lines.append(
            f"group {number}: output digest {group.output_digest}, "
            f"{count} builder{'' if count == 1 else 's'}"
        )
        for name, variation in group.builders:
            lines.append(f"  {name}: {'unknown' if variation is None else variation.spec()}")
    first, second = compared
    names = (str(first + 1), str(second + 1))
    lines.append(conclusion(groups[first], groups[second], names) + ".")
    return "\n".join(lines) + "\n\n"
