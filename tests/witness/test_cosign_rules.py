"""The pure co-signing rules (witness/cosign/rules.py): add-checkpoint status code by status
code, and the node's rule for its own log.

Real trees (MemoryHashStore, prove_tree), real log and witness keys, no I/O. The HTTP and
durability side is in test_cosign_http.py and test_cosign_store.py.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logserver.core.checkpoint import Checkpoint
from logserver.core.cosignature import CosignatureSigner, CosignatureVerifier
from logserver.core.errors import FormatError, UsageError, VerificationError
from logserver.core.note import Signer, Verifier, open_note, sign_note, split_note
from logserver.core.tlog import EMPTY_TREE_HASH, MemoryHashStore, prove_tree
from witness.cosign.rules import (
    MAX_PROOF_LINES,
    MAX_REQUEST_BYTES,
    Accepted,
    Rejected,
    Status,
    Submission,
    TreeHead,
    WitnessedLogs,
    cosignature_lines,
    decide,
    decide_own_checkpoint,
    parse_request,
    prepare,
    process,
)

ORIGIN = "example.test/witnessed-log"
NOW = 1_700_000_000


def _seed(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


LOG_KEY = Signer(ORIGIN, _seed("log"))
OTHER_LOG_KEY = Signer(ORIGIN, _seed("impostor"))
WITNESS_KEY = CosignatureSigner("witness.test/w1", _seed("witness"))
SECOND_WITNESS_KEY = CosignatureSigner("witness.test/w2", _seed("witness 2"))
LOGS = WitnessedLogs.from_pairs([(ORIGIN, LOG_KEY.vkey)])


def build_tree(size: int, label: bytes = b"") -> MemoryHashStore:
    store = MemoryHashStore()
    for i in range(size):
        store.append_record(label + b"entry %d" % i)
    return store


TREE = build_tree(40)
# A fork that shares the first 12 entries with TREE and then diverges.
FORK = build_tree(12)
for _i in range(12, 40):
    FORK.append_record(b"forked entry %d" % _i)
FORK_POINT = 12


def signed_checkpoint(
    size: int,
    root: bytes | None = None,
    *,
    key: Signer = LOG_KEY,
    origin: str = ORIGIN,
    tree: MemoryHashStore = TREE,
    extensions: tuple[str, ...] = (),
) -> bytes:
    root = tree.tree_hash(size) if root is None else root
    return sign_note(Checkpoint(origin, size, root, extensions).to_bytes(), key)


def request(old: int, proof: Sequence[bytes], note: bytes) -> bytes:
    lines = [b"old %d\n" % old] + [base64.b64encode(h) + b"\n" for h in proof]
    return b"".join(lines) + b"\n" + note


def extension(old: int, new: int, tree: MemoryHashStore = TREE) -> bytes:
    proof = prove_tree(new, old, tree) if 0 < old < new else []
    return request(old, proof, signed_checkpoint(new, tree=tree))


def head(size: int, tree: MemoryHashStore = TREE) -> TreeHead:
    return TreeHead(size, tree.tree_hash(size))


def run(body: bytes, stored: TreeHead | None = None) -> tuple[Accepted | Rejected, bytes]:
    state = {} if stored is None else {ORIGIN: stored}
    return process(body, LOGS, state, [WITNESS_KEY], NOW)


def rejected(body: bytes, stored: TreeHead | None = None) -> Rejected:
    decision, out = run(body, stored)
    assert isinstance(decision, Rejected), decision
    assert out == b""
    return decision


def accepted(body: bytes, stored: TreeHead | None = None) -> tuple[Accepted, bytes]:
    decision, out = run(body, stored)
    assert isinstance(decision, Accepted), decision
    return decision, out


# ----- 200 -------------------------------------------------------------------------------------


def test_first_checkpoint_from_zero_is_cosigned_and_verifies() -> None:
    note = signed_checkpoint(5)
    decision, body = accepted(request(0, [], note))
    assert decision.new_head == head(5)
    assert body.startswith("— witness.test/w1 ".encode()) and body.endswith(b"\n")
    assert body.count(b"\n") == 1
    # The client's way: append the lines to the checkpoint and open with the witness key.
    opened = open_note(note + body, [WITNESS_KEY.verifier()])
    assert [s.name for s in opened.sigs] == ["witness.test/w1"]
    text = split_note(note)[0]
    payload = base64.b64decode(body.split(b" ")[-1])
    ok, timestamp = WITNESS_KEY.verifier().verify_with_timestamp(text, payload[4:])
    assert ok and timestamp == NOW
    # Opening with both the log and the witness key verifies both signatures.
    both = open_note(note + body, [Verifier(ORIGIN, LOG_KEY.public_key), WITNESS_KEY.verifier()])
    assert len(both.sigs) == 2


def test_every_consistent_extension_is_cosigned() -> None:
    for old in range(1, 21):
        for new in range(old, 21):
            decision, body = accepted(extension(old, new), head(old))
            assert decision.new_head == head(new)
            open_note(signed_checkpoint(new) + body, [WITNESS_KEY.verifier()])


def test_every_tampered_proof_hash_is_422() -> None:
    for old, new in [(1, 2), (3, 7), (4, 8), (5, 17), (16, 33), (13, 40)]:
        proof = prove_tree(new, old, TREE)
        assert proof
        for i in range(len(proof)):
            bad = list(proof)
            bad[i] = hashlib.sha256(bad[i]).digest()
            refusal = rejected(request(old, bad, signed_checkpoint(new)), head(old))
            assert refusal.status == Status.UNPROCESSABLE
        # Too short, too long, and the right proof for another old size.
        for bad in (proof[:-1], [*proof, proof[0]], prove_tree(new, old + 1, TREE)):
            refusal = rejected(request(old, bad, signed_checkpoint(new)), head(old))
            assert refusal.status == Status.UNPROCESSABLE


def test_resubmitting_the_same_checkpoint_is_cosigned_again() -> None:
    decision, _ = accepted(request(9, [], signed_checkpoint(9)), head(9))
    assert decision.new_head == head(9)


def test_size_zero_checkpoints() -> None:
    decision, _ = accepted(request(0, [], signed_checkpoint(0, EMPTY_TREE_HASH)))
    assert decision.new_head == TreeHead(0, EMPTY_TREE_HASH)
    # Stored empty tree: any tree extends it, from old 0 with an empty proof.
    decision, _ = accepted(extension(0, 7), TreeHead(0, EMPTY_TREE_HASH))
    assert decision.new_head == head(7)


def test_extension_lines_are_cosigned_with_the_checkpoint() -> None:
    note = signed_checkpoint(6, extensions=("extra line",))
    _, body = accepted(request(0, [], note))
    open_note(note + body, [WITNESS_KEY.verifier()])


def test_several_witness_keys_each_cosign() -> None:
    note = signed_checkpoint(3)
    decision, body = process(request(0, [], note), LOGS, {}, [WITNESS_KEY, SECOND_WITNESS_KEY], NOW)
    assert isinstance(decision, Accepted)
    assert body.count(b"\n") == 2
    opened = open_note(note + body, [WITNESS_KEY.verifier(), SECOND_WITNESS_KEY.verifier()])
    assert len(opened.sigs) == 2


def test_cosignature_lines_need_a_key() -> None:
    with pytest.raises(UsageError):
        cosignature_lines(Checkpoint(ORIGIN, 1, bytes(32)).to_bytes(), [], NOW)


# ----- 409 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("stored", "old"), [(None, 3), (5, 0), (5, 4), (5, 6), (30, 20), (0, 1)])
def test_stale_old_size_is_409_with_the_stored_size(stored: int | None, old: int) -> None:
    stored_head = None if stored is None else head(stored)
    refusal = rejected(extension(old, 35), stored_head)
    assert refusal.status == Status.CONFLICT
    known = 0 if stored is None else stored
    assert refusal.known_size == known
    assert refusal.size_body() == f"{known}\n".encode()


def test_same_size_other_root_is_409_and_never_cosigned() -> None:
    forked = signed_checkpoint(20, tree=FORK)
    refusal = rejected(request(20, [], forked), head(20))
    assert refusal.status == Status.CONFLICT
    assert refusal.known_size is None  # a fork, not a stale size: problem+json body
    with pytest.raises(UsageError):
        refusal.size_body()
    # Stored empty tree with one root, the same size 0 with another: also a fork.
    other_empty = signed_checkpoint(0, bytes(32))
    assert rejected(request(0, [], other_empty), TreeHead(0, EMPTY_TREE_HASH)).status == 409


def test_smaller_checkpoint_is_never_cosigned() -> None:
    smaller = signed_checkpoint(10)
    # Claiming the stored size as old: old > size is malformed (400).
    assert rejected(request(20, [], smaller), head(20)).status == Status.BAD_REQUEST
    # Claiming its own size as old: not the stored size (409 with the stored size).
    refusal = rejected(request(10, [], smaller), head(20))
    assert (refusal.status, refusal.known_size) == (Status.CONFLICT, 20)
    # Claiming old 0 with no proof: 409 too.
    assert rejected(request(0, [], smaller), head(20)).known_size == 20


def test_forked_extension_is_422() -> None:
    # The fork extends the shared prefix, but not the witness's head beyond the fork point.
    stored = head(20)
    for new in (21, 30, 40):
        bogus = request(20, prove_tree(new, 20, FORK), signed_checkpoint(new, tree=FORK))
        assert rejected(bogus, stored).status == Status.UNPROCESSABLE
    # Below the fork point both trees agree, so the fork's extension is consistent.
    decision, _ = accepted(
        request(10, prove_tree(30, 10, FORK), signed_checkpoint(30, tree=FORK)), head(10)
    )
    assert decision.new_head == head(30, FORK)


# ----- 422 for proofs that cannot be right -------------------------------------------------------


def test_proof_from_zero_must_be_empty() -> None:
    body = request(0, [TREE.tree_hash(1)], signed_checkpoint(4))
    assert rejected(body).status == Status.UNPROCESSABLE


def test_proof_between_equal_sizes_must_be_empty() -> None:
    body = request(8, [TREE.tree_hash(8)], signed_checkpoint(8))
    assert rejected(body, head(8)).status == Status.UNPROCESSABLE


# ----- 404 and 403 -----------------------------------------------------------------------------


def test_unknown_origin_is_404() -> None:
    stranger = Signer("elsewhere.test/log", _seed("stranger"))
    note = signed_checkpoint(3, key=stranger, origin="elsewhere.test/log")
    assert rejected(request(0, [], note)).status == Status.NOT_FOUND


def test_checkpoint_not_signed_by_the_log_is_403() -> None:
    # Signed by an unknown key with the log's name (another key ID).
    assert rejected(request(0, [], signed_checkpoint(3, key=OTHER_LOG_KEY))).status == 403
    # Signed by a witness key only.
    text = Checkpoint(ORIGIN, 3, TREE.tree_hash(3)).to_bytes()
    cosigned_only = sign_note(text, WITNESS_KEY)
    assert rejected(request(0, [], cosigned_only)).status == Status.FORBIDDEN


def test_bad_signature_by_the_log_key_is_403() -> None:
    note = signed_checkpoint(3)
    _, sigs = split_note(note)
    forged_text = Checkpoint(ORIGIN, 3, TREE.tree_hash(4)).to_bytes()
    forged = forged_text + b"\n" + sigs[0].to_line()
    assert rejected(request(0, [], forged)).status == Status.FORBIDDEN
    # A bad log signature next to a good one is still refused, as Go's note.Open does.
    good_and_bad = note + sigs[0].to_line().replace(sigs[0].to_line()[-10:-1], b"AAAAAAAAA")
    assert rejected(request(0, [], good_and_bad)).status == Status.FORBIDDEN


def test_log_signature_plus_unknown_signatures_is_accepted() -> None:
    note = sign_note(
        Checkpoint(ORIGIN, 3, TREE.tree_hash(3)).to_bytes(), OTHER_LOG_KEY, LOG_KEY, WITNESS_KEY
    )
    accepted(request(0, [], note))


def test_any_configured_key_of_a_log_is_accepted() -> None:
    logs = WitnessedLogs.from_pairs([(ORIGIN, LOG_KEY.vkey), (ORIGIN, OTHER_LOG_KEY.vkey)])
    for key in (LOG_KEY, OTHER_LOG_KEY):
        decision, _ = process(
            request(0, [], signed_checkpoint(2, key=key)), logs, {}, [WITNESS_KEY], NOW
        )
        assert isinstance(decision, Accepted)


def test_origin_is_checked_before_the_signature() -> None:
    stranger = signed_checkpoint(3, key=OTHER_LOG_KEY, origin="elsewhere.test/log")
    assert rejected(request(0, [], stranger)).status == Status.NOT_FOUND


# ----- 400 -------------------------------------------------------------------------------------

GOOD_NOTE = signed_checkpoint(4)
GOOD_PROOF_LINE = base64.b64encode(TREE.tree_hash(2)) + b"\n"

MALFORMED = {
    "empty": b"",
    "no blank line": b"old 0\n" + GOOD_NOTE.replace(b"\n\n", b"\n"),
    "no old line": b"\n" + GOOD_NOTE,
    "old without size": b"old\n\n" + GOOD_NOTE,
    "old with two spaces": b"old  0\n\n" + GOOD_NOTE,
    "old with leading zero": b"old 01\n\n" + GOOD_NOTE,
    "old zero written 00": b"old 00\n\n" + GOOD_NOTE,
    "old negative": b"old -1\n\n" + GOOD_NOTE,
    "old plus sign": b"old +1\n\n" + GOOD_NOTE,
    "old hex": b"old 0x1\n\n" + GOOD_NOTE,
    "old 2^63": b"old 9223372036854775808\n\n" + GOOD_NOTE,
    "old huge": b"old " + b"9" * 400 + b"\n\n" + GOOD_NOTE,
    "uppercase OLD": b"OLD 0\n\n" + GOOD_NOTE,
    "CRLF": b"old 0\r\n\r\n" + GOOD_NOTE,
    "trailing space": b"old 0 \n\n" + GOOD_NOTE,
    "non-ASCII digits": "old ٣\n\n".encode() + GOOD_NOTE,
    "proof line short": b"old 0\n" + base64.b64encode(bytes(31)) + b"\n\n" + GOOD_NOTE,
    "proof line long": b"old 0\n" + base64.b64encode(bytes(33)) + b"\n\n" + GOOD_NOTE,
    "proof line unpadded": b"old 0\n" + GOOD_PROOF_LINE[:-2] + b"\n\n" + GOOD_NOTE,
    "proof line url-safe": b"old 0\n" + b"_" * 43 + b"=\n\n" + GOOD_NOTE,
    "64 proof lines": b"old 0\n" + GOOD_PROOF_LINE * 64 + b"\n" + GOOD_NOTE,
    "checkpoint without signatures": b"old 0\n\n" + split_note(GOOD_NOTE)[0],
    "checkpoint missing root": b"old 0\n\n" + sign_note(f"{ORIGIN}\n4\n".encode(), LOG_KEY),
    "checkpoint size leading zero": b"old 0\n\n"
    + sign_note(
        f"{ORIGIN}\n04\n{base64.b64encode(TREE.tree_hash(4)).decode()}\n".encode(), LOG_KEY
    ),
    "note not UTF-8": b"old 0\n\n" + GOOD_NOTE.replace(b"\xe2\x80\x94", b"\xff\xfe\xfd"),
    "signature line garbage": b"old 0\n\n" + GOOD_NOTE + b"garbage\n",
    "note without final newline": b"old 0\n\n" + GOOD_NOTE[:-1],
    "too large": b"old 0\n\n" + GOOD_NOTE + b"x" * MAX_REQUEST_BYTES,
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_bodies_are_400(name: str) -> None:
    refusal = rejected(MALFORMED[name], head(2) if "proof" in name else None)
    assert refusal.status == Status.BAD_REQUEST, refusal
    assert refusal.detail


def test_old_larger_than_checkpoint_is_400() -> None:
    assert rejected(request(5, [], signed_checkpoint(4)), head(5)).status == 400


def test_63_proof_lines_parse() -> None:
    body = b"old 0\n" + GOOD_PROOF_LINE * MAX_PROOF_LINES + b"\n" + GOOD_NOTE
    parsed = parse_request(body)
    assert len(parsed.proof) == MAX_PROOF_LINES
    assert parsed.checkpoint.size == 4 and parsed.note == GOOD_NOTE


def test_parse_request_fields() -> None:
    body = extension(3, 9)
    parsed = parse_request(body)
    assert parsed.old_size == 3
    assert list(parsed.proof) == prove_tree(9, 3, TREE)
    assert parsed.checkpoint == Checkpoint(ORIGIN, 9, TREE.tree_hash(9))
    with pytest.raises(FormatError):
        parse_request(body.replace(b"old 3", b"old 03"))


SPEC_EXAMPLE = (
    "old 20852014\n"
    "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n"
    "jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n"
    "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n"
    "/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n"
    "\n"
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5"
    "/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "— example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks"
    "+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=\n"
).encode()  # the example request body of c2sp.org/tlog-witness


def test_the_example_request_of_the_spec_parses() -> None:
    parsed = parse_request(SPEC_EXAMPLE)
    assert parsed.old_size == 20852014 and len(parsed.proof) == 4
    assert parsed.checkpoint.origin == "example.com/behind-the-sofa"
    assert parsed.checkpoint.size == 20852163
    # Its log key is not ours: the origin is unknown here (404), and with some other key
    # configured for that origin, none of the signatures verifies (403).
    assert rejected(SPEC_EXAMPLE).status == Status.NOT_FOUND
    other = Signer("example.com/behind-the-sofa", _seed("not the sofa key"))
    logs = WitnessedLogs.from_pairs([("example.com/behind-the-sofa", other.vkey)])
    prepared = prepare(SPEC_EXAMPLE, logs)
    assert isinstance(prepared, Rejected) and prepared.status == Status.FORBIDDEN


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes_are_refused_without_raising(body: bytes) -> None:
    prepared = prepare(body, LOGS)
    assert isinstance(prepared, Rejected)
    assert prepared.status in (Status.BAD_REQUEST, Status.NOT_FOUND, Status.FORBIDDEN)


VALID_BODY = extension(5, 13)


@st.composite
def mutated_bodies(draw: st.DrawFn) -> bytes:
    body = bytearray(VALID_BODY)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "replace"]))
        at = draw(st.integers(0, len(body) - 1))
        if kind == "flip":
            body[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=3))
        elif kind == "delete":
            del body[at : at + draw(st.integers(1, 3))]
        else:
            body[at] = draw(st.sampled_from(b"\n 0+/=\xe2-"))
        if not body:
            break
    return bytes(body)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_bodies())
def test_mutated_requests_never_cosign_a_wrong_head(body: bytes) -> None:
    decision, out = run(body, head(5))
    if isinstance(decision, Rejected):
        assert out == b""
        assert decision.status in set(Status) - {Status.OK}
        return
    # Whatever survived the mutation is the log's real checkpoint at some size, properly linked.
    new = decision.new_head
    assert new == head(new.size)
    assert new.size >= 5
    open_note(decision.submission.checkpoint_text + b"\n" + out, [WITNESS_KEY.verifier()])


# ----- never two conflicting cosignatures, over any sequence of requests ----------------------


@dataclass
class Witness:
    state: dict[str, TreeHead] = field(default_factory=dict)
    cosigned: list[tuple[TreeHead, MemoryHashStore]] = field(default_factory=list)


def _attempt(witness: Witness, tree: MemoryHashStore, old: int, new: int, proof_from: int) -> None:
    """Submit tree's checkpoint at ``new`` claiming ``old``, with a proof from ``proof_from``."""
    proof = prove_tree(new, proof_from, tree) if 0 < proof_from < new else []
    body = request(old, proof, signed_checkpoint(new, tree=tree))
    decision, out = process(body, LOGS, witness.state, [WITNESS_KEY], NOW)
    if isinstance(decision, Accepted):
        assert out
        witness.state[ORIGIN] = decision.new_head
        witness.cosigned.append((decision.new_head, tree))


