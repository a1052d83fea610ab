"""Tests of the protocol entries (entries, entry_json, signed): formats, commitments,
signatures and the leaf envelope.

The helpers at the top (keys, recipes, ``make_leaf``) are shared with test_rules.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logserver.core import canonical_json
from logserver.core.errors import FormatError, UsageError, VerificationError
from logserver.core.note import Signer
from logserver.protocol.entries import (
    MAX_LEAF_BYTES,
    Close,
    Commit,
    DiffReport,
    Entry,
    Evidence,
    Failure,
    Group,
    Request,
    Reveal,
    Verdict,
    compute_commitment,
    failure_digest,
    job_id,
    new_nonce,
)
from logserver.protocol.entry_json import entry_from_json, entry_to_json
from logserver.protocol.signed import (
    ENTRY_DOMAIN,
    KeyRef,
    Leaf,
    SignedEntry,
    sign_entry,
    verify_entry,
)

NETWORK = "test.network"
LOG_KEY = Signer("log.example", b"L" * 32)
BUILDER_KEYS = [Signer(f"builder-{i}", bytes([i]) * 32) for i in range(1, 8)]


def recipe(name: str = "itoa", version: str = "1.0.11") -> dict[str, Any]:
    return {"ecosystem": "crates", "name": name, "version": version, "target": "x86_64"}


def digest(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def make_leaf(entry: Entry, signer: Signer, time_ms: int, network: str = NETWORK) -> Leaf:
    return Leaf(sign_entry(entry, signer, network), time_ms)


JOB = job_id(recipe())
D1, D2, D3 = digest("out-1"), digest("out-2"), digest("out-3")

SAMPLE_ENTRIES: list[Entry] = [
    Request(recipe()),
    Commit(JOB, "builder-1", digest("commitment")),
    Reveal(JOB, "builder-1", digest("nonce"), output_digest=D1, manifest_sha256=D2),
    Reveal(JOB, "builder-2", digest("nonce"), failure="rustc crashed: exit 101"),
    Close(JOB, "all-committed", ("builder-1", "builder-2")),
    Close(JOB, "deadline", ()),
    Verdict(
        JOB,
        "deadline",
        "reproduced",
        2,
        D1,
        ("builder-1", "builder-3"),
        (Group(D1, ("builder-1", "builder-3")), Group(D2, ("builder-4",))),
        (Failure("builder-2", 8),),
        ("builder-5",),
        (Evidence("builder-6", 3, 9),),
    ),
    Verdict(JOB, "all-revealed", "failed", 3, None, (), ()),
    Verdict(JOB, "all-revealed", "not-reproduced", 3, None, (), (Group(D2, ("b",)),)),
    DiffReport(JOB, digest("report"), tuple(sorted((D1, D2)))),
]


# ---------------------------------------------------------------------------- commitments


def test_commitment_byte_encoding() -> None:
    job, out, nonce = "00" * 32, "11" * 32, "22" * 32
    message = (
        b"synchronicity/commit/v1\n" + bytes(32) + b"\x09builder-1" + b"\x11" * 32 + b"\x22" * 32
    )
    expected = hashlib.sha256(message).hexdigest()
    assert compute_commitment(job, "builder-1", out, nonce) == expected
    # Pinned: the example in spec/protocol.md.
    assert expected == "7361c671fe89dffc780aa120d18959cedb23ff11b21f103c887b41e97992a725"


def test_commitment_binds_every_input() -> None:
    base = ("00" * 32, "b", "11" * 32, "22" * 32)
    reference = compute_commitment(*base)
    for position in range(4):
        changed = list(base)
        changed[position] = "b2" if position == 1 else "33" * 32
        assert compute_commitment(*changed) != reference


@pytest.mark.parametrize(
    "args",
    [
        ("00" * 31, "b", "11" * 32, "22" * 32),
        ("00" * 32, "", "11" * 32, "22" * 32),
        ("00" * 32, "a+b", "11" * 32, "22" * 32),
        ("00" * 32, "b", "AA" * 32, "22" * 32),
        ("00" * 32, "b", "11" * 32, "22" * 33),
        ("00" * 32, "x" * 256, "11" * 32, "22" * 32),
    ],
)
def test_commitment_rejects_bad_inputs(args: tuple[str, str, str, str]) -> None:
    with pytest.raises(FormatError):
        compute_commitment(*args)


def test_failure_digest_and_reveal_matching() -> None:
    assert (
        failure_digest("boom")
        == hashlib.sha256(b"synchronicity/build-failure/v1\nboom").hexdigest()
    )
    nonce = new_nonce()
    assert len(bytes.fromhex(nonce)) == 32 and nonce != new_nonce()
    failed = Reveal(JOB, "builder-1", nonce, failure="boom")
    commit = Commit(
        JOB, "builder-1", compute_commitment(JOB, "builder-1", failure_digest("boom"), nonce)
    )
    assert failed.matches(commit)
    assert not Reveal(JOB, "builder-1", nonce, failure="bang").matches(commit)
    built = Reveal(JOB, "builder-1", nonce, output_digest=D1, manifest_sha256=D2)
    assert built.matches(Commit(JOB, "builder-1", compute_commitment(JOB, "builder-1", D1, nonce)))
    assert not built.matches(commit)
    with pytest.raises(FormatError):
        failure_digest("")


# ---------------------------------------------------------------------------- entries


def test_request_job_is_recipe_hash() -> None:
    request = Request(recipe())
    assert request.job == hashlib.sha256(canonical_json.encode(recipe())).hexdigest()
    assert request.display_name == "itoa 1.0.11"
    assert Request({"x": 1}).display_name == ""
    with pytest.raises(FormatError, match="job"):
        Request(recipe(), job=D1)


@pytest.mark.parametrize("entry", SAMPLE_ENTRIES, ids=lambda e: type(e).__name__)
def test_entry_json_round_trip(entry: Entry) -> None:
    obj = entry_to_json(entry)
    assert entry_from_json(json.loads(canonical_json.encode(obj))) == entry


@pytest.mark.parametrize("entry", SAMPLE_ENTRIES, ids=lambda e: type(e).__name__)
def test_leaf_round_trip_and_signature(entry: Entry) -> None:
    signer = BUILDER_KEYS[0]
    leaf = make_leaf(entry, signer, 1234)
    data = leaf.to_bytes()
    parsed = Leaf.parse(data)
    assert parsed == leaf and parsed.to_bytes() == data
    verify_entry(parsed.entry, signer.verifier(), NETWORK)
    with pytest.raises(VerificationError, match="expected"):
        verify_entry(parsed.entry, BUILDER_KEYS[1].verifier(), NETWORK)
    forged = SignedEntry(entry, KeyRef(signer.name, signer.key_id), bytes(64))
    with pytest.raises(VerificationError, match="bad entry signature"):
        verify_entry(forged, signer.verifier(), NETWORK)


def test_signed_bytes_are_domain_separated_canonical_json() -> None:
    signer = BUILDER_KEYS[0]
    entry = Commit(JOB, signer.name, D1)
    signed = sign_entry(entry, signer, NETWORK)
    unsigned = {
        "builder": signer.name,
        "commitment": D1,
        "job": JOB,
        "signer": {"key_id": f"{signer.key_id:08x}", "name": signer.name},
        "type": "commit",
    }
    message = (
        b"synchronicity/entry/v2\n"
        + bytes([len(NETWORK)])
        + NETWORK.encode()
        + canonical_json.encode(unsigned)
    )
    assert ENTRY_DOMAIN == b"synchronicity/entry/v2\n"
    assert signed.signed_message(NETWORK) == message
    assert signer.verifier().verify(message, signed.signature)
    assert signed.to_json() == unsigned | {"signature": base64.b64encode(signed.signature).decode()}
    leaf = Leaf(signed, 7)
    assert leaf.to_bytes() == canonical_json.encode({"entry": signed.to_json(), "time": 7})


def test_signatures_name_their_network() -> None:
    signer = BUILDER_KEYS[0]
    signed = sign_entry(Commit(JOB, signer.name, D1), signer, "network-a")
    verify_entry(signed, signer.verifier(), "network-a")
    for other in ("network-b", "network-a ", "network", "x" * 255, "réseau-a"):
        with pytest.raises(VerificationError, match="bad entry signature"):
            verify_entry(signed, signer.verifier(), other)
    # The id is length-prefixed: moving bytes between the id and the JSON cannot collide.
    assert signed.signed_message("ab") != signed.signed_message("a")
    for bad in ("", "x" * 256, "é" * 128):
        with pytest.raises(UsageError, match="network id"):
            sign_entry(signed.entry, signer, bad)


def test_changing_the_signer_invalidates_the_signature() -> None:
    signer = BUILDER_KEYS[0]
    signed = sign_entry(Commit(JOB, signer.name, D1), signer, NETWORK)
    relabelled = SignedEntry(signed.entry, KeyRef(signer.name, signer.key_id ^ 1), signed.signature)
    assert not signer.verifier().verify(relabelled.signed_message(NETWORK), signed.signature)


def _valid_leaf_json(entry: Entry | None = None) -> dict[str, Any]:
    leaf = make_leaf(entry or Commit(JOB, "builder-1", D1), BUILDER_KEYS[0], 5)
    return json.loads(leaf.to_bytes())  # type: ignore[no-any-return]


def _parse(obj: Any) -> Leaf:
    return Leaf.parse(canonical_json.encode(obj))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda o: o.update(extra=1), "unexpected members"),
        (lambda o: o.pop("time"), "missing members"),
        (lambda o: o.update(time=-1), "time"),
        (lambda o: o.update(time=True), "time"),
        (lambda o: o["entry"].update(type="vote"), "unknown type"),
        (lambda o: o["entry"].update(extra="x"), "unexpected members"),
        (lambda o: o["entry"].pop("commitment"), "missing members"),
        (lambda o: o["entry"].pop("signature"), "missing member"),
        (lambda o: o["entry"].pop("signer"), "missing member"),
        (lambda o: o["entry"].update(job=JOB.upper()), "hex"),
        (lambda o: o["entry"].update(job=JOB[:-2]), "hex"),
        (lambda o: o["entry"].update(builder="has space"), "builder"),
        (lambda o: o["entry"].update(builder="a+b"), "builder"),
        (lambda o: o["entry"].update(builder=7), "builder"),
        (lambda o: o["entry"].update(signature="!!"), "base64"),
        (lambda o: o["entry"].update(signature=base64.b64encode(bytes(63)).decode()), "64 bytes"),
        (lambda o: o["entry"].update(signature=o["entry"]["signature"].rstrip("=")), "base64"),
        (lambda o: o["entry"].update(signature=1), "string"),
        (lambda o: o["entry"]["signer"].update(key_id="ABCDEF01"), "key_id"),
        (lambda o: o["entry"]["signer"].update(key_id="abc"), "key_id"),
        (lambda o: o["entry"]["signer"].update(extra=""), "unexpected"),
        (lambda o: o["entry"]["signer"].update(name=""), "name"),
        (lambda o: o.update(entry=[]), "not an object"),
    ],
)
def test_leaf_parsing_is_strict(mutate: Any, message: str) -> None:
    obj = _valid_leaf_json()
    mutate(obj)
    with pytest.raises(FormatError, match=message):
        _parse(obj)


def test_leaf_must_be_canonical_and_bounded() -> None:
    data = make_leaf(Commit(JOB, "builder-1", D1), BUILDER_KEYS[0], 5).to_bytes()
    with pytest.raises(FormatError, match="canonical"):
        Leaf.parse(data + b" ")
    with pytest.raises(FormatError, match="canonical"):
        Leaf.parse(json.dumps(json.loads(data)).encode())
    big = Request({"padding": "x" * MAX_LEAF_BYTES})
    with pytest.raises(FormatError, match="65535"):
        make_leaf(big, BUILDER_KEYS[0], 0).to_bytes()
    obj = {"entry": sign_entry(big, BUILDER_KEYS[0], NETWORK).to_json(), "time": 0}
    with pytest.raises(FormatError, match="exceeds"):
        _parse(obj)


def _entry_json(entry: Entry) -> dict[str, Any]:
    return json.loads(canonical_json.encode(entry_to_json(entry)))  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("entry", "mutate", "message"),
    [
        (SAMPLE_ENTRIES[0], lambda o: o.update(recipe=[]), "recipe"),
        (SAMPLE_ENTRIES[0], lambda o: o.update(job=D1), "job"),
        (SAMPLE_ENTRIES[2], lambda o: o.update(result="maybe"), "unknown type"),
        (SAMPLE_ENTRIES[2], lambda o: o.update(reason="x"), "unexpected"),
        (SAMPLE_ENTRIES[2], lambda o: o.update(manifest_sha256=None), "manifest"),
        (SAMPLE_ENTRIES[3], lambda o: o.update(reason=""), "reason"),
        (SAMPLE_ENTRIES[3], lambda o: o.update(reason="x" * 1025), "reason"),
        (SAMPLE_ENTRIES[3], lambda o: o.update(output_digest=D1), "unexpected"),
        (SAMPLE_ENTRIES[4], lambda o: o.update(reason="bored"), "reason"),
        (SAMPLE_ENTRIES[4], lambda o: o.update(committed=["b", "a"]), "sorted"),
        (SAMPLE_ENTRIES[4], lambda o: o.update(committed=["a", "a"]), "sorted"),
        (SAMPLE_ENTRIES[4], lambda o: o.update(committed="a"), "list"),
        (SAMPLE_ENTRIES[6], lambda o: o.update(outcome="maybe"), "outcome"),
        (SAMPLE_ENTRIES[6], lambda o: o.update(threshold=0), "threshold"),
        (SAMPLE_ENTRIES[6], lambda o: o.update(threshold=3), "threshold"),
        (SAMPLE_ENTRIES[6], lambda o: o.update(output_digest=D2), "largest group"),
        (SAMPLE_ENTRIES[6], lambda o: o.update(agreeing=["builder-1"]), "largest group"),
        (SAMPLE_ENTRIES[6], lambda o: o.update(groups=o["groups"][::-1]), "sorted"),
        (SAMPLE_ENTRIES[6], lambda o: o.update(missing=["builder-1"]), "twice"),
        (SAMPLE_ENTRIES[6], lambda o: o["groups"][1].update(builders=[]), "no builders"),
        (SAMPLE_ENTRIES[6], lambda o: o["groups"][1].update(extra=1), "unexpected"),
        (SAMPLE_ENTRIES[6], lambda o: o["failures"][0].update(reveal_leaf="3"), "reveal_leaf"),
        (SAMPLE_ENTRIES[6], lambda o: o["failures"][0].update(reason="oom"), "unexpected"),
        (SAMPLE_ENTRIES[6], lambda o: o["evidence"][0].update(kind="rude"), "kind"),
        (SAMPLE_ENTRIES[6], lambda o: o["evidence"][0].update(commit_leaf=9), "precede"),
        (SAMPLE_ENTRIES[6], lambda o: o["evidence"][0].update(reveal_leaf=-1), "reveal_leaf"),
        (SAMPLE_ENTRIES[6], lambda o: o.update(evidence={}), "list"),
        (SAMPLE_ENTRIES[7], lambda o: o.update(output_digest=D1), "no output digest"),
        (
            SAMPLE_ENTRIES[7],
            lambda o: o.update(groups=[{"output_digest": D1, "builders": ["a"]}]),
            "groups",
        ),
        (SAMPLE_ENTRIES[8], lambda o: o.update(groups=[]), "groups"),
        (SAMPLE_ENTRIES[9], lambda o: o.update(groups=[D1]), "two"),
        (SAMPLE_ENTRIES[9], lambda o: o.update(groups=sorted([D1, D2], reverse=True)), "sorted"),
        (SAMPLE_ENTRIES[9], lambda o: o.update(groups=[D1, D1]), "distinct"),
        (SAMPLE_ENTRIES[9], lambda o: o.update(report_sha256="x"), "report_sha256"),
    ],
)
def test_entry_parsing_rejects(entry: Entry, mutate: Any, message: str) -> None:
    obj = _entry_json(entry)
    mutate(obj)
    with pytest.raises(FormatError, match=message):
        entry_from_json(obj)


# ---------------------------------------------------------------------------- properties

hex_digests = st.binary(min_size=32, max_size=32).map(bytes.hex)
names = st.from_regex(r"[a-z0-9.\-]{1,12}", fullmatch=True)
reasons = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40)
entries_strategy: st.SearchStrategy[Entry] = st.one_of(
    st.dictionaries(names, st.integers(0, 10) | names, max_size=4).map(Request),
    st.builds(Commit, hex_digests, names, hex_digests),
    st.builds(
        lambda j, b, n, o, m: Reveal(j, b, n, output_digest=o, manifest_sha256=m),
        hex_digests,
        names,
        hex_digests,
        hex_digests,
        hex_digests,
    ),
    st.builds(
        lambda j, b, n, r: Reveal(j, b, n, failure=r), hex_digests, names, hex_digests, reasons
    ),
    st.builds(
        Close,
        hex_digests,
        st.sampled_from(["all-committed", "deadline"]),
        st.sets(names, max_size=5).map(lambda s: tuple(sorted(s))),
    ),
    st.builds(
        DiffReport,
        hex_digests,
        hex_digests,
        st.sets(hex_digests, min_size=2, max_size=4).map(lambda s: tuple(sorted(s))),
    ),
)


@given(entries_strategy, st.integers(0, 2**53 - 1), st.sampled_from([*BUILDER_KEYS, LOG_KEY]))
def test_any_entry_round_trips_through_a_leaf(entry: Entry, time_ms: int, signer: Signer) -> None:
    leaf = make_leaf(entry, signer, time_ms)
    data = leaf.to_bytes()
    parsed = Leaf.parse(data)
    assert parsed == leaf and parsed.to_bytes() == data
    verify_entry(parsed.entry, signer.verifier(), NETWORK)


@given(st.data())
def test_corrupted_leaves_fail_cleanly(data: st.DataObject) -> None:
    # A one-byte change is either rejected (FormatError, VerificationError) or touches only
    # the time, which the log stamps outside the author's signature.
    good = make_leaf(SAMPLE_ENTRIES[6], LOG_KEY, 99)
    corrupted = bytearray(good.to_bytes())
    position = data.draw(st.integers(0, len(corrupted) - 1))
    corrupted[position] = data.draw(st.integers(0, 255))
    try:
        leaf = Leaf.parse(bytes(corrupted))
        verify_entry(leaf.entry, LOG_KEY.verifier(), NETWORK)
    except (FormatError, VerificationError):
        return
    assert leaf.entry == good.entry


def test_request_job_matches_the_builders_recipe_digest() -> None:
    # builder/recipe.py hashes recipes with its own RFC 8785 encoder: the job ids must agree.
    from builder.recipe import Recipe, Toolchain

    toolchain = Toolchain("1.79.0", "129f3b9964af4d4a709d1383930ade12dfe7c081", "ab" * 32)
    built = Recipe(
        name="itoa",
        version="1.0.11",
        crate_sha256="cd" * 32,
        cargo_lock='# lock\n\u00e9\t"x"\u2028\x7f\n',
        toolchain=toolchain,
        rootfs_sha256="ef" * 32,
    )
    request = Request(built.to_value())
    assert request.job == built.job_id
    assert canonical_json.encode(built.to_value()) == built.to_json()
    assert request.display_name == "itoa 1.0.11"


def test_spec_example_leaf() -> None:
    # The known-answer leaf of spec/protocol.md, section 5.
    key = Signer("builder-1", b"\x01" * 32)
    assert key.vkey == "builder-1+8832d9eb+AYqI4910CfGV/VLbLTy6XXLKZwm/HZQSG/N0iAG0D29c"
    job = "00" * 32
    commitment = compute_commitment(job, key.name, "11" * 32, "22" * 32)
    leaf = make_leaf(Commit(job, key.name, commitment), key, 1700000000000, "example-network")
    expected = (
        '{"entry":{"builder":"builder-1","commitment":"7361c671fe89dffc780aa120d18959cedb23ff11'
        'b21f103c887b41e97992a725","job":"00000000000000000000000000000000000000000000000000000'
        '00000000000","signature":"10oonnW616I15lJe/rRe3SLidKJEXuBlIzSfhW+4mpWl+9CFIZec885D4W9O'
        'qkmYecXVBzqbwcPyWDrXLYfpBg==","signer":{"key_id":"8832d9eb","name":"builder-1"},'
        '"type":"commit"},"time":1700000000000}'
    )
    assert leaf.to_bytes() == expected.encode()
    verify_entry(Leaf.parse(expected.encode()).entry, key.verifier(), "example-network")


def test_entries_hold_immutable_copies() -> None:
    mutable = recipe()
    request = Request(mutable)
    mutable["version"] = "9.9.9"
    assert request.job == JOB and request.recipe["version"] == "1.0.11"
    assert Request({"list": ("a", 1)}) == Request({"list": ["a", 1]})
    assert Close(JOB, "deadline", ["a", "b"]) == Close(JOB, "deadline", ("a", "b"))  # type: ignore[arg-type]
    assert DiffReport(JOB, D1, sorted([D1, D2])) == DiffReport(JOB, D1, tuple(sorted([D1, D2])))  # type: ignore[arg-type]
    listed = Verdict(JOB, "deadline", "failed", 1, None, [], [], [], ["x"], [])  # type: ignore[arg-type]
    assert listed == Verdict(JOB, "deadline", "failed", 1, None, (), (), (), ("x",), ())
    with pytest.raises(FormatError, match="group list"):
        Verdict(JOB, "deadline", "not-reproduced", 1, None, (), ({"output_digest": D1},))  # type: ignore[arg-type]
