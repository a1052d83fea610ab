"""The right edge of a Merkle tree, for appending without reading back (a compact range).

A tree of size n is, from left to right, a sequence of perfect subtrees whose sizes are the set
bits of n, largest first. Keeping the root of each of them is enough to append records and to
compute the tree hash, so the sequencer's hot path does no storage reads. Appending record n
produces exactly the stored hashes ``tlog.stored_hashes`` assigns to it, in the same order:
the record hash, then the root of each perfect subtree that record completes.
"""

from __future__ import annotations

import hashlib

from logserver.core import tlog


class Frontier:
    """The roots of the perfect subtrees that make up a tree, by level."""

    def __init__(self, size: int, roots: dict[int, bytes]) -> None:
        expected = {level for level in range(size.bit_length()) if size >> level & 1}
        if set(roots) != expected:
            raise ValueError(f"a tree of size {size} has subtrees at levels {sorted(expected)}")
        self.size = size
        self._roots = dict(roots)

    @staticmethod
    def indexes(size: int) -> dict[int, int]:
        """The stored-hash index of each subtree root of a tree of ``size``, by level."""
        return {
            level: tlog.stored_hash_index(level, (size >> level) - 1)
            for level in range(size.bit_length())
            if size >> level & 1
        }

    @classmethod
    def load(cls, size: int, reader: tlog.HashReader) -> Frontier:
        wanted = cls.indexes(size)
        hashes = reader.read_hashes(list(wanted.values()))
        return cls(size, dict(zip(wanted, hashes, strict=True)))

    def append(self, data: bytes) -> list[bytes]:
        """Add one record; return the hashes to store for it, in stored-index order."""
        sha256 = hashlib.sha256
        h = sha256(b"\x00" + data).digest()
        out = [h]
        roots = self._roots
        level = 0
        n = self.size
        while n >> level & 1:
            h = sha256(b"\x01" + roots.pop(level) + h).digest()
            out.append(h)
            level += 1
        roots[level] = h
        self.size = n + 1
        return out

    def tree_hash(self) -> bytes:
        """The RFC 6962 root: subtree roots folded from the smallest to the largest."""
        if self.size == 0:
            return hashlib.sha256(b"").digest()
        levels = sorted(self._roots)
        h = self._roots[levels[0]]
        for level in levels[1:]:
            h = tlog.node_hash(self._roots[level], h)
        return h