def _consistent(a: tuple[TreeHead, MemoryHashStore], b: tuple[TreeHead, MemoryHashStore]) -> bool:
    small, large = sorted((a, b), key=lambda pair: pair[0].size)
    return small[0].root_hash == large[1].tree_hash(small[0].size)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.integers(0, 40),
            st.integers(0, 40),
            st.integers(0, 40),
            st.booleans(),
        ),
        max_size=25,
    )
)
def test_a_lying_log_never_gets_two_conflicting_cosignatures(
    steps: list[tuple[bool, int, int, int, bool]],
) -> None:
    witness = Witness()
    for use_fork, new, old_guess, proof_guess, honest_old in steps:
        tree = FORK if use_fork else TREE
        stored = witness.state.get(ORIGIN)
        known = 0 if stored is None else stored.size
        old = known if honest_old else old_guess
        _attempt(witness, tree, old, new, old if honest_old else proof_guess)
    sizes = [h.size for h, _ in witness.cosigned]
    assert sizes == sorted(sizes)
    for i, a in enumerate(witness.cosigned):
        for b in witness.cosigned[i + 1 :]:
            assert _consistent(a, b), (a[0], b[0])


def test_prepare_and_decide_split() -> None:
    prepared = prepare(extension(4, 9), LOGS)
    assert isinstance(prepared, Submission)
    assert prepared.origin == ORIGIN and prepared.old_size == 4
    assert isinstance(decide(prepared, head(4)), Accepted)
    stale = decide(prepared, head(9))
    assert isinstance(stale, Rejected) and stale.known_size == 9


