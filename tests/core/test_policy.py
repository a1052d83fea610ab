"""Trust policies (logserver.core.policy): parsing, quorum evaluation, checkpoint verification."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logserver.core.checkpoint import Checkpoint
from logserver.core.cosignature import CosignatureSigner
from logserver.core.errors import FormatError, PolicyError, UsageError, VerificationError
from logserver.core.note import NoteSigner, Signer, sign_note
from logserver.core.policy import NONE, Policy, PolicyGroup, PolicyLog, PolicyWitness

ORIGIN = "example.com/log"
LOG = Signer(ORIGIN, bytes([1]) * 32)
OTHER_LOG = Signer("example.com/other", bytes([2]) * 32)
WITNESSES = [
    CosignatureSigner(f"witness{i}.example", bytes([10 + i]) * 32, clock=lambda: 1_700_000_000)
    for i in range(8)
]
STRANGER = CosignatureSigner("stranger.example", bytes([99]) * 32, clock=lambda: 1_700_000_000)
BODY = Checkpoint(ORIGIN, 3, bytes(32)).to_bytes()


def w(i: int) -> str:
    return WITNESSES[i].vkey


def note(*signers: NoteSigner, body: bytes = BODY) -> bytes:
    return sign_note(body, *signers)


def two_of_three() -> Policy:
    return Policy.parse(
        f"log {LOG.vkey}\nwitness A {w(0)}\nwitness B {w(1)}\nwitness C {w(2)}\n"
        "group g 2 A B C\nquorum g\n".encode()
    )


# --- parsing -----------------------------------------------------------------------------------


def test_spec_example_shape_with_real_keys() -> None:
    text = f"""
# the example of c2sp.org/tlog-policy
log {LOG.vkey} https://log.example/

witness X1 {w(0)}
witness X2 {w(1)}
witness X3 {w(2)}
group X-witnesses 2 X1 X2 X3

witness Y1 {w(3)} https://y1.example/
witness Y2 {w(4)}
witness Y3 {w(5)}
group Y-witnesses any Y1 Y2 Y3

