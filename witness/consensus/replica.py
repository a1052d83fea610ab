"""The sans-I/O replica: messages and timer ticks in, ordered actions out.

A driver (the HTTP node, or the simulator) feeds :meth:`Replica.on_message` and
:meth:`Replica.on_timer` and executes the returned actions in order. It MUST make each
:class:`Persist` durable before executing any action after it: the replica always places the
Persist before the vote or timeout that depends on it. The protocol is DiemBFT v4: votes go
to the next round's leader, timeouts are broadcast, a QC or TC moves the round forward, and a
missing block is fetched with SyncRequest/SyncResponse.

Driving it, in outline::

    key = ReplicaSigner(seed)
    replica = Replica(config, key, load_state_or_none(), validate, now(), propose=src)
    run(replica.start(now()))
    # then, for each authenticated message from replica `sender`:
    run(replica.on_bytes(sender, body, now()))
    # and whenever the last SetTimer deadline passes:
    run(replica.on_timer(now()))

where ``run`` executes actions in order: Persist -> write ``state.to_bytes()`` durably
(fsync) before going on; Send/Broadcast -> ``message.to_bytes()`` to one or all other
replicas; CommitBlocks -> co-sign each committed block's payload at its height; SetTimer ->
(re)arm the single timer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from logserver.core.errors import FormatError
from witness.consensus import crypto
from witness.consensus.blocktree import BlockTree, CommittedBlock
from witness.consensus.certificates import (
    MessageRejected,
    verify_block,
    verify_qc,
    verify_tc,
    verify_timeout,
    verify_vote,
)
from witness.consensus.messages import (
    MAX_SYNC_BLOCKS,
    Message,
    Proposal,
    SyncRequest,
    SyncResponse,
    Timeout,
    Vote,
    message_from_bytes,
    message_round,
)
from witness.consensus.pacemaker import TimeoutCollector, VoteCollector, timeout_duration_ms
from witness.consensus.safety import DIEMBFT_V4, SafetyRules, SafetyState
from witness.consensus.types import Block, ConsensusConfig, QuorumCert, TimeoutCert

#: Messages of rounds more than this far below the current round are dropped unread.
PAST_ROUNDS_KEPT = 4
MAX_WANTED_BLOCKS = 64
MAX_SYNC_RESPONSE_PAYLOAD = 2 << 20
PRUNE_EVERY_COMMITS = 64

Validator = Callable[[bytes, bytes], bool]
PayloadSource = Callable[[bytes, int], bytes]
LeaderElection = Callable[[int], int]


@dataclass(frozen=True, slots=True)
class Persist:
    """Make ``state`` durable before executing any later action."""

    state: SafetyState


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``message`` to the replica with index ``to``."""

    to: int
    message: Message


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Send to every other replica."""

    message: Message


@dataclass(frozen=True, slots=True)
class CommitBlocks:
    """These blocks are committed, oldest first: act on their payloads."""

    blocks: tuple[CommittedBlock, ...]


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Call on_timer at ``deadline_ms``; replaces any earlier timer."""

    deadline_ms: int


Action = Persist | Send | Broadcast | CommitBlocks | SetTimer


def _repeat_parent(parent_payload: bytes, round_: int) -> bytes:
    return parent_payload