# ----- configuration ---------------------------------------------------------------------------


def test_configuration_rejects_bad_input() -> None:
    with pytest.raises(FormatError):
        WitnessedLogs.from_pairs([(ORIGIN, "not a vkey")])
    with pytest.raises(FormatError):  # a cosignature (0x04) key cannot sign checkpoints
        WitnessedLogs.from_pairs([(ORIGIN, WITNESS_KEY.vkey)])
    with pytest.raises(UsageError):
        WitnessedLogs.from_pairs([("", LOG_KEY.vkey)])
    with pytest.raises(UsageError):
        WitnessedLogs.from_pairs([("bad\norigin", LOG_KEY.vkey)])
    with pytest.raises(UsageError):
        WitnessedLogs({ORIGIN: []})
    with pytest.raises(UsageError):  # e.g. the network's own log: cosigned by consensus only
        WitnessedLogs.from_pairs([(ORIGIN, LOG_KEY.vkey)], reserved=[ORIGIN])
    assert WitnessedLogs.from_pairs([(ORIGIN, LOG_KEY.vkey)], reserved=["own.test/log"]).origins
    logs = WitnessedLogs.from_pairs(
        [(ORIGIN, LOG_KEY.vkey), ("b.test/log", OTHER_LOG_KEY.vkey), (ORIGIN, LOG_KEY.vkey)]
    )
    assert set(logs.origins) == {ORIGIN, "b.test/log"} and len(logs) == 2
    known = logs.verifiers(ORIGIN)
    assert known is not None and len(known) == 1
    assert logs.verifiers("nowhere") is None


