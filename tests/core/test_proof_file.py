"""Proof files (logserver.core.proof): format, strict parsing, verification against a policy."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logserver.core import tlog
from logserver.core.checkpoint import Checkpoint
from logserver.core.cosignature import CosignatureSigner
from logserver.core.errors import FormatError, PolicyError, UsageError, VerificationError
from logserver.core.note import NoteSigner, Signer, sign_note
from logserver.core.policy import Policy
from logserver.core.proof import (
    MAX_EXTRA_BYTES,
    MAX_PROOF_FILE_BYTES,
    MAX_PROOF_HASHES,
    TlogProof,
    verify_proof,
)
from tests.support.paths import VECTORS

ORIGIN = "example.com/fancylog"
LOG = Signer(ORIGIN, bytes([1]) * 32)
WITNESSES = [
    CosignatureSigner(f"witness{i}.example", bytes([10 + i]) * 32, clock=lambda: 1_700_000_000)
    for i in range(4)
]
POLICY = Policy.for_network(LOG.vkey, [(f"w{i}", s.vkey) for i, s in enumerate(WITNESSES)], 3)
ENTRIES = [b"entry %d" % i for i in range(13)]
STORE = tlog.MemoryHashStore()
for _entry in ENTRIES:
    STORE.append_record(_entry)

# The proof lines of the c2sp.org/tlog-proof example.
SPEC_HEAD = b"""c2sp.org/tlog-proof@v1
extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ
index 73894
gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=
B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=
EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=
RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=
AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=