class Replica:
    """One DiemBFT v4 replica. ``persisted`` is the last SafetyState made durable, or None."""

    def __init__(
        self,
        config: ConsensusConfig,
        my_key: crypto.ReplicaSigner,
        persisted: SafetyState | None,
        validate: Validator,
        now_ms: int,
        *,
        propose: PayloadSource = _repeat_parent,
        leader_of: LeaderElection | None = None,
        rules: SafetyRules = DIEMBFT_V4,
        anchor: CommittedBlock | None = None,
        keep_rounds: int | None = None,
    ) -> None:
        """``anchor``: the last block this replica committed (kept by the driver), so that a
        restart need not re-fetch history from genesis. ``keep_rounds``: prune blocks that
        many rounds below the committed one (None keeps everything, which lets peers that
        restart from their safety state alone re-fetch the whole chain)."""
        self.config = config
        self.index = config.index_of(my_key.public_key)
        self._key = my_key
        self._validate = validate
        self._propose = propose
        self._leader_of = leader_of or config.round_robin_leader
        self._rules = rules
        if persisted is not None:
            verify_qc(config, persisted.high_qc)
        self.safety = persisted or SafetyState(0, config.genesis_qc, 0)
        if anchor is None:
            self.tree = BlockTree(config.genesis, 0, config.genesis_qc, rules)
        else:
            verify_block(config, anchor.block)
            self.tree = BlockTree(anchor.block, anchor.height, anchor.block.qc, rules)
        self._keep_rounds = keep_rounds
        self._commits_since_prune = 0
        self.tree.add_qc(self.safety.high_qc)
        self.round = 0
        self._last_round_tc: TimeoutCert | None = None
        self._proposed_round = 0
        self._my_timeout: Timeout | None = None
        self._pending_proposal: Proposal | None = None
        self._wanted: dict[bytes, tuple[int, int]] = {}  # block id -> (round, attempts)
        self._votes = VoteCollector(config)
        self._timeouts = TimeoutCollector(config)
        self._deadline = now_ms
        self.stats: Counter[str] = Counter()

    # -- driver entry points -------------------------------------------------------------

    def start(self, now_ms: int) -> list[Action]:
        s = self.safety
        first = max(1, s.last_voted_round, s.highest_timeout_round, s.high_qc.round + 1)
        out = self._enter_round(first, None, now_ms)
        if s.high_qc.block_id not in self.tree:
            out += self._request_block(s.high_qc.block_id, s.high_qc.round, None)
        return out

    def on_bytes(self, sender: int, data: bytes, now_ms: int) -> list[Action]:
        try:
            message = message_from_bytes(data, self.config.network_id)
        except FormatError:
            self.stats["malformed"] += 1
            return []
        return self.on_message(sender, message, now_ms)

    def on_message(self, sender: int, message: Message, now_ms: int) -> list[Action]:
        round_ = message_round(message)
        if round_ is not None and round_ + PAST_ROUNDS_KEPT < self.round:
            self.stats["stale"] += 1
            return []
        try:
            if isinstance(message, Proposal):
                return self._on_proposal(sender, message, now_ms)
            if isinstance(message, Vote):
                return self._on_vote(sender, message, now_ms)
            if isinstance(message, Timeout):
                return self._on_timeout(sender, message, now_ms)
            if isinstance(message, SyncRequest):
                return self._on_sync_request(sender, message)
            return self._on_sync_response(sender, message, now_ms)
        except MessageRejected as rejection:
            self.stats[rejection.reason] += 1
            return []

    def on_timer(self, now_ms: int) -> list[Action]:
        if now_ms < self._deadline:
            return []
        out = self._local_timeout(now_ms)
        for block_id, (round_, attempts) in list(self._wanted.items()):
            if block_id in self.tree or round_ <= self.tree.committed.round:
                del self._wanted[block_id]
                continue
            self._wanted[block_id] = (round_, attempts + 1)
            peer = self._peer(attempts + 1)
            out.append(Send(peer, SyncRequest(block_id, MAX_SYNC_BLOCKS)))
        self._deadline = now_ms + self._round_duration()
        out.append(SetTimer(self._deadline))
        return out

    def leader_of(self, round_: int) -> int:
        return self._leader_of(round_)

    @property
    def committed_height(self) -> int:
        return self.tree.committed_height

    # -- rounds ---------------------------------------------------------------------------

    def _round_duration(self) -> int:
        return timeout_duration_ms(self.config, self.round, self.tree.high_qc.round)

    def _enter_round(self, round_: int, tc: TimeoutCert | None, now_ms: int) -> list[Action]:
        self.round = round_
        self._last_round_tc = tc if tc is not None and tc.round == round_ - 1 else None
        self._my_timeout = None
        self._votes.prune(round_ - 2)
        self._deadline = now_ms + self._round_duration()
        out: list[Action] = [SetTimer(self._deadline)]
        out += self._try_propose(now_ms)
        return out

    def _process_qc(self, qc: QuorumCert, source: int | None, now_ms: int) -> list[Action]:
        out: list[Action] = self._commit_actions(self.tree.add_qc(qc))
        if qc.block_id not in self.tree:
            out += self._request_block(qc.block_id, qc.round, source)
        if qc.round >= self.round:
            out += self._enter_round(qc.round + 1, None, now_ms)
        return out

    def _process_tc(self, tc: TimeoutCert | None, source: int | None, now_ms: int) -> list[Action]:
        if tc is None:
            return []
        out = self._process_qc(tc.high_qc, source, now_ms)
        if tc.round >= self.round:
            out += self._enter_round(tc.round + 1, tc, now_ms)
        elif tc.round == self.round - 1 and self._last_round_tc is None:
            # E.g. after a restart: the TC that justifies timing out in this round.
            self._last_round_tc = tc
        return out

    # -- proposals and votes --------------------------------------------------------------

    def _try_propose(self, now_ms: int) -> list[Action]:
        if self._leader_of(self.round) != self.index or self._proposed_round >= self.round:
            return []
        high_qc = self.tree.high_qc
        parent = self.tree.get(high_qc.block_id)
        if parent is None:
            return self._request_block(high_qc.block_id, high_qc.round, None)
        self._proposed_round = self.round
        payload = self._propose(parent.payload, self.round)
        block = Block.create(
            self.config.network_id, self.round, self.index, high_qc, payload, signer=self._key
        )
        proposal = Proposal(block, self._last_round_tc)
        # The leader's own vote is persisted before the proposal leaves, so a leader that
        # restarts can never propose a second, different block for the same round.
        voting = self._vote_on(proposal, now_ms)
        persist_at = next((i for i, a in enumerate(voting) if isinstance(a, Persist)), None)
        if persist_at is None:
            self.stats["own-proposal-not-voted"] += 1
            return voting
        return [*voting[: persist_at + 1], Broadcast(proposal), *voting[persist_at + 1 :]]

    def _on_proposal(self, sender: int, proposal: Proposal, now_ms: int) -> list[Action]:
        block, tc = proposal.block, proposal.last_round_tc
        if block.author != self._leader_of(block.round):
            raise MessageRejected("proposal-wrong-leader")
        verify_block(self.config, block)
        if tc is not None:
            if tc.round >= block.round:
                raise MessageRejected("proposal-tc-round")
            verify_tc(self.config, tc)
        out = self._process_qc(block.qc, sender, now_ms)
        out += self._process_tc(tc, sender, now_ms)
        if block.round != self.round:
            self.stats["proposal-not-current-round"] += 1
            return out
        if block.parent_id not in self.tree:
            self._pending_proposal = proposal
            return out + self._request_block(block.parent_id, block.qc.round, sender)
        return out + self._vote_on(proposal, now_ms)

    def _vote_on(self, proposal: Proposal, now_ms: int) -> list[Action]:
        block = proposal.block
        parent = self.tree.get(block.parent_id)
        assert parent is not None
        if not self._rules.safe_to_vote(
            block.round, block.qc.round, proposal.last_round_tc, self.safety.last_voted_round
        ):
            self.stats["unsafe-proposal"] += 1
            return []
        if parent.round != block.qc.round:
            raise MessageRejected("block-parent-round-mismatch")
        if not self._validate(parent.payload, block.payload):
            self.stats["invalid-payload"] += 1
            return []
        out = self._commit_actions(self.tree.insert(block))
        self.safety = SafetyState(
            block.round, _higher(self.safety.high_qc, block.qc), self.safety.highest_timeout_round
        )
        message = crypto.vote_message(self.config.network_id, block.round, block.id)
        vote = Vote(block.round, block.id, self.index, self._key.sign(message))
        next_leader = self._leader_of(block.round + 1)
        if next_leader == self.index:
            return [*out, Persist(self.safety), *self._on_vote(self.index, vote, now_ms)]
        return out + self._ordered(Persist(self.safety), Send(next_leader, vote))

    def _on_vote(self, sender: int, vote: Vote, now_ms: int) -> list[Action]:
        verify_vote(self.config, vote)
        outcome = self._votes.add(vote, self.round)
        if outcome.equivocation:
            self.stats["vote-equivocation"] += 1
        if outcome.qc is None:
            return []
        return self._process_qc(outcome.qc, vote.voter, now_ms)

    # -- timeouts -------------------------------------------------------------------------

    def _local_timeout(self, now_ms: int) -> list[Action]:
        if self._my_timeout is not None and self._my_timeout.round == self.round:
            return [Broadcast(self._my_timeout)]
        high_qc = self.tree.high_qc
        s = self.safety
        if not self._rules.safe_to_timeout(
            self.round, high_qc.round, self._last_round_tc, s.last_voted_round, s.high_qc.round
        ):
            self.stats["unsafe-timeout"] += 1
            return []
        self.safety = SafetyState(
            max(s.last_voted_round, self.round), _higher(s.high_qc, high_qc), self.round
        )
        message = crypto.timeout_message(self.config.network_id, self.round, high_qc.round)
        timeout = Timeout(
            self.round, self.index, high_qc, self._last_round_tc, self._key.sign(message)
        )
        self._my_timeout = timeout
        out = self._ordered(Persist(self.safety), Broadcast(timeout))
        tc = self._timeouts.add(timeout)
        return out + self._process_tc(tc, None, now_ms)

    def _on_timeout(self, sender: int, timeout: Timeout, now_ms: int) -> list[Action]:
        verify_timeout(self.config, timeout)
        out = self._process_qc(timeout.high_qc, sender, now_ms)
        out += self._process_tc(timeout.last_round_tc, sender, now_ms)
        tc = self._timeouts.add(timeout)
        if tc is not None:
            return out + self._process_tc(tc, sender, now_ms)
        if (
            timeout.round == self.round
            and self._my_timeout is None
            and self._timeouts.count(self.round) > self.config.f
        ):
            out += self._local_timeout(now_ms)
        return out

    # -- catch-up -------------------------------------------------------------------------

    def _peer(self, attempt: int) -> int:
        peer = (self.index + 1 + attempt % (self.config.n - 1)) % self.config.n
        return peer if self.config.n > 1 else self.index

    def _request_block(self, block_id: bytes, round_: int, source: int | None) -> list[Action]:
        """Ask for a certified block of ``round_`` (and its ancestors) that is missing."""
        if block_id in self.tree:
            return []
        if self.tree.is_unlinked(block_id):
            missing = self.tree.missing_ancestor(block_id)
            if missing is None:
                return []
            block_id, round_ = missing
        # At or below the committed round a missing block is on a dead fork (or pruned).
        if round_ <= self.tree.committed.round:
            return []
        if block_id in self._wanted or len(self._wanted) >= MAX_WANTED_BLOCKS:
            return []
        self._wanted[block_id] = (round_, 0)
        peer = source if source is not None and source != self.index else self._peer(0)
        return [Send(peer, SyncRequest(block_id, MAX_SYNC_BLOCKS))]

    def _on_sync_request(self, sender: int, request: SyncRequest) -> list[Action]:
        limit = min(max(request.max_blocks, 1), MAX_SYNC_BLOCKS)
        chain: list[Block] = []
        size = 0
        for block in self.tree.ancestors(request.block_id, limit):
            size += len(block.payload)
            if chain and size > MAX_SYNC_RESPONSE_PAYLOAD:
                break
            chain.append(block)
        if not chain or sender == self.index:
            return []
        return [Send(sender, SyncResponse(tuple(chain)))]

    def _on_sync_response(self, sender: int, response: SyncResponse, now_ms: int) -> list[Action]:
        blocks = response.blocks
        if not blocks or blocks[0].id not in self._wanted:
            self.stats["sync-unsolicited"] += 1
            return []
        for i, block in enumerate(blocks):
            verify_block(self.config, block)
            if i + 1 < len(blocks) and (
                block.parent_id != blocks[i + 1].id or block.qc.round != blocks[i + 1].round
            ):
                raise MessageRejected("sync-broken-chain")
        del self._wanted[blocks[0].id]
        commits: list[CommittedBlock] = []
        for block in reversed(blocks):
            if block.parent_id in self.tree:
                try:
                    commits += self.tree.insert(block)
                except MessageRejected as rejection:
                    self.stats[rejection.reason] += 1
                    return self._commit_actions(commits)
            elif not self.tree.add_unlinked(block):
                self.stats["sync-buffer-full"] += 1
        out = self._commit_actions(commits)
        if blocks[0].id not in self.tree:
            return out + self._request_block(blocks[0].id, blocks[0].round, sender)
        pending, self._pending_proposal = self._pending_proposal, None
        if pending is not None and pending.block.round == self.round:
            if pending.block.parent_id in self.tree:
                out += self._vote_on(pending, now_ms)
            else:
                self._pending_proposal = pending
        return out + self._try_propose(now_ms)

    # -- helpers --------------------------------------------------------------------------

    def _ordered(self, persist: Persist, send: Action) -> list[Action]:
        return [persist, send] if self._rules.persist_before_send else [send, persist]

    def _commit_actions(self, commits: list[CommittedBlock]) -> list[Action]:
        if not commits:
            return []
        self._commits_since_prune += len(commits)
        if self._keep_rounds is not None and self._commits_since_prune >= PRUNE_EVERY_COMMITS:
            self._commits_since_prune = 0
            self.tree.prune(self._keep_rounds)
        return [CommitBlocks(tuple(commits))]


def _higher(a: QuorumCert, b: QuorumCert) -> QuorumCert:
    return b if b.round > a.round else a
