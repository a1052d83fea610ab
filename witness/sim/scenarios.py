"""Scenario generation for the consensus simulator, in the manner of Twins (Bano et al.).

A scenario fixes, for each of the first ``rounds`` rounds, the leader and a partition of the
replica instances into groups; a message of round r (or, for catch-up messages, sent while
its sender is in round r) only crosses between instances of one group. Instances 0..n-1 hold
keys 0..n-1; instances n.. are twins holding keys 0, 1, ... (same key, separate state).

Faults besides partitions, drops and Byzantine keys: crashes of single honest instances, one
crash of every honest instance at once, and one long absence (down long enough for its peers
to prune the blocks it lacks). A crashed instance restarts from exactly what its driver made
durable: safety state, the stored blocks and the anchor (the proof of its last commit).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from logserver.core.errors import UsageError

BYZANTINE_KINDS = (
    "equivocate",
    "double-vote",
    "withhold",
    "stale-qc",
    "ghost-qc",
    "inflated-round",
    "forged",
    "fork",
)


@dataclass(frozen=True, slots=True)
class Scenario:
    """Per-round leaders and partitions of the instances, plus drops, delays, crashes, faults."""

    seed: int
    n: int
    twins: int
    leaders: tuple[int, ...]  # leader key of rounds 1..len
    partitions: tuple[tuple[int, ...], ...]  # per round: group label of each instance
    drop_rate: float = 0.0
    max_delay_ms: int = 150
    crashes: int = 0  # crash-and-restart events, each of one honest instance
    crash_all: bool = False  # one event that crashes every honest instance at once
    absence: bool = False  # one honest instance is down long enough for peers to prune
    restart_without_state: bool = False
    byzantine: str | None = None

    @property
    def f(self) -> int:
        return (self.n - 1) // 3

    @property
    def instances(self) -> int:
        return self.n + self.twins

    def key_of(self, instance: int) -> int:
        return instance if instance < self.n else instance - self.n

    @property
    def byzantine_key(self) -> int | None:
        """The key the Byzantine behaviour runs on: the first key without a twin."""
        return None if self.byzantine is None else self.twins

    @property
    def faulty_keys(self) -> frozenset[int]:
        keys = set(range(self.twins))
        if self.byzantine_key is not None:
            keys.add(self.byzantine_key)
        return frozenset(keys)


def sample_scenario(
    rng: random.Random,
    *,
    n: int,
    twins: int,
    rounds: int,
    partitions: int,
    crash: bool = False,
    byzantine: str | None = None,
    drop_rate: float = 0.02,
    crash_all: bool = False,
    absence: bool = False,
) -> Scenario:
    """Leaders uniformly per round; partitions sticky (kept with probability 1/2)."""
    if n < 1 or (n - 1) % 3 != 0:
        raise UsageError(f"n must be 3f+1, not {n}")
    if not 0 <= twins <= n or partitions < 1 or rounds < 0:
        raise UsageError("need 0 <= twins <= n, partitions >= 1, rounds >= 0")
    if byzantine is not None and byzantine not in BYZANTINE_KINDS:
        raise UsageError(f"unknown Byzantine behaviour {byzantine!r}; one of {BYZANTINE_KINDS}")
    if byzantine is not None and twins >= n:
        raise UsageError("no key left for the Byzantine replica")
    instances = n + twins
    # A Byzantine replica gets to lead half of the scheduled rounds: the adversary's best case.
    leaders = tuple(
        twins if byzantine is not None and rng.random() < 0.5 else rng.randrange(n)
        for _ in range(rounds)
    )
    schedule: list[tuple[int, ...]] = []
    for _ in range(rounds):
        if schedule and rng.random() < 0.5:
            schedule.append(schedule[-1])
        else:
            schedule.append(_partition(rng, n, instances, partitions))
    return Scenario(
        seed=rng.getrandbits(64),
        n=n,
        twins=twins,
        leaders=leaders,
        partitions=tuple(schedule),
        drop_rate=drop_rate,
        crashes=rng.randint(1, 3) if crash else 0,
        crash_all=crash_all,
        absence=absence,
        byzantine=byzantine,
    )


def _partition(rng: random.Random, n: int, instances: int, groups: int) -> tuple[int, ...]:
    """A random grouping; mostly (4 times in 5) one where some group holds a quorum of keys.

    Twins finds forks when quorums form on alternating sides of a partition while the
    minority keeps a stale view, so progress-making partitions are the interesting ones.
    """
    quorum = 2 * ((n - 1) // 3) + 1
    want_quorum = rng.random() < 0.8
    labels = tuple(rng.randrange(groups) for _ in range(instances))
    for _ in range(32):
        if not want_quorum:
            break
        keys: dict[int, set[int]] = {}
        for instance, label in enumerate(labels):
            keys.setdefault(label, set()).add(instance if instance < n else instance - n)
        if any(len(members) >= quorum for members in keys.values()):
            break
        labels = tuple(rng.randrange(groups) for _ in range(instances))
    return labels