"""


def signed_checkpoint(
    size: int, root: bytes | None = None, signers: tuple[NoteSigner, ...] | None = None
) -> bytes:
    root = STORE.tree_hash(size) if root is None else root
    signers = (LOG, *WITNESSES[:3]) if signers is None else signers
    return sign_note(Checkpoint(ORIGIN, size, root).to_bytes(), *signers)


def proof_file(index: int, size: int, **kwargs: Any) -> bytes:
    hashes = tuple(tlog.prove_record(size, index, STORE))
    return TlogProof(index, hashes, signed_checkpoint(size, **kwargs)).to_bytes()


# --- format ------------------------------------------------------------------------------------


def test_spec_example_layout() -> None:
    note = signed_checkpoint(109482, root=bytes(32))
    proof = TlogProof.parse(SPEC_HEAD + note)
    assert proof.index == 73894
    assert len(proof.hashes) == 5
    assert proof.hashes[0] == base64.b64decode("gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=")
    assert proof.extra == base64.b64decode("YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ")
    assert proof.checkpoint == note
    assert proof.to_bytes() == SPEC_HEAD + note


def test_no_extra_and_no_hashes() -> None:
    note = signed_checkpoint(1)
    data = b"c2sp.org/tlog-proof@v1\nindex 0\n\n" + note
    proof = TlogProof.parse(data)
    assert (proof.index, proof.hashes, proof.extra) == (0, (), None)
    assert proof.to_bytes() == data
    assert verify_proof(data, ENTRIES[0], POLICY).index == 0


HASH = base64.b64encode(bytes(32))


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"c2sp.org/tlog-proof@v2\nindex 0\n\n",
        b"c2sp.org/tlog-proof@v1 \nindex 0\n\n",
        b"c2sp.org/tlog-proof@v1\n\n",  # no index
        b"c2sp.org/tlog-proof@v1\nindex\n\n",
        b"c2sp.org/tlog-proof@v1\nindex \n\n",
        b"c2sp.org/tlog-proof@v1\nindex 01\n\n",
        b"c2sp.org/tlog-proof@v1\nindex -1\n\n",
        b"c2sp.org/tlog-proof@v1\nindex +1\n\n",
        b"c2sp.org/tlog-proof@v1\nindex  1\n\n",
        b"c2sp.org/tlog-proof@v1\nindex 9223372036854775808\n\n",
        b"c2sp.org/tlog-proof@v1\nIndex 0\n\n",
        b"c2sp.org/tlog-proof@v1\nindex 0\nextra AA==\n\n",  # extra after index
        b"c2sp.org/tlog-proof@v1\nextra A\nindex 0\n\n",  # bad base64
        b"c2sp.org/tlog-proof@v1\nextra AB==\nindex 0\n\n",  # non-canonical base64
        b"c2sp.org/tlog-proof@v1\nindex 0\n" + base64.b64encode(bytes(31)) + b"\n\n",
        b"c2sp.org/tlog-proof@v1\nindex 0\n" + base64.b64encode(bytes(33)) + b"\n\n",
        b"c2sp.org/tlog-proof@v1\nindex 0\n" + HASH[:-1] + b"\n\n",
        b"c2sp.org/tlog-proof@v1\nindex 0\n" + HASH + b" \n\n",
        b"c2sp.org/tlog-proof@v1\nindex 0\n" + (HASH + b"\n") * (MAX_PROOF_HASHES + 1) + b"\n",
        b"c2sp.org/tlog-proof@v1\nindex 0\n\xc3\xa9\n\n",
        b"c2sp.org/tlog-proof@v1\r\nindex 0\n\n",
    ],
)
def test_header_rejections(head: bytes) -> None:
    with pytest.raises(FormatError):
        TlogProof.parse(head + signed_checkpoint(1))


@pytest.mark.parametrize(
    "note",
    [
        b"",
        b"example.com/fancylog\n1\n" + HASH + b"\n",  # unsigned
        sign_note(b"not a checkpoint\n", LOG),
        sign_note(b"o\n01\n" + HASH + b"\n", LOG),
        signed_checkpoint(1) + b"trailing junk\n",
    ],
)
def test_checkpoint_rejections(note: bytes) -> None:
    with pytest.raises(FormatError):
        TlogProof.parse(b"c2sp.org/tlog-proof@v1\nindex 0\n\n" + note)


def test_size_bounds() -> None:
    assert len(TlogProof(0, (bytes(32),) * 64, b"").hashes) == 64
    with pytest.raises(UsageError):
        TlogProof(0, (bytes(32),) * 65, b"")
    with pytest.raises(UsageError):
        TlogProof(0, (bytes(31),), b"")
    with pytest.raises(UsageError):
        TlogProof(-1, (), b"")
    with pytest.raises(UsageError):
        TlogProof(0, (), b"", extra=bytes(MAX_EXTRA_BYTES + 1))
    with pytest.raises(FormatError):
        too_long = b"A" * (MAX_EXTRA_BYTES * 4 // 3 + 8)
        TlogProof.parse(b"c2sp.org/tlog-proof@v1\nextra " + too_long + b"\nindex 0\n\n")
    with pytest.raises(FormatError):
        TlogProof.parse(b"x" * (MAX_PROOF_FILE_BYTES + 1))


# --- verification ------------------------------------------------------------------------------


def test_every_index_of_every_size_verifies() -> None:
    for size in range(1, len(ENTRIES) + 1):
        note = signed_checkpoint(size)
        for index in range(size):
            data = TlogProof(index, tuple(tlog.prove_record(size, index, STORE)), note).to_bytes()
            verified = verify_proof(data, ENTRIES[index], POLICY, origin=ORIGIN)
            assert (verified.index, verified.checkpoint.size) == (index, size)
            assert verified.cosigners == {"w0", "w1", "w2"}
            wrong = ENTRIES[(index + 1) % size] if size > 1 else b"other"
            with pytest.raises(VerificationError):
                verify_proof(data, wrong, POLICY)


def test_extra_is_returned_but_not_trusted() -> None:
    hashes = tuple(tlog.prove_record(5, 2, STORE))
    data = TlogProof(2, hashes, signed_checkpoint(5), extra=b"context").to_bytes()
    assert verify_proof(data, ENTRIES[2], POLICY).extra == b"context"


def test_index_beyond_checkpoint_size() -> None:
    hashes = tuple(tlog.prove_record(8, 7, STORE))
    data = TlogProof(7, hashes, signed_checkpoint(7)).to_bytes()
    with pytest.raises(VerificationError):
        verify_proof(data, ENTRIES[7], POLICY)
    with pytest.raises(VerificationError):
        verify_proof(TlogProof(0, (), signed_checkpoint(0)).to_bytes(), ENTRIES[0], POLICY)


def test_origin_mismatch() -> None:
    with pytest.raises(VerificationError):
        verify_proof(proof_file(1, 4), ENTRIES[1], POLICY, origin="example.com/other")


def test_quorum_and_log_signature_required() -> None:
    with pytest.raises(PolicyError):
        verify_proof(proof_file(1, 4, signers=(LOG, *WITNESSES[:2])), ENTRIES[1], POLICY)
    with pytest.raises(PolicyError):
        verify_proof(proof_file(1, 4, signers=tuple(WITNESSES)), ENTRIES[1], POLICY)


def test_tampered_proof_hashes() -> None:
    proof = TlogProof.parse(proof_file(3, 9))
    flipped = (bytes([proof.hashes[0][0] ^ 1]) + proof.hashes[0][1:], *proof.hashes[1:])
    for hashes in [flipped, proof.hashes[:-1], (*proof.hashes, bytes(32)), proof.hashes[::-1]]:
        data = TlogProof(3, hashes, proof.checkpoint).to_bytes()
        with pytest.raises(VerificationError):
            verify_proof(data, ENTRIES[3], POLICY)


def test_checkpoint_with_wrong_root() -> None:
    with pytest.raises(VerificationError):
        verify_proof(proof_file(3, 9, root=STORE.tree_hash(8)), ENTRIES[3], POLICY)


LEAVES = [
    bytes.fromhex(x)
    for x in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
              "606162636465666768696a6b6c6d6e6f"]
]  # fmt: skip
LEAF_BY_HASH = {tlog.record_hash(leaf): leaf for leaf in LEAVES}
INCLUSION_VECTORS = VECTORS / "inclusion"


def _vector_cases() -> list[dict[str, Any]]:
    cases = []
    for path in sorted(INCLUSION_VECTORS.rglob("*.json")):
        case = json.loads(path.read_text())
        leaf_hash = base64.b64decode(case["leafHash"] or "")
        if leaf_hash in LEAF_BY_HASH:  # vectors whose record we know (the entry is needed)
            case["entry"] = LEAF_BY_HASH[leaf_hash]
            cases.append(case)
    return cases


def test_inclusion_vectors_through_proof_files() -> None:
    cases = _vector_cases()
    assert len(cases) >= 70 and sum(not c["wantErr"] for c in cases) >= 5
    for case in cases:
        root = base64.b64decode(case["root"])
        proof = [base64.b64decode(h) for h in case["proof"] or []]
        try:
            data = TlogProof(
                case["leafIdx"], tuple(proof), signed_checkpoint(case["treeSize"], root=root)
            ).to_bytes()
            verify_proof(data, case["entry"], POLICY)
        except (UsageError, FormatError, VerificationError):
            assert case["wantErr"], case["desc"]
        else:
            assert not case["wantErr"], case["desc"]


# --- properties and fuzzing ---------------------------------------------------------------------

NOTE = signed_checkpoint(13)


@given(
    st.integers(0, 2**63 - 1),
    st.lists(st.binary(min_size=32, max_size=32), max_size=MAX_PROOF_HASHES).map(tuple),
    st.none() | st.binary(max_size=100),
)
def test_round_trip(index: int, hashes: tuple[bytes, ...], extra: bytes | None) -> None:
    proof = TlogProof(index, hashes, NOTE, extra)
    assert TlogProof.parse(proof.to_bytes()) == proof


@given(st.binary(max_size=400))
def test_fuzz_parse(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        TlogProof.parse(data)


VALID = proof_file(5, 13)


@settings(max_examples=200)
@given(st.integers(0, len(VALID) - 1), st.integers(1, 255))
def test_mutations_never_prove_something_else(position: int, flip: int) -> None:
    data = bytearray(VALID)
    data[position] ^= flip
    try:
        verified = verify_proof(bytes(data), ENTRIES[5], POLICY)
    except (FormatError, VerificationError):
        return
    # Only unauthenticated bytes may change (none here: every byte is checked).
    assert verified.index == 5 and verified.checkpoint == Checkpoint.parse(
        signed_checkpoint(13).split(b"\n\n")[0] + b"\n"
    )
