"""The pure Merkle-tree core of the log: RFC 6962/9162 hashing, stored hashes, proofs.

The tree is the one of RFC 9162 §2.1: a record (leaf) hash is SHA-256(0x00 ‖ data), an interior
node is SHA-256(0x01 ‖ left ‖ right), and the tree over n records splits at the largest power
of two smaller than n. Its layout in storage follows Go's ``golang.org/x/mod/sumdb/tlog``:
every complete subtree hash ("stored hash") gets a dense index, and appending record n appends
exactly the record hash plus the hashes of the subtrees it completes. Storage is therefore an
append-only array, and any root, inclusion proof or consistency proof, for the current tree or
any earlier size, is computed from O(log n) stored hashes.

Each operation comes in two halves, as in transparency-dev's ``merkle/proof``: a function
that says WHICH stored hashes it needs (``*_indexes``), and one that builds the result FROM
those hashes (``*_from_hashes``), so that storage can read them in one transaction. The plain
functions (``tree_hash``, ``prove_record``, ...) combine both over a :class:`HashReader`.

Nothing here does I/O. Errors: :class:`UsageError` for impossible sizes or indexes,
:class:`FormatError` for hashes of the wrong length or oversized proofs,
:class:`VerificationError` for a proof that does not check out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Protocol

from logserver.core.errors import FormatError, UsageError, VerificationError

HASH_SIZE = 32
Hash = bytes

MAX_PROOF_HASHES = 64
"""Longest proof a checker looks at; no tree of fewer than 2**63 records needs more."""

MAX_TREE_SIZE = (1 << 64) - 1
"""Tree sizes are unsigned 64-bit integers, as in checkpoints."""

EMPTY_TREE_HASH = hashlib.sha256(b"").digest()
"""The root of the tree of zero records (RFC 9162 §2.1.1: MTH({}) = SHA-256())."""


class HashReader(Protocol):
    """Anything that returns stored hashes by their dense index, in the order asked."""

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]: ...


# ----- hashing ---------------------------------------------------------------------------------


def record_hash(data: bytes) -> bytes:
    """The leaf hash of a record: SHA-256(0x00 ‖ data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node: SHA-256(0x01 ‖ left ‖ right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


# ----- the dense stored-hash index -------------------------------------------------------------


def stored_hash_index(level: int, n: int) -> int:
    """The dense index of the stored hash of the n-th complete subtree of 2**level records.

    Hashes are numbered in the order they are appended: record 0's hash, record 1's hash, the
    node over records 0..1, record 2's hash, and so on.
    """
    if level < 0 or n < 0:
        raise UsageError(f"no stored hash at level {level}, position {n}")
    # The subtree is completed by appending record m; before it come the 2m - popcount(m)
    # hashes of records 0..m-1, then m's record hash, then one node hash per level up to ours.
    m = ((n + 1) << level) - 1
    return 2 * m - m.bit_count() + level


def split_stored_hash_index(index: int) -> tuple[int, int]:
    """The inverse of :func:`stored_hash_index`: (level, n) of a stored hash."""
    if index < 0:
        raise UsageError(f"no stored hash has index {index}")
    # stored_hash_index(0, n) = 2n - popcount(n) lies in (2n - log2 n - 2, 2n], so the record
    # that appended this hash is at most a few dozen steps past index // 2.
    n = index // 2
    first = stored_hash_index(0, n)
    while True:
        # Record n adds its own hash and one node per trailing 1 bit of n.
        following = first + 1 + ((n + 1) & -(n + 1)).bit_length() - 1
        if following > index:
            break
        n += 1
        first = following
    level = index - first
    return level, n >> level


def stored_hash_count(n: int) -> int:
    """The number of stored hashes of a tree of n records."""
    if n < 0:
        raise UsageError(f"negative tree size {n}")
    return 2 * n - n.bit_count()


# ----- appending -------------------------------------------------------------------------------


def append_indexes(n: int) -> list[int]:
    """The stored hashes that appending record n combines with its record hash, in order."""
    if n < 0:
        raise UsageError(f"negative record index {n}")
    completed = ((n + 1) & -(n + 1)).bit_length() - 1  # trailing 1 bits of n
    # The left siblings, from the highest level down, so the indexes come out ascending.
    return [stored_hash_index(level, (n >> level) - 1) for level in reversed(range(completed))]


def stored_hashes_for_record_hash(n: int, h: bytes, reader: HashReader) -> list[bytes]:
    """The hashes to append for record n whose leaf hash is h: h, then the completed nodes."""
    _check_hash(h, "record hash")
    siblings = reader.read_hashes(append_indexes(n))
    hashes = [h]
    for sibling in reversed(siblings):
        h = node_hash(sibling, h)
        hashes.append(h)
    return hashes


def stored_hashes(n: int, data: bytes, reader: HashReader) -> list[bytes]:
    """The hashes to append when adding record n with the given data (at most 1 + log2 n)."""
    return stored_hashes_for_record_hash(n, record_hash(data), reader)


# ----- tree hashes -----------------------------------------------------------------------------


def _subtrees(lo: int, hi: int) -> Iterator[tuple[int, int]]:
    """The complete subtrees (level, position) that tile records lo..hi-1, left to right.

    lo must be a multiple of the first subtree's size, as every range this module uses is.
    """
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        yield level, lo >> level
        lo += 1 << level


def subtree_indexes(lo: int, hi: int) -> list[int]:
    """The stored hashes whose combination is the Merkle tree hash of records lo..hi-1."""
    return [stored_hash_index(level, n) for level, n in _subtrees(lo, hi)]


def _fold_subtrees(hashes: Sequence[bytes]) -> bytes:
    """Combine complete-subtree hashes, from left to right, into the hash of their range."""
    h = hashes[-1]
    for left in reversed(hashes[:-1]):
        h = node_hash(left, h)
    return h


def tree_hash_indexes(n: int) -> list[int]:
    """The stored hashes :func:`tree_hash_from_hashes` needs for the root of n records."""
    _check_size(n)
    return subtree_indexes(0, n)


def tree_hash_from_hashes(n: int, hashes: Sequence[bytes]) -> bytes:
    """The root of the first n records, from the stored hashes of :func:`tree_hash_indexes`."""
    _check_size(n)
    _check_count(n.bit_count(), hashes)
    if n == 0:
        return EMPTY_TREE_HASH
    return _fold_subtrees(hashes)


def tree_hash(n: int, reader: HashReader) -> bytes:
    """The Merkle tree hash of the first n records (SHA-256 of nothing for n = 0)."""
    return tree_hash_from_hashes(n, reader.read_hashes(tree_hash_indexes(n)))


# ----- inclusion proofs ------------------------------------------------------------------------


def _split(size: int) -> int:
    """The size of the left subtree of a tree of size >= 2: the largest power of 2 below it."""
    return 1 << ((size - 1).bit_length() - 1)


def _record_path(t: int, n: int) -> list[tuple[int, int, bool]]:
    """From the leaf up: each sibling range (lo, hi) of record n in tree t, and whether the
    record lies to its left."""
    lo, hi = 0, t
    path = []
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        if n < mid:
            path.append((mid, hi, True))
            hi = mid
        else:
            path.append((lo, mid, False))
            lo = mid
    path.reverse()
    return path


def _sibling_ranges_indexes(ranges: Sequence[tuple[int, int]]) -> list[int]:
    return [i for lo, hi in ranges for i in subtree_indexes(lo, hi)]


def _sibling_ranges_hashes(
    ranges: Sequence[tuple[int, int]], hashes: Sequence[bytes]
) -> list[bytes]:
    counts = [sum(1 for _ in _subtrees(lo, hi)) for lo, hi in ranges]
    _check_count(sum(counts), hashes)
    proof = []
    at = 0
    for count in counts:
        proof.append(_fold_subtrees(hashes[at : at + count]))
        at += count
    return proof


def _check_count(expected: int, hashes: Sequence[bytes]) -> None:
    if len(hashes) != expected:
        raise UsageError(f"expected {expected} stored hashes, got {len(hashes)}")


def record_proof_indexes(t: int, n: int) -> list[int]:
    """The stored hashes :func:`record_proof_from_hashes` needs to prove record n in tree t."""
    _check_index(t, n)
    return _sibling_ranges_indexes([(lo, hi) for lo, hi, _ in _record_path(t, n)])


def record_proof_from_hashes(t: int, n: int, hashes: Sequence[bytes]) -> list[bytes]:
    """The inclusion proof of record n in tree t, from :func:`record_proof_indexes`' hashes."""
    _check_index(t, n)
    return _sibling_ranges_hashes([(lo, hi) for lo, hi, _ in _record_path(t, n)], hashes)


def prove_record(t: int, n: int, reader: HashReader) -> list[bytes]:
    """The RFC 9162 inclusion proof of record n in the tree of the first t records."""
    return record_proof_from_hashes(t, n, reader.read_hashes(record_proof_indexes(t, n)))


def check_record(proof: Sequence[bytes], t: int, th: bytes, n: int, h: bytes) -> None:
    """Check that proof proves record hash h at index n in the tree of size t with root th."""
    _check_index(t, n)
    _check_hash(th, "tree hash")
    _check_hash(h, "record hash")
    _check_proof(proof)
    path = _record_path(t, n)
    if len(proof) != len(path):
        raise VerificationError(
            f"inclusion proof for record {n} in tree {t} has {len(proof)} hashes, "
            f"expected {len(path)}"
        )
    for sibling, (_, _, record_on_left) in zip(proof, path, strict=True):
        h = node_hash(h, sibling) if record_on_left else node_hash(sibling, h)
    if h != th:
        raise VerificationError(f"inclusion proof for record {n} in tree {t} does not verify")


# ----- consistency proofs ----------------------------------------------------------------------


def _tree_path(t: int, n: int) -> tuple[tuple[int, int] | None, list[tuple[int, int, bool]]]:
    """The shape of the consistency proof of tree n within tree t.

    Returns the range whose hash starts the proof (None when it is the old root itself, known
    to the checker) and, from the bottom up, each sibling range and whether the old tree's edge
    lies to its left.
    """
    lo, hi = 0, t
    path = []
    while n != hi:
        mid = lo + _split(hi - lo)
        if n <= mid:
            path.append((mid, hi, True))
            hi = mid
        else:
            path.append((lo, mid, False))
            lo = mid
    path.reverse()
    return (None if lo == 0 else (lo, hi)), path


def _tree_proof_ranges(t: int, n: int) -> list[tuple[int, int]]:
    start, path = _tree_path(t, n)
    ranges = [] if start is None else [start]
    return ranges + [(lo, hi) for lo, hi, _ in path]


def tree_proof_indexes(t: int, n: int) -> list[int]:
    """The stored hashes :func:`tree_proof_from_hashes` needs to prove tree n within tree t."""
    _check_sizes(t, n)
    return _sibling_ranges_indexes(_tree_proof_ranges(t, n))


def tree_proof_from_hashes(t: int, n: int, hashes: Sequence[bytes]) -> list[bytes]:
    """The consistency proof of tree n within tree t, from :func:`tree_proof_indexes`' hashes."""
    _check_sizes(t, n)
    return _sibling_ranges_hashes(_tree_proof_ranges(t, n), hashes)


def prove_tree(t: int, n: int, reader: HashReader) -> list[bytes]:
    """The RFC 9162 consistency proof that the tree of size n is a prefix of the tree of size t."""
    return tree_proof_from_hashes(t, n, reader.read_hashes(tree_proof_indexes(t, n)))


def check_tree(proof: Sequence[bytes], t: int, th: bytes, n: int, h: bytes) -> None:
    """Check that proof proves the tree of size n and root h a prefix of tree t with root th.

    Equal sizes need an empty proof and the very same root (compared as bytes, as the RFC 9162
    reference verifier does).
    """
    _check_sizes(t, n)
    if n == t:
        if proof:
            raise VerificationError(f"consistency proof between equal sizes {n} must be empty")
        if th != h:
            raise VerificationError(f"two different roots for the same tree size {n}")
        return
    _check_hash(th, "tree hash")
    _check_hash(h, "tree hash")
    _check_proof(proof)
    start, path = _tree_path(t, n)
    expected = len(path) + (start is not None)
    if len(proof) != expected:
        raise VerificationError(
            f"consistency proof from {n} to {t} has {len(proof)} hashes, expected {expected}"
        )
    old = new = h if start is None else proof[0]
    for sibling, (_, _, old_edge_on_left) in zip(proof[expected - len(path) :], path, strict=True):
        if old_edge_on_left:
            new = node_hash(new, sibling)
        else:
            old = node_hash(sibling, old)
            new = node_hash(sibling, new)
    if old != h or new != th:
        raise VerificationError(f"consistency proof from {n} to {t} does not verify")


# ----- argument checks -------------------------------------------------------------------------


def _check_size(n: int) -> None:
    if not 0 <= n <= MAX_TREE_SIZE:
        raise UsageError(f"tree size {n} is not an unsigned 64-bit integer")


def _check_index(t: int, n: int) -> None:
    _check_size(t)
    if not 0 <= n < t:
        raise UsageError(f"record {n} is not in a tree of size {t}")


def _check_sizes(t: int, n: int) -> None:
    _check_size(t)
    if n < 1:
        raise UsageError(f"no consistency proof from a tree of size {n}")
    if n > t:
        raise UsageError(f"tree size {n} is larger than tree size {t}")


def _check_hash(h: bytes, what: str) -> None:
    if len(h) != HASH_SIZE:
        raise FormatError(what, f"{len(h)} bytes, expected {HASH_SIZE}")


def _check_proof(proof: Sequence[bytes]) -> None:
    if len(proof) > MAX_PROOF_HASHES:
        raise FormatError("proof", f"{len(proof)} hashes, at most {MAX_PROOF_HASHES} allowed")
    for h in proof:
        _check_hash(h, "proof hash")


# ----- an in-memory store ----------------------------------------------------------------------


class MemoryHashStore:
    """A growing list of stored hashes: a :class:`HashReader` for tests and the simulator."""

    def __init__(self) -> None:
        self.hashes: list[bytes] = []
        self.size = 0

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        stored = len(self.hashes)
        for i in indexes:
            if not 0 <= i < stored:
                raise UsageError(f"stored hash {i} is not in the store ({stored} hashes)")
        return [self.hashes[i] for i in indexes]

    def append_record(self, data: bytes) -> int:
        """Append a record; returns its index."""
        return self.append_record_hash(record_hash(data))

    def append_record_hash(self, h: bytes) -> int:
        """Append a record by its leaf hash; returns its index."""
        n = self.size
        self.hashes.extend(stored_hashes_for_record_hash(n, h, self))
        self.size = n + 1
        return n

    def tree_hash(self, n: int | None = None) -> bytes:
        """The root of the first n records (default: all of them)."""
        return tree_hash(self.size if n is None else n, self)
