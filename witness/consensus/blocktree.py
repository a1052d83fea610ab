"""The block tree: blocks linked by parent QCs back to a root, certificates, and commits.

A block enters the tree only when its parent is already there, so every block in the tree has
a height. The root is genesis (height 0) or a committed *anchor* block that the driver kept
from an earlier commit, or that a peer proved committed (state sync, :class:`CommitProof`);
blocks far below the committed one may be pruned. The tree keeps the proof of its latest
commit (the committed block, its certified child and the child's QC) so that it can show a
peer that fell behind where to jump. Verified blocks
whose parent is still missing (from catch-up) wait in a bounded buffer and are linked as soon
as the parent arrives. Commits follow the 2-chain rule of
:class:`~witness.consensus.safety.SafetyRules` and only ever extend the committed chain; a
commit that would not extend it is refused and counted (it means f was exceeded).
"""

from __future__ import annotations

from dataclasses import dataclass

from witness.consensus.certificates import MessageRejected
from witness.consensus.safety import SafetyRules
from witness.consensus.types import Block, CommitProof, QuorumCert

MAX_UNLINKED_BLOCKS = 4096


@dataclass(frozen=True, slots=True)
class CommittedBlock:
    """A block and its height in the committed chain (genesis is height 0)."""

    height: int
    block: Block


class BlockTree:
    """Verified blocks linked to a root (genesis or a committed anchor), their certificates,
    and the committed chain, which only ever grows."""

    def __init__(
        self,
        root: Block,
        root_height: int,
        root_qc: QuorumCert,
        rules: SafetyRules,
        proof: CommitProof | None = None,
    ) -> None:
        """``root`` is genesis (height 0, with the genesis QC) or a committed anchor block,
        with ``proof`` of its commit when the driver kept one (the proof's child and QC are
        added to the tree)."""
        self._rules = rules
        self._blocks: dict[bytes, Block] = {root.id: root}
        self._heights: dict[bytes, int] = {root.id: root_height}
        self._qcs: dict[bytes, QuorumCert] = {root.id: root_qc}
        self._unlinked: dict[bytes, Block] = {}
        self._children_waiting: dict[bytes, set[bytes]] = {}
        self.high_qc = root_qc
        self.committed = root
        self.committed_height = root_height
        self.commit_proof: CommitProof | None = None
        self.conflicting_commits = 0
        if proof is not None and proof.block.id == root.id:
            self.commit_proof = proof
            self.insert(proof.child)
            self.add_qc(proof.child_qc)

    def __len__(self) -> int:
        return len(self._blocks)

    def __contains__(self, block_id: bytes) -> bool:
        return block_id in self._blocks

    def get(self, block_id: bytes) -> Block | None:
        return self._blocks.get(block_id)

    def is_unlinked(self, block_id: bytes) -> bool:
        return block_id in self._unlinked

    def add_qc(self, qc: QuorumCert) -> list[CommittedBlock]:
        """Record a verified QC; returns the blocks it commits (oldest first)."""
        if qc.round > self.high_qc.round:
            self.high_qc = qc
        if qc.block_id in self._qcs:
            return []
        self._qcs[qc.block_id] = qc
        if qc.block_id in self._blocks:
            return self._try_commit(qc.block_id)
        return []

    def blocks(self) -> list[Block]:
        """Every block of the tree and of the unlinked buffer, in round order."""
        return sorted([*self._blocks.values(), *self._unlinked.values()], key=lambda b: b.round)

    def qcs(self) -> list[QuorumCert]:
        """Every QC the tree holds, in round order."""
        return sorted(self._qcs.values(), key=lambda qc: qc.round)

    def insert(self, block: Block) -> list[CommittedBlock]:
        """Insert a verified block whose parent is in the tree; returns newly committed blocks."""
        parent = self._blocks[block.parent_id]
        if parent.round != block.qc.round:
            raise MessageRejected("block-parent-round-mismatch")
        if block.id in self._blocks:
            return []
        self._blocks[block.id] = block
        self._heights[block.id] = self._heights[parent.id] + 1
        commits = self.add_qc(block.qc)
        if block.id in self._qcs:
            commits += self._try_commit(block.id)
        for child_id in sorted(self._children_waiting.pop(block.id, ())):
            child = self._unlinked.pop(child_id, None)
            if child is not None:
                try:
                    commits += self.insert(child)
                except MessageRejected:
                    continue
        return commits

    def add_unlinked(self, block: Block) -> bool:
        """Buffer a certified block whose parent is missing; False when the buffer is full."""
        if block.id in self._blocks or block.id in self._unlinked:
            return True
        if len(self._unlinked) >= MAX_UNLINKED_BLOCKS:
            return False
        self._unlinked[block.id] = block
        self._children_waiting.setdefault(block.parent_id, set()).add(block.id)
        return True

    def missing_ancestor(self, block_id: bytes) -> tuple[bytes, int] | None:
        """(id, round) of the first ancestor of an unlinked block that is nowhere here."""
        current, round_ = block_id, -1
        while current in self._unlinked:
            block = self._unlinked[current]
            current, round_ = block.parent_id, block.qc.round
        return None if current in self._blocks else (current, round_)

    def prune(self, keep_rounds: int) -> None:
        """Forget blocks more than ``keep_rounds`` rounds below the committed block."""
        floor = self.committed.round - keep_rounds
        if floor <= 0:
            return
        for block_id in [i for i, b in self._blocks.items() if b.round < floor]:
            del self._blocks[block_id]
            del self._heights[block_id]
            self._qcs.pop(block_id, None)
        for block_id in [i for i, b in self._unlinked.items() if b.round < floor]:
            del self._unlinked[block_id]
        self._children_waiting = {
            parent: children
            for parent, children in self._children_waiting.items()
            if any(child in self._unlinked for child in children)
        }

    def ancestors(self, block_id: bytes, limit: int) -> list[Block]:
        """The block and its ancestors, newest first, at most ``limit``, genesis excluded."""
        chain: list[Block] = []
        block = self._blocks.get(block_id)
        while block is not None and block.round > 0 and len(chain) < limit:
            chain.append(block)
            block = self._blocks.get(block.parent_id)
        return chain

    def _try_commit(self, certified_id: bytes) -> list[CommittedBlock]:
        block = self._blocks[certified_id]
        parent = self._blocks.get(block.parent_id)
        if parent is None or parent.round <= self.committed.round:
            return []
        if not self._rules.commits_parent(block.round, parent.round):
            return []
        commits = self._commit(parent)
        if commits:
            self.commit_proof = CommitProof(
                self.committed_height, parent, block, self._qcs[certified_id]
            )
        return commits

    def _commit(self, block: Block) -> list[CommittedBlock]:
        chain: list[Block] = []
        current: Block | None = block
        while current is not None and current.round > self.committed.round:
            chain.append(current)
            current = self._blocks.get(current.parent_id)
        if current is None or current.id != self.committed.id:
            self.conflicting_commits += 1
            return []
        chain.reverse()
        first_height = self.committed_height + 1
        self.committed = block
        self.committed_height = self._heights[block.id]
        return [CommittedBlock(first_height + i, b) for i, b in enumerate(chain)]
