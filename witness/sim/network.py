"""The deterministic simulation engine: n real replicas over a seeded in-memory network.

One :class:`Simulation` runs one :class:`~witness.sim.scenarios.Scenario`: per-round
partitions and leaders (Twins), random delays and drops until the network heals, crashes
(possibly between two actions of one step) of any subset of the honest instances, all of them
included, and restarts from only what was persisted (safety state, stored blocks, anchor),
long absences past the pruning horizon (caught up by state sync), and Byzantine replicas. It
records what honest replicas commit and sign, and checks SAFETY and LIVENESS (see
:class:`ScenarioResult`): after the last fault heals, every honest instance must commit a new
block within ``liveness_window_ms``. Payloads come from a simulated log: each proposal extends
its parent checkpoint by one entry and names its proposer, so twins differ; with
``idle_rate`` the log sometimes has nothing new and leaders defer.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field
from functools import lru_cache

from witness.consensus import crypto
from witness.consensus.messages import Message, Vote, message_from_bytes, message_round
from witness.consensus.replica import (
    Action,
    Broadcast,
    CommitBlocks,
    Persist,
    Replica,
    Send,
    SetTimer,
)
from witness.consensus.safety import DIEMBFT_V4, SafetyRules, SafetyState
from witness.consensus.types import Block, CommitProof, ConsensusConfig
from witness.sim.byzantine import ByzantineNode
from witness.sim.scenarios import Scenario

NETWORK_ID = b"synchronicity-simulation"
GENESIS_PAYLOAD = b"0 genesis"
_DELIVER, _TIMER, _CRASH, _RESTART, _CRASH_ALL = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class SimOptions:
    """How a scenario runs: consensus timeouts, the liveness window, an event cap, the rules."""

    base_timeout_ms: int = 1000
    max_timeout_ms: int = 8000
    liveness_window_ms: int = 60_000
    max_events: int = 200_000
    wire: bool = False  # round-trip every message through its byte encoding
    rules: SafetyRules = DIEMBFT_V4
    keep_rounds: int | None = 12  # replicas prune, so a long absence needs state sync
    idle_rate: float = 0.0  # chance that the simulated log has nothing new for a leader
    absence_ms: int = 40_000  # how long the absent instance of an ``absence`` scenario is down
    keep_blocks: bool = True  # False: a negative control whose drivers drop Persist's blocks


@dataclass
class ScenarioResult:
    """What one scenario showed: SAFETY violations, a LIVENESS failure, recovery and counts."""

    safety_violations: list[str] = field(default_factory=list)
    liveness_failure: str | None = None
    recovery_ms: int | None = None
    recovery_rounds: int | None = None
    state_syncs: int = 0
    events: int = 0
    max_round: int = 0
    commits: int = 0


@lru_cache(maxsize=8)
def simulation_keys(n: int) -> tuple[crypto.ReplicaSigner, ...]:
    return tuple(
        crypto.ReplicaSigner(hashlib.sha256(b"simulation key %d" % i).digest()) for i in range(n)
    )


@lru_cache(maxsize=8)
def simulation_config(n: int, base_timeout_ms: int, max_timeout_ms: int) -> ConsensusConfig:
    keys = simulation_keys(n)
    return ConsensusConfig(
        network_id=NETWORK_ID,
        replicas=tuple((f"replica-{i}", key.public_key) for i, key in enumerate(keys)),
        f=(n - 1) // 3,
        base_timeout_ms=base_timeout_ms,
        max_timeout_ms=max_timeout_ms,
        genesis_payload=GENESIS_PAYLOAD,
    )


def checkpoint_size(payload: bytes) -> int:
    return int(payload.split(b" ", 1)[0])


def validate_checkpoint(parent_payload: bytes, payload: bytes) -> bool:
    """A simulated log's rule: the same checkpoint again, or exactly one entry more."""
    if payload == parent_payload:
        return True
    try:
        return checkpoint_size(payload) == checkpoint_size(parent_payload) + 1
    except ValueError:
        return False


Node = Replica | ByzantineNode


