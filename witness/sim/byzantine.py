"""Byzantine behaviours for the simulator: a real replica whose output an adversary rewrites.

The adversary holds the replica's private key, so everything it sends is validly signed by
that key unless the behaviour is precisely to forge other replicas' signatures. Honest
replicas must reject or survive all of it; the simulator's checker decides whether they did.

``fork`` is the strongest: it collects QCs and TCs from what it receives, reveals a QC only
by building on it, reports the genesis QC in its timeouts, and leads only after a timeout
certificate, extending the highest certified block that the voting rule still lets honest
replicas accept and that is not its own last proposal or built on it: it grows sibling
branches whose certificates stay hidden until it builds on them. Correct rules survive it;
weakened voting or commit rules fork under it.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from witness.consensus import crypto
from witness.consensus.messages import Message, Proposal, Timeout, Vote
from witness.consensus.replica import Action, Broadcast, Replica, Send
from witness.consensus.types import Block, ConsensusConfig, QuorumCert, TimeoutCert

INFLATION = 1000


class ByzantineNode:
    """Drives ``replica`` and rewrites its actions according to ``kind``."""

    def __init__(
        self,
        kind: str,
        replica: Replica,
        signer: crypto.ReplicaSigner,
        rng: random.Random,
        alternative_payload: Callable[[bytes, int], bytes],
    ) -> None:
        self.kind = kind
        self.replica = replica
        self._signer = signer
        self._rng = rng
        self._alternative_payload = alternative_payload
        self._config: ConsensusConfig = replica.config
        self._me = replica.index
        # What the fork adversary has learnt.
        genesis = self._config.genesis
        self._blocks: dict[bytes, Block] = {genesis.id: genesis}
        self._qcs: dict[bytes, QuorumCert] = {genesis.id: self._config.genesis_qc}
        self._votes: dict[tuple[int, bytes], dict[int, bytes]] = {}
        self._timeouts: dict[int, dict[int, Timeout]] = {}
        self._tcs: dict[int, TimeoutCert] = {}
        self._last_fork_block = b""

    @property
    def round(self) -> int:
        return self.replica.round

    def start(self, now_ms: int) -> list[Action]:
        return self._rewrite(self.replica.start(now_ms))

    def on_timer(self, now_ms: int) -> list[Action]:
        return self._rewrite(self.replica.on_timer(now_ms))

    def on_payload_ready(self, now_ms: int) -> list[Action]:
        return self._rewrite(self.replica.on_payload_ready(now_ms))

    def on_message(self, sender: int, message: Message, now_ms: int) -> list[Action]:
        out = self._rewrite(self.replica.on_message(sender, message, now_ms))
        if self.kind == "fork":
            out += self._learn(message)
        if self.kind == "double-vote" and isinstance(message, Proposal):
            out.append(self._vote_for(message.block.round, message.block.id))
        return out

    # -- rewriting ------------------------------------------------------------------------

    def _others(self) -> list[int]:
        return [i for i in range(self._config.n) if i != self._me]

    def _vote_for(self, round_: int, block_id: bytes) -> Send:
        message = crypto.vote_message(self._config.network_id, round_, block_id)
        vote = Vote(round_, block_id, self._me, self._signer.sign(message))
        return Send(self.replica.leader_of(round_ + 1), vote)

    def _block(self, round_: int, qc: QuorumCert, payload: bytes) -> Block:
        return Block.create(
            self._config.network_id, round_, self._me, qc, payload, signer=self._signer
        )

    def _ghost_qc(self, round_: int) -> QuorumCert:
        ghost_id = self._rng.randbytes(crypto.HASH_SIZE)
        message = crypto.vote_message(self._config.network_id, round_, ghost_id)
        signatures = [(self._me, self._signer.sign(message))]
        for signer in self._others()[: self._config.quorum - 1]:
            signatures.append((signer, self._rng.randbytes(crypto.SIGNATURE_SIZE)))
        return QuorumCert(round_, ghost_id, tuple(sorted(signatures)))

    def _rewrite(self, actions: list[Action]) -> list[Action]:
        out: list[Action] = []
        for action in actions:
            message = action.message if isinstance(action, Send | Broadcast) else None
            if isinstance(message, Proposal):
                out += self._rewrite_proposal(action, message)
            elif isinstance(message, Vote):
                out += self._rewrite_vote(action, message)
            elif isinstance(message, Timeout):
                out += self._rewrite_timeout(action, message)
            else:
                out.append(action)
        return out

    def _rewrite_proposal(self, action: Action, proposal: Proposal) -> list[Action]:
        block = proposal.block
        parent = self.replica.tree.get(block.parent_id)
        if self.kind == "fork":
            return []  # it proposes only once it holds a TC, see _learn
        if self.kind == "equivocate" and parent is not None:
            payload = self._alternative_payload(parent.payload, block.round)
            twin = Proposal(self._block(block.round, block.qc, payload), proposal.last_round_tc)
            out: list[Action] = []
            for peer in self._others():
                pair = [proposal, twin]
                self._rng.shuffle(pair)
                out += [Send(peer, pair[0]), Send(peer, pair[1])]
            return out
        if self.kind == "stale-qc":
            payload = self._alternative_payload(self._config.genesis.payload, block.round)
            stale = self._block(block.round, self._config.genesis_qc, payload)
            return [action, Broadcast(Proposal(stale, None))]
        if self.kind == "ghost-qc":
            ghost = self._block(block.round, self._ghost_qc(block.round - 1), block.payload)
            return [Broadcast(Proposal(ghost, None)), action]
        if self.kind == "inflated-round":
            inflated = self._block(block.round + INFLATION, block.qc, block.payload)
            return [Broadcast(Proposal(inflated, proposal.last_round_tc)), action]
        if self.kind == "forged":
            forged = Block(block.round, block.author, block.qc, block.payload, bytes(64), block.id)
            return [Broadcast(Proposal(forged, None)), action]
        return [action]

    def _rewrite_vote(self, action: Action, vote: Vote) -> list[Action]:
        if self.kind == "withhold":
            return []
        if self.kind == "forged":
            out: list[Action] = [action]
            for other in self._others():
                fake = Vote(
                    vote.round, vote.block_id, other, self._rng.randbytes(crypto.SIGNATURE_SIZE)
                )
                out.append(Broadcast(fake))
            return out
        if self.kind == "double-vote":
            return [action, self._vote_for(vote.round, self._rng.randbytes(crypto.HASH_SIZE))]
        return [action]

    def _rewrite_timeout(self, action: Action, timeout: Timeout) -> list[Action]:
        if self.kind == "inflated-round":
            round_ = timeout.round + INFLATION
            message = crypto.timeout_message(self._config.network_id, round_, timeout.high_qc.round)
            inflated = Timeout(round_, self._me, timeout.high_qc, None, self._signer.sign(message))
            return [action, Broadcast(inflated)]
        if self.kind == "ghost-qc":
            ghost = self._ghost_qc(timeout.round - 1)
            message = crypto.timeout_message(self._config.network_id, timeout.round, ghost.round)
            fake = Timeout(timeout.round, self._me, ghost, None, self._signer.sign(message))
            return [Broadcast(fake), action]
        if self.kind in {"stale-qc", "fork"}:
            qc = self._config.genesis_qc
            message = crypto.timeout_message(self._config.network_id, timeout.round, qc.round)
            stale = Timeout(timeout.round, self._me, qc, None, self._signer.sign(message))
            return [Broadcast(stale)]
        if self.kind == "forged":
            other = self._rng.choice(self._others())
            fake = Timeout(
                timeout.round,
                other,
                timeout.high_qc,
                None,
                self._rng.randbytes(crypto.SIGNATURE_SIZE),
            )
            return [action, Broadcast(fake)]
        return [action]

    # -- the fork adversary -----------------------------------------------------------------

    def _learn(self, message: Message) -> list[Action]:
        if isinstance(message, Proposal):
            block = message.block
            self._blocks.setdefault(block.id, block)
            self._qcs.setdefault(block.qc.block_id, block.qc)
            if message.last_round_tc is not None:
                self._tcs.setdefault(message.last_round_tc.round, message.last_round_tc)
        elif isinstance(message, Vote):
            key = (message.round, message.block_id)
            signatures = self._votes.setdefault(key, {})
            signatures[message.voter] = message.signature
            if message.block_id not in self._qcs:
                own = crypto.vote_message(self._config.network_id, message.round, message.block_id)
                signatures[self._me] = self._signer.sign(own)
            if len(signatures) >= self._config.quorum:
                qc = QuorumCert(message.round, message.block_id, tuple(sorted(signatures.items())))
                self._qcs.setdefault(message.block_id, qc)
        elif isinstance(message, Timeout):
            self._qcs.setdefault(message.high_qc.block_id, message.high_qc)
            same_round = self._timeouts.setdefault(message.round, {})
            same_round[message.signer] = message
            if len(same_round) >= self._config.quorum and message.round not in self._tcs:
                chosen = sorted(same_round.values(), key=lambda t: t.signer)
                high_qc = max((t.high_qc for t in chosen), key=lambda qc: qc.round)
                entries = tuple((t.signer, t.high_qc.round, t.signature) for t in chosen)
                self._tcs[message.round] = TimeoutCert(message.round, entries, high_qc)
                if self.replica.leader_of(message.round + 1) == self._me:
                    fork = self._fork_proposal(message.round + 1)
                    if fork is not None:
                        return [Broadcast(fork)]
        return []

    def _fork_proposal(self, round_: int) -> Proposal | None:
        tc = self._tcs.get(round_ - 1)
        eligible = [
            qc
            for qc in self._qcs.values()
            if qc.block_id in self._blocks
            and qc.round < round_
            and (qc.round == round_ - 1 or (tc is not None and qc.round >= max(tc.high_qc_rounds)))
        ]
        if not eligible:
            return None
        # Switch branch: never extend the last proposal or anything built on it.
        fresh = [qc for qc in eligible if not self._descends(qc.block_id, self._last_fork_block)]
        qc = max(fresh or eligible, key=lambda qc: (qc.round, qc.block_id))
        parent = self._blocks[qc.block_id]
        payload = self._alternative_payload(parent.payload, round_)
        block = self._block(round_, qc, payload)
        self._blocks[block.id] = block
        self._last_fork_block = block.id
        return Proposal(block, tc if qc.round != round_ - 1 else None)

    def _descends(self, block_id: bytes, ancestor: bytes) -> bool:
        block = self._blocks.get(block_id)
        while block is not None:
            if block.id == ancestor:
                return True
            if block.round == 0:
                return False
            block = self._blocks.get(block.parent_id)
        return False