group X-and-Y all X-witnesses Y-witnesses
quorum X-and-Y
"""
    policy = Policy.parse(text.encode())
    assert policy.logs == (PolicyLog(LOG.verifier(), "https://log.example/"),)
    assert [x.name for x in policy.witnesses] == ["X1", "X2", "X3", "Y1", "Y2", "Y3"]
    assert policy.witnesses[3].url == "https://y1.example/"
    assert policy.groups == (
        PolicyGroup("X-witnesses", 2, ("X1", "X2", "X3")),
        PolicyGroup("Y-witnesses", 1, ("Y1", "Y2", "Y3")),
        PolicyGroup("X-and-Y", 2, ("X-witnesses", "Y-witnesses")),
    )
    assert policy.quorum_satisfied({"X1", "X3", "Y2"})
    assert not policy.quorum_satisfied({"X1", "Y1", "Y2", "Y3"})
    assert not policy.quorum_satisfied({"X1", "X2", "X3"})
    assert Policy.parse(policy.to_bytes()) == policy


def test_whitespace_tabs_comments_and_missing_final_newline() -> None:
    text = f"  \t# comment\n\t log\t{LOG.vkey}  \n\nwitness  A {w(0)}\t\n   quorum A"
    policy = Policy.parse(text.encode())
    assert policy.quorum == "A"
    assert policy.witnesses[0].name == "A"


def test_quorum_none_and_no_logs() -> None:
    assert Policy.parse(b"quorum none\n") == Policy((), (), (), NONE)


def test_names_are_opaque_octets() -> None:
    data = b"witness K " + w(0).encode() + b"\nwitness \xe2\x84\xaa " + w(1).encode()
    data += b"\nwitness \xff " + w(2).encode() + b"\ngroup g 3 K \xe2\x84\xaa \xff\nquorum g\n"
    policy = Policy.parse(data)
    assert len({x.name for x in policy.witnesses}) == 3
    assert policy.to_bytes() == data


@pytest.mark.parametrize(
    "text",
    [
        "",  # no quorum
        "# only a comment\n",
        "quorum none\nquorum none\n",
        "quorum A\n",  # undefined
        "bogus line\nquorum none\n",
        "Log {log}\nquorum none\n",  # keywords are case-sensitive
        "log\nquorum none\n",
        "log {log} url extra\nquorum none\n",
        "witness A\nquorum none\n",
        "witness A {w0} url extra\nquorum none\n",
        "quorum\n",
        "quorum A B\n",
        "quorum A\nwitness A {w0}\n",  # quorum before its definition
        "group g 1 A\nwitness A {w0}\nquorum g\n",  # member defined later
        "witness A {w0}\ngroup g 1\nquorum g\n",  # no members
        "witness A {w0}\ngroup g 0 A\nquorum g\n",
        "witness A {w0}\ngroup g 2 A\nquorum g\n",
        "witness A {w0}\ngroup g 01 A\nquorum g\n",
        "witness A {w0}\ngroup g +1 A\nquorum g\n",
        "witness A {w0}\ngroup g -1 A\nquorum g\n",
        "witness A {w0}\ngroup g 99999999999999999999 A\nquorum g\n",
        "witness A {w0}\ngroup g some A\nquorum g\n",
        "witness A {w0}\ngroup g ALL A\nquorum g\n",
        "witness A {w0}\ngroup g 1 none\nquorum g\n",
        "witness A {w0}\ngroup g 1 A A\nquorum g\n",  # member twice
        "witness A {w0}\ngroup g 1 A\ngroup h 1 A\nquorum g\n",  # member of two groups
        "witness A {w0}\ngroup g 1 A\ngroup g 1 g\nquorum g\n",  # redefined
        "witness none {w0}\nquorum none\n",
        "witness A {w0}\nwitness A {w1}\nquorum A\n",
        "witness A {w0}\ngroup A 1 A\nquorum A\n",
        "witness A {w0}\nwitness B {w0}\nquorum A\n",  # same key twice
        "log {log}\nlog {log}\nquorum none\n",
        "log {w0}\nquorum none\n",  # a cosignature key is not a log key
        "witness A {log}\nquorum A\n",  # a log key is not a witness key
        "witness A {log}x\nquorum A\n",
        "witness A {w0}\r\nquorum A\n",  # CR
        "witness A {w0}\nquorum A\x00\n",
        "witness A {w0}\nquorum A\x7f\n",
        "witness A {w0}\x0b\nquorum A\n",
    ],
)
def test_rejections(text: str) -> None:
    data = text.format(log=LOG.vkey, w0=w(0), w1=w(1)).encode()
    with pytest.raises(FormatError):
        Policy.parse(data)


def test_size_and_count_bounds() -> None:
    with pytest.raises(FormatError):
        Policy.parse(b"#" * (256 * 1024 + 1))
    lines = [
        f"witness w{i} {CosignatureSigner(f'n{i}', i.to_bytes(32, 'big')).vkey}" for i in range(257)
    ]
    with pytest.raises(FormatError):
        Policy.parse(("\n".join(lines) + "\nquorum none\n").encode())
    assert len(Policy.parse(("\n".join(lines[:256]) + "\nquorum none\n").encode()).witnesses) == 256


def test_programmatic_misuse_is_usage_error() -> None:
    witness = PolicyWitness("A", WITNESSES[0].verifier())
    with pytest.raises(UsageError):
        Policy((), (witness,), (), "B")
    with pytest.raises(UsageError):
        Policy((), (witness,), (PolicyGroup("g", 2, ("A",)),), "g")
    with pytest.raises(UsageError):
        Policy((), (PolicyWitness("has space", WITNESSES[0].verifier()),), (), NONE)
    with pytest.raises(UsageError):
        Policy((PolicyLog(LOG.verifier(), "bad url"),), (), (), NONE)
    with pytest.raises(UsageError):
        Policy((PolicyLog(WITNESSES[0].verifier()),), (), (), NONE)
    with pytest.raises(UsageError):
        Policy.for_network(LOG.vkey, [("A", w(0)), ("B", w(1))], 3)


def test_for_network_four_witnesses_quorum_three() -> None:
    witnesses = [(f"w{i}", w(i)) for i in range(4)]
    policy = Policy.for_network(LOG.vkey, witnesses, 3, log_url="http://127.0.0.1:8080")
    assert Policy.parse(policy.to_bytes()) == policy
    assert policy.to_bytes().decode().splitlines()[-2:] == [
        "group witnesses 3 w0 w1 w2 w3",
        "quorum witnesses",
    ]
    assert policy.verify_checkpoint(note(LOG, *WITNESSES[1:4])) == Checkpoint.parse(BODY)
    with pytest.raises(PolicyError):
        policy.verify_checkpoint(note(LOG, *WITNESSES[:2]))
    assert Policy.for_network(LOG.vkey, [], 0).quorum == NONE


# --- evaluation --------------------------------------------------------------------------------


@pytest.mark.parametrize(("present", "ok"), [(2, True), (1, False), (0, False), (3, True)])
def test_two_of_three(present: int, ok: bool) -> None:
    signed = note(LOG, *WITNESSES[:present])
    if ok:
        verified = two_of_three().verify(signed)
        assert verified.cosigners == frozenset("ABC"[:present])
        assert verified.log.verifier == LOG.verifier()
    else:
        with pytest.raises(PolicyError):
            two_of_three().verify_checkpoint(signed)


def test_missing_log_signature() -> None:
    with pytest.raises(PolicyError):
        two_of_three().verify_checkpoint(note(*WITNESSES[:3]))
    with pytest.raises(PolicyError):
        two_of_three().verify_checkpoint(note(OTHER_LOG, *WITNESSES[:3]))


def test_log_name_must_match_origin() -> None:
    body = Checkpoint("example.com/elsewhere", 3, bytes(32)).to_bytes()
    with pytest.raises(PolicyError):
        two_of_three().verify_checkpoint(note(LOG, *WITNESSES[:3], body=body))


def test_unknown_witness_is_ignored() -> None:
    assert two_of_three().verify(note(LOG, WITNESSES[0], STRANGER, WITNESSES[1])).cosigners == {
        "A",
        "B",
    }
    with pytest.raises(PolicyError):
        two_of_three().verify_checkpoint(note(LOG, WITNESSES[0], STRANGER))


def test_duplicate_cosignatures_by_one_key_count_once() -> None:
    signed = note(LOG, WITNESSES[0])
    line = signed[signed.rindex(b"\n", 0, -1) + 1 :]
    with pytest.raises(PolicyError):
        two_of_three().verify_checkpoint(signed + line + line)


def test_bad_cosignature_from_known_witness_rejects() -> None:
    signed = note(LOG, WITNESSES[0], WITNESSES[1])
    other = note(WITNESSES[2], body=Checkpoint(ORIGIN, 4, bytes(32)).to_bytes())
    forged = signed + other[other.rindex(b"\n\n") + 2 :]
    with pytest.raises(VerificationError) as info:
        two_of_three().verify_checkpoint(forged)
    assert not isinstance(info.value, PolicyError)


def test_signed_garbage_is_format_error() -> None:
    with pytest.raises(FormatError):
        two_of_three().verify_checkpoint(sign_note(b"not a checkpoint\n", LOG))
    with pytest.raises(FormatError):
        two_of_three().verify_checkpoint(b"garbage")


def test_quorum_none_needs_only_the_log() -> None:
    policy = Policy.parse(f"log {LOG.vkey}\nquorum none\n".encode())
    assert policy.verify_checkpoint(note(LOG)).size == 3
    with pytest.raises(PolicyError):
        policy.verify_checkpoint(note(OTHER_LOG))


def test_nested_groups() -> None:
    # (A and B) or 2 of (C, D, E), and always F: group top all (any(AB, CDE), F).
    text = "\n".join(
        [f"log {LOG.vkey}"]
        + [f"witness {n} {w(i)}" for i, n in enumerate("ABCDEF")]
        + [
            "group AB all A B",
            "group CDE 2 C D E",
            "group either any AB CDE",
            "group top all either F",
            "quorum top",
        ]
    )
    policy = Policy.parse(text.encode())
    for size in range(7):
        for names in itertools.combinations("ABCDEF", size):
            s = set(names)
            expected = "F" in s and ({"A", "B"} <= s or len(s & {"C", "D", "E"}) >= 2)
            assert policy.quorum_satisfied(s) == expected, names
    signers = [WITNESSES["ABCDEF".index(n)] for n in "CEF"]
    assert policy.verify(note(LOG, *signers)).cosigners == {"C", "E", "F"}


@given(
    st.integers(1, 8).flatmap(
        lambda n: st.tuples(st.integers(1, n), st.sets(st.integers(0, n - 1)), st.just(n))
    )
)
def test_k_of_n(case: tuple[int, set[int], int]) -> None:
    k, present, n = case
    policy = Policy.for_network(LOG.vkey, [(f"w{i}", w(i)) for i in range(n)], k)
    assert policy.quorum_satisfied({f"w{i}" for i in present}) == (len(present) >= k)


# --- round trips and fuzzing -------------------------------------------------------------------


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    n = draw(st.integers(0, 6))
    witnesses = tuple(PolicyWitness(f"w{i}", WITNESSES[i].verifier()) for i in range(n))
    free = [x.name for x in witnesses]
    groups = []
    for g in range(draw(st.integers(0, 3)) if free else 0):
        if not free:
            break
        members = draw(st.lists(st.sampled_from(free), min_size=1, unique=True))
        free = [x for x in free if x not in members] + [f"g{g}"]
        groups.append(PolicyGroup(f"g{g}", draw(st.integers(1, len(members))), tuple(members)))
    quorum = draw(st.sampled_from([NONE, *free]))
    url = draw(st.none() | st.just("https://log.example/"))
    return Policy((PolicyLog(LOG.verifier(), url),), witnesses, tuple(groups), quorum)


@given(policies())
def test_round_trip(policy: Policy) -> None:
    assert Policy.parse(policy.to_bytes()) == policy


@given(st.binary(max_size=400))
def test_fuzz_bytes(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        Policy.parse(data)


tokens = st.sampled_from(
    [
        "log",
        "witness",
        "group",
        "quorum",
        "none",
        "all",
        "any",
        "0",
        "1",
        "2",
        "A",
        "B",
        "g",
        "#",
        LOG.vkey,
        w(0),
        w(1),
        "\t",
        " ",
    ]
)


@given(st.lists(st.lists(tokens, max_size=6).map(" ".join), max_size=8))
def test_fuzz_token_soup(lines: list[str]) -> None:
    with contextlib.suppress(FormatError):
        policy = Policy.parse("\n".join(lines).encode())
        assert Policy.parse(policy.to_bytes()) == policy