class Simulation:
    """One scenario on real replicas over a seeded in-memory network, and its checkers."""

    def __init__(self, scenario: Scenario, options: SimOptions | None = None) -> None:
        self.scenario = scenario
        self.options = options or SimOptions()
        self.config = simulation_config(
            scenario.n, self.options.base_timeout_ms, self.options.max_timeout_ms
        )
        self.rng = random.Random(scenario.seed)  # noqa: S311 - a seeded, reproducible simulation
        self.result = ScenarioResult()
        count = scenario.instances
        self._nodes: list[Node | None] = [None] * count
        self._durable: list[SafetyState | None] = [None] * count
        self._stored: list[dict[bytes, Block]] = [{} for _ in range(count)]
        self._anchor: list[CommitProof | None] = [None] * count
        self._deadline = [0] * count
        self._crash_pending = [False] * count
        self._of_key = [
            [i for i in range(count) if scenario.key_of(i) == key] for key in range(scenario.n)
        ]
        self._honest = [scenario.key_of(i) not in scenario.faulty_keys for i in range(count)]
        self._queue: list[tuple[int, int, int, int, object]] = []
        self._seq = 0
        self._now = 0
        self._heal_ms: int | None = None
        self._heal_cap_ms = max(1, len(scenario.leaders)) * self.options.max_timeout_ms
        self._stable_ms: int | None = None
        self._baseline_round = 0
        self._recovered = [not h for h in self._honest]
        self._commits: list[dict[int, bytes]] = [{} for _ in range(count)]
        self._last_size = [0] * count
        self._by_size: dict[int, dict[bytes, set[int]]] = {}
        self._votes: dict[tuple[int, int], bytes] = {}
        self._crashes_outstanding = 0
        self._adversary_delay_ms = 3 * self.options.base_timeout_ms

    # -- set-up ---------------------------------------------------------------------------

    def _leader_of(self, round_: int) -> int:
        leaders = self.scenario.leaders
        return leaders[round_ - 1] if 1 <= round_ <= len(leaders) else round_ % self.scenario.n

    def _make_node(self, instance: int, keep_state: bool) -> Node:
        key = self.scenario.key_of(instance)
        signer = simulation_keys(self.scenario.n)[key]
        idle_rate = self.options.idle_rate

        def new_payload(parent_payload: bytes, round_: int) -> bytes:
            size = checkpoint_size(parent_payload) + 1
            return b"%d r%d.i%d" % (size, round_, instance)

        def propose(parent_payload: bytes, round_: int) -> bytes | None:
            if idle_rate and self.rng.random() < idle_rate:
                return None  # the log has nothing new
            return new_payload(parent_payload, round_)

        def alternative(parent_payload: bytes, round_: int) -> bytes:
            return new_payload(parent_payload, round_) + b".alt"

        replica = Replica(
            self.config,
            signer,
            self._durable[instance] if keep_state else None,
            validate_checkpoint,
            self._now,
            propose=propose,
            leader_of=self._leader_of,
            rules=self.options.rules if self._honest[instance] else DIEMBFT_V4,
            anchor=self._anchor[instance] if keep_state else None,
            stored_blocks=tuple(self._stored[instance].values()) if keep_state else (),
            keep_rounds=self.options.keep_rounds,
        )
        if key == self.scenario.byzantine_key and self.scenario.byzantine is not None:
            return ByzantineNode(self.scenario.byzantine, replica, signer, self.rng, alternative)
        return replica

    def _schedule_crashes(self) -> None:
        honest = [i for i in range(self.scenario.instances) if self._honest[i]]
        # Any honest instance may crash, all of them too: a restarted replica keeps its safety
        # state, its stored blocks and its anchor, so the certified blocks survive.
        horizon = max(1, len(self.scenario.leaders)) * self.options.base_timeout_ms
        self._crashes_outstanding = self.scenario.crashes
        for _ in range(self.scenario.crashes):
            self._push(self.rng.randrange(1, horizon + 1), _CRASH, self.rng.choice(honest), None)
        if self.scenario.crash_all:
            self._crashes_outstanding += len(honest)
            self._push(self.rng.randrange(1, horizon + 1), _CRASH_ALL, -1, None)
        if self.scenario.absence and honest:
            self._crashes_outstanding += 1
            absent = self.rng.choice(honest)
            self._push(self.rng.randrange(1, horizon + 1), _CRASH, absent, self.options.absence_ms)

    def _crash_now(self, instance: int, down_ms: int | None = None) -> None:
        self._crash_pending[instance] = False
        self._nodes[instance] = None
        delay = down_ms or self.rng.randrange(1, 3 * self.options.base_timeout_ms)
        self._push(self._now + delay, _RESTART, instance, None)

    # -- event loop -----------------------------------------------------------------------

    def _push(self, at: int, kind: int, instance: int, data: object) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, kind, instance, data))

    def run(self) -> ScenarioResult:
        for instance in range(self.scenario.instances):
            self._nodes[instance] = node = self._make_node(instance, keep_state=False)
            self._execute(instance, node.start(0))
        self._schedule_crashes()
        budget = self.options.max_events
        while self._queue and not all(self._recovered):
            at, _, kind, instance, data = heapq.heappop(self._queue)
            self._now = at
            self._advance_phase()
            window = self.options.liveness_window_ms
            if self._stable_ms is not None and at > self._stable_ms + window:
                break
            self.result.events += 1
            if self.result.events > budget:
                break
            self._handle(kind, instance, data)
        self._finish()
        return self.result

    def _handle(self, kind: int, instance: int, data: object) -> None:
        node = self._nodes[instance] if instance >= 0 else None
        if kind == _CRASH_ALL:
            for victim in range(self.scenario.instances):
                if not self._honest[victim]:
                    continue
                if self._nodes[victim] is None or self._crash_pending[victim]:
                    self._crashes_outstanding -= 1  # already down
                else:
                    self._crash_now(victim)
            return
        if kind == _CRASH:
            if node is None or self._crash_pending[instance]:
                self._crashes_outstanding -= 1  # already down: this crash is void
            elif isinstance(data, int):  # a long absence: down at once, back much later
                self._crash_now(instance, data)
            else:
                self._crash_pending[instance] = True
        elif kind == _RESTART:
            self._crashes_outstanding -= 1
            keep = not self.scenario.restart_without_state
            if not keep:
                self._last_size[instance] = 0  # it forgot everything: it commits all again
            self._nodes[instance] = node = self._make_node(instance, keep_state=keep)
            self._execute(instance, node.start(self._now))
        elif node is None:
            return
        elif kind == _TIMER:
            if data == self._deadline[instance]:
                self._execute(instance, node.on_timer(self._now))
        else:
            assert isinstance(data, tuple)
            sender: int = data[0]
            message: Message = data[1]
            self._execute(instance, node.on_message(sender, message, self._now))
        node = self._nodes[instance]
        if node is not None and self._heal_ms is None and node.round > len(self.scenario.leaders):
            self._heal_ms = self._now

    def _advance_phase(self) -> None:
        if self._heal_ms is None and self._now >= self._heal_cap_ms:
            self._heal_ms = self._heal_cap_ms
        if self._heal_ms is not None and self._stable_ms is None:
            for instance, pending in enumerate(self._crash_pending):
                if pending:  # never reached a persisting step: crash it now
                    self._crash_now(instance)
            if self._crashes_outstanding == 0:
                self._stable_ms = self._now
                self._baseline_round = max(
                    (node.round for node in self._nodes if node is not None), default=0
                )

    def _execute(self, instance: int, actions: list[Action]) -> None:
        cut = len(actions)
        # A pending crash strikes the next step that persists safety state for a vote or a
        # timeout, at a random point among its actions: a driver may die between any two.
        crashing = self._crash_pending[instance] and any(isinstance(a, Persist) for a in actions)
        if crashing:
            cut = self.rng.randint(0, len(actions))
        for action in actions[:cut]:
            if isinstance(action, Persist):
                self._durable[instance] = action.state
                if self.options.keep_blocks:
                    self._stored[instance].update((block.id, block) for block in action.blocks)
            elif isinstance(action, Send):
                self._route(instance, action.to, action.message)
            elif isinstance(action, Broadcast):
                self._route(instance, None, action.message)
            elif isinstance(action, CommitBlocks):
                self._record_commit(instance, action)
                if action.proof is not None:  # the driver keeps the anchor, drops what it covers
                    self._anchor[instance] = action.proof
                    floor = action.proof.block.round
                    stored = self._stored[instance]
                    self._stored[instance] = {k: b for k, b in stored.items() if b.round > floor}
            elif isinstance(action, SetTimer):
                self._deadline[instance] = action.deadline_ms
                self._push(action.deadline_ms, _TIMER, instance, action.deadline_ms)
        if crashing:
            self._crash_now(instance)

    def _route(self, instance: int, to_key: int | None, message: Message) -> None:
        scenario = self.scenario
        sender_key = scenario.key_of(instance)
        if isinstance(message, Vote) and self._honest[instance]:
            seen = self._votes.setdefault((sender_key, message.round), message.block_id)
            if seen != message.block_id:
                self.result.safety_violations.append(
                    f"honest replica {sender_key} voted twice in round {message.round}"
                )
        if self.options.wire:
            message = message_from_bytes(message.to_bytes(), NETWORK_ID)
        round_ = message_round(message)
        if round_ is None:
            node = self._nodes[instance]
            round_ = node.round if node is not None else 0
        healed = self._heal_ms is not None
        groups = (
            scenario.partitions[round_ - 1]
            if not healed and 1 <= round_ <= len(scenario.partitions)
            else None
        )
        # The adversary also controls when its own messages arrive.
        max_delay = scenario.max_delay_ms if self._honest[instance] else self._adversary_delay_ms
        targets = range(scenario.instances) if to_key is None else self._of_key[to_key]
        for dest in targets:
            if dest == instance:
                continue
            if groups is not None and groups[dest] != groups[instance]:
                continue
            if not healed and self.rng.random() < scenario.drop_rate:
                continue
            delay = self.rng.randint(1, max_delay)
            self._push(self._now + delay, _DELIVER, dest, (sender_key, message))

    # -- checking -------------------------------------------------------------------------

    def _record_commit(self, instance: int, commit: CommitBlocks) -> None:
        if not self._honest[instance]:
            return
        key = self.scenario.key_of(instance)
        mine = self._commits[instance]
        for committed in commit.blocks:
            # Checked by the log size a payload names (certified inside the block), not by
            # height: a state sync skips blocks, and the height a peer reports is not signed.
            payload = committed.block.payload
            size = checkpoint_size(payload)
            self.result.commits += 1
            earlier = mine.setdefault(size, payload)
            if earlier != payload:
                self.result.safety_violations.append(
                    f"replica {instance} committed two payloads for log size {size}"
                )
            if size < self._last_size[instance]:
                last = self._last_size[instance]
                self.result.safety_violations.append(
                    f"replica {instance} committed log size {size} after {last}"
                )
            self._last_size[instance] = max(self._last_size[instance], size)
            self._by_size.setdefault(size, {}).setdefault(payload, set()).add(key)
            if (
                self._stable_ms is not None
                and self._now >= self._stable_ms
                and committed.block.round > self._baseline_round
                and not self._recovered[instance]
            ):
                self._recovered[instance] = True
                elapsed = self._now - self._stable_ms
                self.result.recovery_ms = max(self.result.recovery_ms or 0, elapsed)
                rounds = committed.block.round - self._baseline_round
                self.result.recovery_rounds = max(self.result.recovery_rounds or 0, rounds)

    def _finish(self) -> None:
        quorum = self.config.quorum
        faulty = self.scenario.faulty_keys
        for size, payloads in sorted(self._by_size.items()):
            if len(payloads) > 1:
                self.result.safety_violations.append(
                    f"honest replicas committed {len(payloads)} payloads for log size {size}"
                )
            # Faulty keys co-sign everything: count them for every payload.
            certified = [p for p, keys in payloads.items() if len(keys | faulty) >= quorum]
            if len(certified) > 1:
                self.result.safety_violations.append(
                    f"{len(certified)} conflicting payloads for log size {size} have 2f+1 cosigners"
                )
        for instance, node in enumerate(self._nodes):
            replica = node.replica if isinstance(node, ByzantineNode) else node
            if self._honest[instance] and replica is not None and replica.tree.conflicting_commits:
                self.result.safety_violations.append(
                    f"replica {instance} saw a certified fork of its committed chain"
                )
        self.result.max_round = max(
            (node.round for node in self._nodes if node is not None), default=0
        )
        self.result.state_syncs = sum(
            (node.replica if isinstance(node, ByzantineNode) else node).stats["state-sync"]
            for node in self._nodes
            if node is not None
        )
        if not all(self._recovered):
            stuck = [i for i, ok in enumerate(self._recovered) if not ok]
            self.result.liveness_failure = (
                f"instances {stuck} made no new commit after the network healed"
            )


def run_scenario(scenario: Scenario, options: SimOptions | None = None) -> ScenarioResult:
    return Simulation(scenario, options).run()
