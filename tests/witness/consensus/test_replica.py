"""The replica state machine driven by hand: ordering of actions, rejections, catch-up."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logserver.core.errors import VerificationError
from tests.support.consensus_fixtures import make_config, make_qc, signers, timeout, vote
from witness.consensus.messages import Proposal, SyncRequest, SyncResponse, Timeout, Vote
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
from witness.consensus.types import Block, CommitProof, QuorumCert

CONFIG = make_config(4)
KEYS = signers(4)


def extend(parent: bytes, round_: int) -> bytes:
    return b"%d r%d" % (int(parent.split()[0]) + 1, round_)


def valid(parent: bytes, payload: bytes) -> bool:
    return payload == parent or int(payload.split()[0]) == int(parent.split()[0]) + 1


def replica(
    index: int,
    persisted: SafetyState | None = None,
    anchor: CommitProof | None = None,
    keep_rounds: int | None = None,
    stored: tuple[Block, ...] = (),
    rules: SafetyRules = DIEMBFT_V4,
) -> Replica:
    return Replica(
        CONFIG,
        KEYS[index],
        persisted,
        valid,
        0,
        propose=extend,
        anchor=anchor,
        keep_rounds=keep_rounds,
        stored_blocks=stored,
        rules=rules,
    )


def of_type(actions: list[Action], kind: type) -> list:  # type: ignore[type-arg]
    return [a for a in actions if isinstance(a, kind)]


def record_commits(mine: dict[int, bytes], action: CommitBlocks) -> None:
    """Record a replica's commits by height: heights only grow (a state sync may skip some),
    and a height is never committed twice."""
    for committed in action.blocks:
        assert committed.height not in mine and all(committed.height > h for h in mine)
        mine[committed.height] = committed.block.payload


def assert_consistent(commits: list[dict[int, bytes]]) -> None:
    """No two replicas committed different payloads at one height."""
    for height in set().union(*commits):
        assert len({c[height] for c in commits if height in c}) == 1, height


class Net:
    """Delivers every message at once, in order; fires timers when nothing is in flight."""

    def __init__(self, replicas: list[Replica]) -> None:
        self.replicas = replicas
        self.queue: deque[tuple[int, int, object]] = deque()
        self.timers = [0] * len(replicas)
        self.commits: list[dict[int, bytes]] = [{} for _ in replicas]
        self.persisted: list[SafetyState | None] = [None] * len(replicas)
        self.anchors: list[CommitProof | None] = [None] * len(replicas)
        self.blocks: list[dict[bytes, Block]] = [{} for _ in replicas]  # what Persist stored
        self.now = 0

    def apply(self, index: int, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Persist):
                self.persisted[index] = action.state
                self.blocks[index].update((b.id, b) for b in action.blocks)
            elif isinstance(action, Send):
                self.queue.append((index, action.to, action.message))
            elif isinstance(action, Broadcast):
                for to in range(len(self.replicas)):
                    if to != index:
                        self.queue.append((index, to, action.message))
            elif isinstance(action, CommitBlocks):
                record_commits(self.commits[index], action)
                self.anchors[index] = action.proof
                if action.proof is not None:  # a driver drops what the anchor covers
                    floor = action.proof.block.round
                    kept = {i: b for i, b in self.blocks[index].items() if b.round > floor}
                    self.blocks[index] = kept
            elif isinstance(action, SetTimer):
                self.timers[index] = action.deadline_ms

    def restart(self, index: int, rules: SafetyRules = DIEMBFT_V4, **options: object) -> Replica:
        """Replace a replica by one built from only what its driver made durable."""
        self.queue = deque(m for m in self.queue if m[1] != index)  # in flight to it: lost
        restarted = Replica(
            CONFIG,
            KEYS[index],
            self.persisted[index],
            valid,
            self.now,
            propose=extend,
            anchor=self.anchors[index],
            stored_blocks=tuple(self.blocks[index].values()),
            rules=rules,
            **options,  # type: ignore[arg-type]
        )
        self.replicas[index] = restarted
        self.apply(index, restarted.start(self.now))
        return restarted

    def run(self, steps: int, down: frozenset[int] = frozenset()) -> None:
        for _ in range(steps):
            if not self.queue:
                alive = [i for i in range(len(self.replicas)) if i not in down]
                index = min(alive, key=lambda i: self.timers[i])
                self.now = max(self.now, self.timers[index])
                self.apply(index, self.replicas[index].on_timer(self.now))
                continue
            sender, to, message = self.queue.popleft()
            if to not in down:
                self.apply(to, self.replicas[to].on_message(sender, message, self.now))  # type: ignore[arg-type]


def test_start_leader_proposes_and_persists_before_voting() -> None:
    leader = replica(1)  # round 1 is led by replica 1 (round-robin)
    actions = leader.start(0)
    assert isinstance(actions[0], SetTimer)
    proposal = of_type(actions, Broadcast)[0].message
    assert isinstance(proposal, Proposal) and proposal.block.round == 1
    kinds = [type(a) for a in actions]
    persist_at = kinds.index(Persist)
    vote_at = next(i for i, a in enumerate(actions) if isinstance(a, Send))
    assert persist_at < kinds.index(Broadcast) < vote_at
    assert actions[vote_at].to == 2  # type: ignore[union-attr]
    assert leader.safety.last_voted_round == 1


def test_restarted_leader_does_not_propose_twice_in_a_round() -> None:
    leader = replica(1)
    actions = leader.start(0)
    state = next(a.state for a in actions if isinstance(a, Persist))
    restarted = replica(1, state)
    again = restarted.start(5)
    assert not [a for a in again if isinstance(a, Broadcast)]
    assert restarted.stats["own-proposal-not-voted"] == 1


def test_follower_votes_once_and_only_for_valid_payloads() -> None:
    leader, follower = replica(1), replica(3)
    follower.start(0)
    proposal = of_type(leader.start(0), Broadcast)[0].message
    actions = follower.on_message(1, proposal, 10)
    assert [type(a) for a in actions] == [Persist, Send]
    assert isinstance(actions[1], Send) and isinstance(actions[1].message, Vote)
    assert follower.on_message(1, proposal, 11) == []  # no second vote in round 1
    assert follower.stats["unsafe-proposal"] == 1
    bad_follower = replica(2)
    bad_follower.start(0)
    block = proposal.block
    forged = Proposal(
        type(block).create(CONFIG.network_id, 1, 1, block.qc, b"9 bogus", signer=KEYS[1]), None
    )
    assert bad_follower.on_message(1, forged, 10) == []
    assert bad_follower.stats["invalid-payload"] == 1


def test_rejections_are_counted() -> None:
    r = replica(0)
    r.start(0)
    proposal = of_type(replica(1).start(0), Broadcast)[0].message
    wrong_leader = Proposal(
        type(proposal.block).create(
            CONFIG.network_id, 1, 2, CONFIG.genesis_qc, b"1 x", signer=KEYS[2]
        ),
        None,
    )
    assert r.on_message(2, wrong_leader, 1) == []
    assert r.stats["proposal-wrong-leader"] == 1
    forged_vote = Vote(1, proposal.block.id, 3, bytes(64))
    assert r.on_message(3, forged_vote, 1) == []
    assert r.stats["vote-bad-signature"] == 1
    assert r.on_bytes(3, b"\x02garbage", 1) == []
    assert r.stats["malformed"] == 1


def test_certificate_with_duplicate_signer_is_counted() -> None:
    r = replica(0)
    r.start(0)
    good = make_qc(CONFIG, 1, bytes(32))
    doubled = QuorumCert(1, bytes(32), (good.signatures[0], *good.signatures[:2]))
    bad = timeout(CONFIG, 1, 2, doubled)
    assert r.on_message(1, bad, 5) == []
    assert r.stats["qc-duplicate-signer"] == 1
    assert r.on_bytes(1, bad.to_bytes(), 5) == []  # cannot even be decoded
    assert r.stats["malformed"] == 1


def test_votes_form_a_qc_and_the_next_leader_proposes() -> None:
    next_leader = replica(2)
    next_leader.start(0)
    first = of_type(replica(1).start(0), Broadcast)[0].message
    next_leader.on_message(1, first, 5)
    out: list[Action] = []
    for voter in (0, 1, 3):
        out += next_leader.on_message(voter, vote(CONFIG, voter, 1, first.block.id), 6)
    proposals = [a.message for a in of_type(out, Broadcast) if isinstance(a.message, Proposal)]
    assert len(proposals) == 1
    assert proposals[0].block.round == 2 and proposals[0].block.qc.round == 1
    assert next_leader.round == 2


def test_timeouts_persist_then_broadcast_and_rebroadcast() -> None:
    r = replica(0)
    r.start(0)
    assert r.on_timer(999) == []  # before the deadline: nothing
    actions = r.on_timer(1000)
    assert [type(a) for a in actions] == [Persist, Broadcast, SetTimer]
    sent = actions[1].message  # type: ignore[union-attr]
    assert isinstance(sent, Timeout) and sent.round == 1 and sent.high_qc.round == 0
    assert r.safety.highest_timeout_round == 1 and r.safety.last_voted_round == 1
    again = r.on_timer(actions[2].deadline_ms)  # type: ignore[union-attr]
    assert [type(a) for a in again] == [Broadcast, SetTimer]
    assert again[0].message == sent  # type: ignore[union-attr]


def test_tc_moves_the_round_and_justifies_the_next_proposal() -> None:
    leader2 = replica(2)
    leader2.start(0)
    out: list[Action] = []
    for signer in (0, 1, 3):
        out += leader2.on_message(signer, timeout(CONFIG, signer, 1, CONFIG.genesis_qc), 1000)
    assert leader2.round == 2
    proposal = next(a.message for a in of_type(out, Broadcast) if isinstance(a.message, Proposal))
    assert proposal.last_round_tc is not None and proposal.last_round_tc.round == 1
    assert proposal.block.qc.round == 0
    follower = replica(0)  # votes go to replica 3, the leader of round 3
    follower.start(0)
    votes = of_type(follower.on_message(2, proposal, 1001), Send)
    assert votes and isinstance(votes[0].message, Vote)


def test_f_plus_one_timeouts_make_a_replica_join() -> None:
    r = replica(0)
    r.start(0)
    assert r.on_message(1, timeout(CONFIG, 1, 1, CONFIG.genesis_qc), 5) == []
    joined = r.on_message(2, timeout(CONFIG, 2, 1, CONFIG.genesis_qc), 6)
    assert any(isinstance(a, Broadcast) and isinstance(a.message, Timeout) for a in joined)


def test_four_replicas_commit_the_same_chain() -> None:
    net = Net([replica(i) for i in range(4)])
    for i, r in enumerate(net.replicas):
        net.apply(i, r.start(0))
    net.run(400)
    assert min(len(c) for c in net.commits) >= 5
    assert_consistent(net.commits)
    assert [net.commits[0][h] for h in (1, 2, 3)] == [b"1 r1", b"2 r2", b"3 r3"]


def test_restart_from_safety_state_only_catches_up_by_sync() -> None:
    net = Net([replica(i) for i in range(4)])
    for i, r in enumerate(net.replicas):
        net.apply(i, r.start(0))
    net.run(200)
    before = len(net.commits[3])
    assert before >= 3
    state = net.persisted[3]
    assert state is not None
    net.replicas[3] = fresh = replica(3, state)
    assert fresh.committed_height == 0
    net.apply(3, fresh.start(net.now))
    net.run(300)
    assert fresh.committed_height >= before
    assert_consistent(net.commits)  # what it commits again is what it committed before
    assert fresh.stats["sync-broken-chain"] == 0


def test_sync_responses_are_checked() -> None:
    net = Net([replica(i) for i in range(4)])
    for i, r in enumerate(net.replicas):
        net.apply(i, r.start(0))
    net.run(120)
    source = net.replicas[0]
    tip = source.tree.committed
    chain = source.tree.ancestors(tip.id, 64)
    assert len(chain) >= 3 and chain[-1].round == 1
    newcomer = replica(3)
    newcomer.start(0)
    assert newcomer.on_message(0, SyncResponse(tuple(chain)), 1) == []
    assert newcomer.stats["sync-unsolicited"] == 1
    # Ask for the tip through a QC, then answer with a chain that skips a block.
    qc = make_qc(CONFIG, tip.round, tip.id)
    asked = newcomer.on_message(1, timeout(CONFIG, 1, tip.round + 1, qc), net.now)
    requests = [a for a in of_type(asked, Send) if isinstance(a.message, SyncRequest)]
    assert requests and requests[0].message.block_id == tip.id
    broken = (chain[0], *chain[2:])
    assert newcomer.on_message(0, SyncResponse(broken), net.now) == []
    assert newcomer.stats["sync-broken-chain"] == 1
    newcomer.on_message(0, SyncResponse(tuple(chain)), net.now)
    assert tip.id in newcomer.tree


def test_corrupt_persisted_state_is_an_error() -> None:
    forged = SafetyState(5, make_qc(CONFIG, 4, bytes(32), [0]), 5)
    with pytest.raises(VerificationError):
        replica(0, forged)


def test_stale_messages_are_dropped() -> None:
    net = Net([replica(i) for i in range(4)])
    for i, r in enumerate(net.replicas):
        net.apply(i, r.start(0))
    net.run(200)
    r = net.replicas[0]
    assert r.round > 10
    old = timeout(CONFIG, 1, 1, CONFIG.genesis_qc)
    assert r.on_message(1, old, net.now) == []
    assert r.stats["stale"] >= 1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 2**16), min_size=50, max_size=300))
def test_random_schedules_keep_the_invariants(choices: list[int]) -> None:
    """Any delivery order, drops and timer firings: Persist covers each vote/timeout before
    it leaves, no replica signs two votes in a round, and commits never diverge."""
    replicas = [replica(i) for i in range(4)]
    queue: list[tuple[int, int, object]] = []
    timers = [0] * 4
    commits: list[dict[int, bytes]] = [{} for _ in range(4)]
    votes: dict[tuple[int, int], bytes] = {}
    now = 0

    def apply(index: int, actions: list[Action]) -> None:
        durable: SafetyState | None = None
        for action in actions:
            if isinstance(action, Persist):
                durable = action.state
            elif isinstance(action, Send | Broadcast):
                message = action.message
                if isinstance(message, Vote):
                    assert durable is not None and durable.last_voted_round >= message.round
                    first = votes.setdefault((index, message.round), message.block_id)
                    assert first == message.block_id
                if isinstance(message, Timeout) and message.signer == index:
                    # A first timeout in a round is covered by a Persist; re-broadcasts are not
                    # new signatures.
                    assert replicas[index].safety.highest_timeout_round >= message.round
                targets = [action.to] if isinstance(action, Send) else range(4)
                queue.extend((index, to, message) for to in targets if to != index)
            elif isinstance(action, CommitBlocks):
                record_commits(commits[index], action)
            elif isinstance(action, SetTimer):
                timers[index] = action.deadline_ms

    for i, r in enumerate(replicas):
        apply(i, r.start(0))
    for choice in choices:
        if queue and choice % 8:
            sender, to, message = queue.pop(choice % len(queue))
            if choice % 13 == 0:
                continue  # dropped
            apply(to, replicas[to].on_message(sender, message, now))  # type: ignore[arg-type]
        else:
            index = choice % 4
            now = max(now, timers[index])
            apply(index, replicas[index].on_timer(now))
    assert_consistent(commits)


def test_pruning_keeps_the_tree_small() -> None:
    net = Net([replica(i, keep_rounds=8) for i in range(4)])
    for i, r in enumerate(net.replicas):
        net.apply(i, r.start(0))
    net.run(2500)
    for r in net.replicas:
        assert r.committed_height >= 150
        assert len(r.tree) < 8 + 64 + 10  # keep_rounds + commits between prunes + in flight
    assert_consistent(net.commits)


def test_restart_from_an_anchor_does_not_refetch_history() -> None:
    net = Net([replica(i, keep_rounds=8) for i in range(4)])
    for i, r in enumerate(net.replicas):
        net.apply(i, r.start(0))
    net.run(1500)
    anchor, state = net.anchors[3], net.persisted[3]
    assert anchor is not None and state is not None and anchor.height > 64
    net.replicas[3] = restarted = replica(3, state, anchor=anchor, keep_rounds=8)
    assert restarted.committed_height == anchor.height
    before = len(net.commits[3])
    net.apply(3, restarted.start(net.now))
    net.run(600)
    assert restarted.committed_height > anchor.height + 5
    assert len(net.commits[3]) > before
    assert_consistent(net.commits)


class NoTcPersistence(SafetyRules):
    """The defect of an earlier version: the TC that led into a round is not kept."""

    persist_timeout_certificate = False


def _restart_all_in_a_timeout_round(rules: SafetyRules) -> tuple[Net, list[int]]:
    """Run, take replica 3 down (the rounds it leads end by a TC), then crash every replica
    at an instant when the live ones are in a round they entered through a TC, and restart
    all four from what their drivers kept."""
    net = Net([replica(i, rules=rules) for i in range(4)])
    for i, r in enumerate(net.replicas):
        net.apply(i, r.start(0))
    net.run(300)
    net.run(200, down=frozenset({3}))
    for _ in range(5000):
        net.run(1, down=frozenset({3}))
        if all(r.round % 4 == 0 for r in net.replicas[:3]):
            break
    assert all(r.round % 4 == 0 for r in net.replicas[:3]), "never reached a TC round"
    before = [len(c) for c in net.commits]
    net.queue.clear()  # in flight when everything crashed
    for i in range(4):
        net.restart(i, rules)
    net.run(3000)
    return net, before


def test_a_network_restarted_as_a_whole_in_a_tc_round_goes_on() -> None:
    net, before = _restart_all_in_a_timeout_round(DIEMBFT_V4)
    assert all(len(c) > b + 5 for c, b in zip(net.commits, before, strict=True))
    assert_consistent(net.commits)


def test_without_tc_persistence_a_restarted_network_hangs() -> None:
    """Negative control: the defect this persistence fixes is real."""
    net, before = _restart_all_in_a_timeout_round(NoTcPersistence())
    assert [len(c) for c in net.commits] == before
    assert sum(r.stats["unsafe-timeout"] for r in net.replicas) > 0


def test_a_replica_away_beyond_the_pruning_horizon_jumps_by_state_sync() -> None:
    net = Net([replica(i, keep_rounds=8) for i in range(4)])
    for i, r in enumerate(net.replicas):
        net.apply(i, r.start(0))
    net.run(300)
    net.run(3000, down=frozenset({3}))  # hundreds of rounds: its peers pruned what it lacks
    away = len(net.commits[3])
    assert min(r.committed_height for r in net.replicas[:3]) > net.replicas[3].round + 100
    restarted = net.restart(3, keep_rounds=8)
    net.run(600)
    assert restarted.stats["state-sync"] >= 1
    assert len(net.commits[3]) > away + 5
    assert restarted.committed_height >= min(r.committed_height for r in net.replicas[:3]) - 3
    assert_consistent(net.commits)
    # ... and the network still makes progress without another replica.
    heights = [r.committed_height for r in net.replicas]
    net.run(600, down=frozenset({0}))
    assert all(net.replicas[i].committed_height > heights[i] for i in (1, 2, 3))


def test_forged_commit_proofs_are_refused() -> None:
    net = Net([replica(i) for i in range(4)])
    for i, r in enumerate(net.replicas):
        net.apply(i, r.start(0))
    net.run(300)
    proof = net.replicas[0].tree.commit_proof
    assert proof is not None
    behind = replica(3)
    bad_qc = QuorumCert(
        proof.child_qc.round, proof.child_qc.block_id, proof.child_qc.signatures[:2]
    )
    for forged in (
        CommitProof(proof.height, proof.block, proof.block, proof.child_qc),  # not a child
        CommitProof(proof.height, proof.block, proof.child, bad_qc),  # too few signers
    ):
        assert behind.on_message(0, SyncResponse((), forged), 0) == []
    assert behind.committed_height == 0 and behind.stats["state-sync"] == 0
    assert behind.on_message(0, SyncResponse((), proof), 0) != []
    assert behind.stats["state-sync"] == 1 and behind.tree.committed.id == proof.block.id


def test_an_idle_leader_proposes_nothing_until_there_is_news() -> None:
    news: list[bytes] = []

    def source(parent: bytes, round_: int) -> bytes | None:
        return news.pop() if news else None

    replicas = [Replica(CONFIG, KEYS[i], None, valid, 0, propose=source) for i in range(4)]
    net = Net(replicas)
    for i, r in enumerate(replicas):
        net.apply(i, r.start(0))
    net.run(200)
    assert all(len(c) == 0 for c in net.commits)  # nothing to commit: no blocks at all
    assert all(r.stats["invalid-payload"] == 0 for r in replicas)
    assert all(r.stats["proposals-deferred"] > 0 for r in replicas)
    leader = replicas[replicas[0].leader_of(replicas[0].round)]
    news.append(b"1 news")
    net.apply(leader.index, leader.on_payload_ready(net.now))
    net.run(200)
    assert all(c.get(1) == b"1 news" for c in net.commits)  # committed everywhere
    # Idle again: rounds end only by timeouts, whose durations double up to the maximum.
    settled, start = replicas[0].round, net.now
    while net.now < start + 120_000:
        net.run(1)
    assert replicas[0].round - settled <= 120_000 // CONFIG.max_timeout_ms + 5
