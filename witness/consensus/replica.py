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

where ``run`` executes actions in order: Persist -> write ``state.to_bytes()`` and store
``blocks`` durably (fsync) before going on; Send/Broadcast -> ``message.to_bytes()`` to one or
all other replicas; CommitBlocks -> co-sign each committed block's payload, keep ``proof`` as
the anchor and drop stored blocks at or below it; SetTimer -> (re)arm the single timer. A
driver whose payload source had nothing new (``propose`` returned None) calls
``on_payload_ready`` when it has news, so an idle network proposes nothing and only times
out, ever more slowly.

On restart the driver passes what it kept: the safety state, the anchor (the proof of its
last commit) and the stored blocks; the replica rebuilds its tree from them, so even a network
whose replicas all restarted at once has the certified blocks it needs. A replica that fell
behind further than its peers keep blocks jumps to a newer committed block that a peer proves
(state sync, :class:`~witness.consensus.types.CommitProof`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from logserver.core.errors import FormatError
from witness.consensus import crypto
from witness.consensus.blocktree import BlockTree, CommittedBlock
from witness.consensus.certificates import (
    MessageRejected,
    verify_block,
    verify_commit_proof,
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
from witness.consensus.types import Block, CommitProof, ConsensusConfig, QuorumCert, TimeoutCert

#: Messages of rounds more than this far below the current round are dropped unread.
PAST_ROUNDS_KEPT = 4
MAX_WANTED_BLOCKS = 64
MAX_SYNC_RESPONSE_PAYLOAD = 2 << 20
PRUNE_EVERY_COMMITS = 64

Validator = Callable[[bytes, bytes], bool]
#: (parent payload, round) -> a new payload, or None when there is nothing new to propose.
PayloadSource = Callable[[bytes, int], bytes | None]
LeaderElection = Callable[[int], int]


@dataclass(frozen=True, slots=True)
class Persist:
    """Make ``state`` durable, and store ``blocks``, before executing any later action."""

    state: SafetyState
    blocks: tuple[Block, ...] = ()


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
    """These blocks are committed, oldest first: act on their payloads. ``proof`` proves the
    last one committed: the driver keeps it as the anchor for a restart."""

    blocks: tuple[CommittedBlock, ...]
    proof: CommitProof | None = None


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
        anchor: CommitProof | CommittedBlock | None = None,
        stored_blocks: Sequence[Block] = (),
        keep_rounds: int | None = None,
    ) -> None:
        """``anchor``: the proof of the last commit (kept by the driver from ``CommitBlocks``;
        a bare committed block is still accepted), so that a restart need not re-fetch history
        from genesis. ``stored_blocks``: the blocks of ``Persist`` actions the driver kept.
        ``keep_rounds``: prune blocks that many rounds below the committed one (None keeps
        everything); a peer that fell further behind than that catches up by state sync."""
        self.config = config
        self.index = config.index_of(my_key.public_key)
        self._key = my_key
        self._validate = validate
        self._propose = propose
        self._leader_of = leader_of or config.round_robin_leader
        self._rules = rules
        self.stats: Counter[str] = Counter()
        if persisted is not None:
            verify_qc(config, persisted.high_qc)
            if persisted.high_tc is not None:
                verify_tc(config, persisted.high_tc)
        self.safety = persisted or SafetyState(0, config.genesis_qc, 0)
        if isinstance(anchor, CommitProof):
            verify_commit_proof(config, anchor)
            self.tree = BlockTree(anchor.block, anchor.height, anchor.block.qc, rules, anchor)
        elif anchor is not None:
            verify_block(config, anchor.block)
            self.tree = BlockTree(anchor.block, anchor.height, anchor.block.qc, rules)
        else:
            self.tree = BlockTree(config.genesis, 0, config.genesis_qc, rules)
        self._keep_rounds = keep_rounds
        self._commits_since_prune = 0
        self._restored = self._restore(stored_blocks)
        self._restored += self.tree.add_qc(self.safety.high_qc)
        self.round = 0
        self._last_round_tc: TimeoutCert | None = None
        self._proposed_round = 0
        self._my_timeout: Timeout | None = None
        self._pending_proposal: Proposal | None = None
        self._wanted: dict[bytes, tuple[int, int]] = {}  # block id -> (round, attempts)
        self._votes = VoteCollector(config)
        self._timeouts = TimeoutCollector(config)
        self._deadline = now_ms

    # -- driver entry points -------------------------------------------------------------

    def start(self, now_ms: int) -> list[Action]:
        s = self.safety
        tc = s.high_tc
        first = max(1, s.last_voted_round, s.highest_timeout_round, s.high_qc.round + 1)
        if tc is not None:
            first = max(first, tc.round + 1)
        out = self._commit_actions(self._restored)
        self._restored = []
        out += self._enter_round(first, tc, now_ms)
        if s.high_qc.block_id not in self.tree:
            out += self._request_block(s.high_qc.block_id, s.high_qc.round, None)
        return out

    def on_payload_ready(self, now_ms: int) -> list[Action]:
        """The driver's payload source has something new: propose now if this replica leads
        the current round and deferred its proposal for want of news."""
        return self._try_propose(now_ms)

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
            out.append(Send(peer, self._sync_request(block_id)))
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
            out += self._remember_tc(tc)
            out += self._enter_round(tc.round + 1, tc, now_ms)
        elif tc.round == self.round - 1 and self._last_round_tc is None:
            # E.g. after a restart: the TC that justifies timing out in this round.
            self._last_round_tc = tc
            out += self._remember_tc(tc)
        return out

    def _remember_tc(self, tc: TimeoutCert) -> list[Action]:
        """Keep the highest TC durable: after a restart it justifies timing out in the round
        it led to (DiemBFT's timeout rule), which a network restarted as a whole needs."""
        if not self._rules.persist_timeout_certificate:
            return []
        known = self.safety.high_tc
        if known is not None and known.round >= tc.round:
            return []
        self.safety = replace(self.safety, high_tc=tc)
        return [Persist(self.safety)]

    # -- proposals and votes --------------------------------------------------------------

    def _try_propose(self, now_ms: int) -> list[Action]:
        if self._leader_of(self.round) != self.index or self._proposed_round >= self.round:
            return []
        high_qc = self.tree.high_qc
        parent = self.tree.get(high_qc.block_id)
        if parent is None:
            return self._request_block(high_qc.block_id, high_qc.round, None)
        payload = self._propose(parent.payload, self.round)
        if payload is None:  # nothing new: propose only if a commit still needs this block
            if not self._needs_block(parent):
                self.stats["proposals-deferred"] += 1
                return []
            payload = parent.payload
        self._proposed_round = self.round
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

    def _needs_block(self, parent: Block) -> bool:
        """Whether a block repeating ``parent``'s payload is still needed: to commit a payload
        that is not committed yet, or to carry the QC that committed a new payload (which only
        this replica may hold) to the others. Otherwise an idle leader proposes nothing."""
        committed = self.tree.committed
        if parent.payload != committed.payload:
            return True
        if parent.parent_id != committed.id:
            return False
        before = self.tree.get(committed.parent_id)
        return before is not None and before.payload != committed.payload

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
        high_qc = _higher(self.safety.high_qc, block.qc)
        self.safety = replace(self.safety, last_voted_round=block.round, high_qc=high_qc)
        message = crypto.vote_message(self.config.network_id, block.round, block.id)
        vote = Vote(block.round, block.id, self.index, self._key.sign(message))
        next_leader = self._leader_of(block.round + 1)
        persist = Persist(self.safety, (block,))
        if next_leader == self.index:
            return [*out, persist, *self._on_vote(self.index, vote, now_ms)]
        return out + self._ordered(persist, Send(next_leader, vote))

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
        self.safety = replace(
            s,
            last_voted_round=max(s.last_voted_round, self.round),
            high_qc=_higher(s.high_qc, high_qc),
            highest_timeout_round=self.round,
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
        return [Send(peer, self._sync_request(block_id))]

    def _sync_request(self, block_id: bytes) -> SyncRequest:
        return SyncRequest(block_id, MAX_SYNC_BLOCKS, self.tree.committed.round)

    def _on_sync_request(self, sender: int, request: SyncRequest) -> list[Action]:
        if sender == self.index:
            return []
        limit = min(max(request.max_blocks, 1), MAX_SYNC_BLOCKS)
        chain: list[Block] = []
        size = 0
        for block in self.tree.ancestors(request.block_id, limit):
            size += len(block.payload)
            if chain and size > MAX_SYNC_RESPONSE_PAYLOAD:
                break
            chain.append(block)
        # A requester that committed less than this replica may be unable to link the chain
        # (its missing ancestors were pruned everywhere): show it where to jump.
        proof = self.tree.commit_proof
        if proof is not None and proof.block.round <= request.committed_round:
            proof = None
        if not chain and proof is None:
            return []
        return [Send(sender, SyncResponse(tuple(chain), proof))]

    def _on_sync_response(self, sender: int, response: SyncResponse, now_ms: int) -> list[Action]:
        out: list[Action] = []
        if response.proof is not None:
            out += self._on_commit_proof(sender, response.proof, now_ms)
        blocks = response.blocks
        if not blocks or blocks[0].id not in self._wanted:
            if not out:
                self.stats["sync-unsolicited"] += 1
            return out
        for i, block in enumerate(blocks):
            verify_block(self.config, block)
            if i + 1 < len(blocks) and (
                block.parent_id != blocks[i + 1].id or block.qc.round != blocks[i + 1].round
            ):
                raise MessageRejected("sync-broken-chain")
        del self._wanted[blocks[0].id]
        out.append(Persist(self.safety, blocks))  # certified blocks a restart may need
        commits: list[CommittedBlock] = []
        for block in reversed(blocks):
            if block.round <= self.tree.committed.round:
                continue
            if block.parent_id in self.tree:
                try:
                    commits += self.tree.insert(block)
                except MessageRejected as rejection:
                    self.stats[rejection.reason] += 1
                    return out + self._commit_actions(commits)
            elif not self.tree.add_unlinked(block):
                self.stats["sync-buffer-full"] += 1
        out += self._commit_actions(commits)
        if blocks[0].id not in self.tree:
            return out + self._request_block(blocks[0].id, blocks[0].round, sender)
        return out + self._resume(now_ms)

    def _resume(self, now_ms: int) -> list[Action]:
        """After blocks arrived: vote for a proposal that waited for its parent, and propose."""
        out: list[Action] = []
        pending, self._pending_proposal = self._pending_proposal, None
        if pending is not None and pending.block.round == self.round:
            if pending.block.parent_id in self.tree:
                out += self._vote_on(pending, now_ms)
            else:
                self._pending_proposal = pending
        return out + self._try_propose(now_ms)

    def _on_commit_proof(self, sender: int, proof: CommitProof, now_ms: int) -> list[Action]:
        """State sync: jump to a block a peer proves committed, if this replica lacks it.

        The new tree is rooted at that block; blocks and QCs of the old tree above it are kept.
        The jump is reported as a commit of that block alone: the driver checks its payload
        against its own state (for a witness: the log's entries from its mirror) as it would
        any commit, without the skipped blocks.
        """
        block = proof.block
        if block.round <= self.tree.committed.round or block.id in self.tree:
            return []
        verify_commit_proof(self.config, proof)
        old = self.tree
        self.tree = BlockTree(block, proof.height, block.qc, self._rules, proof)
        commits = [CommittedBlock(proof.height, block)]
        commits += self._restore([b for b in old.blocks() if b.round > block.round])
        for qc in old.qcs():
            if qc.round > block.round:
                commits += self.tree.add_qc(qc)
        self._wanted = {k: v for k, v in self._wanted.items() if v[0] > block.round}
        self.stats["state-sync"] += 1
        out = self._commit_actions(commits)
        out += self._process_qc(proof.child_qc, sender, now_ms)
        return out + self._resume(now_ms)

    # -- helpers --------------------------------------------------------------------------

    def _restore(self, blocks: Sequence[Block]) -> list[CommittedBlock]:
        """Put kept blocks back into the tree (linked, or buffered until their parent comes)."""
        commits: list[CommittedBlock] = []
        for block in sorted(blocks, key=lambda b: b.round):
            if block.round <= self.tree.committed.round or block.id in self.tree:
                continue
            try:
                verify_block(self.config, block)
                if block.parent_id in self.tree:
                    commits += self.tree.insert(block)
                else:
                    self.tree.add_unlinked(block)
            except MessageRejected as rejection:
                self.stats[rejection.reason] += 1
        return commits

    def _ordered(self, persist: Persist, send: Action) -> list[Action]:
        return [persist, send] if self._rules.persist_before_send else [send, persist]

    def _commit_actions(self, commits: list[CommittedBlock]) -> list[Action]:
        if not commits:
            return []
        self._commits_since_prune += len(commits)
        if self._keep_rounds is not None:
            every = min(PRUNE_EVERY_COMMITS, max(1, self._keep_rounds // 4))
            if self._commits_since_prune >= every:
                self._commits_since_prune = 0
                self.tree.prune(self._keep_rounds)
        return [CommitBlocks(tuple(commits), self.tree.commit_proof)]


def _higher(a: QuorumCert, b: QuorumCert) -> QuorumCert:
    return b if b.round > a.round else a