def test_tree_head_bounds() -> None:
    with pytest.raises(UsageError):
        TreeHead(-1, bytes(32))
    with pytest.raises(UsageError):
        TreeHead(1 << 63, bytes(32))
    with pytest.raises(UsageError):
        TreeHead(1, bytes(31))


def test_cosignature_verifier_type_is_used() -> None:
    assert isinstance(WITNESS_KEY.verifier(), CosignatureVerifier)


def test_own_log_rule_never_two_roots_never_backwards() -> None:
    tree = build_tree(9)

    def own(size: int, root: bytes | None = None) -> Checkpoint:
        return Checkpoint(ORIGIN, size, tree.tree_hash(size) if root is None else root)

    assert decide_own_checkpoint(ORIGIN, own(0), None) == TreeHead(0, EMPTY_TREE_HASH)
    assert decide_own_checkpoint(ORIGIN, own(5), None) == TreeHead(5, tree.tree_hash(5))
    stored = TreeHead(5, tree.tree_hash(5))
    assert decide_own_checkpoint(ORIGIN, own(5), stored) is None  # nothing new
    assert decide_own_checkpoint(ORIGIN, own(3), stored) is None  # never backwards
    assert decide_own_checkpoint(ORIGIN, own(9), stored) == TreeHead(9, tree.tree_hash(9))
    with pytest.raises(VerificationError, match="second root for size 5"):
        decide_own_checkpoint(ORIGIN, own(5, bytes(32)), stored)
    with pytest.raises(VerificationError, match="another log"):
        decide_own_checkpoint("own.test/log", own(9), None)
