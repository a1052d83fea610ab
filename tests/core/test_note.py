"""Signed notes and note keys (logserver.core.note): known answers, every rejection, fuzzing."""

from __future__ import annotations

import base64
import contextlib
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logserver.core.errors import FormatError, UsageError, VerificationError
from logserver.core.note import (
    MAX_NOTE_BYTES,
    MAX_SIGNATURES,
    InvalidSignatureError,
    NoteSignature,
    Signer,
    UnverifiedNoteError,
    Verifier,
    VerifierSet,
    add_signatures,
    b64decode_strict,
    compute_key_id,
    generate_key,
    is_valid_key_name,
    open_note,
    parse_decimal,
    parse_private_key,
    parse_vkey,
    sign_note,
    split_note,
)

# The example of c2sp.org/signed-note (also in tests/fixtures/vectors/README.md).
C2SP_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
C2SP_NOTE = (
    "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi"
    "2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
).encode()

# The example of Go's golang.org/x/mod/sumdb/note documentation.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    b"If you think cryptography is the answer to your problem,\n"
    b"then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT
    + (
        "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngo"
        "tpRZb6KE6RyyBwJnAM=\n"
    ).encode()
)

ALICE = Signer("example.com/alice", bytes(range(32)))
BOB = Signer("example.com/bob", bytes(range(1, 33)))


def sig_line(name: str, payload: bytes) -> bytes:
    return f"— {name} {base64.b64encode(payload).decode()}\n".encode()


# --- known answers -----------------------------------------------------------------------------


def test_c2sp_example_note_verifies() -> None:
    verifier = Verifier.from_vkey(C2SP_VKEY)
    assert verifier.key_id == 0x530D903A
    opened = open_note(C2SP_NOTE, [verifier])
    assert opened.text == b"This is an example message.\n"
    assert [(s.name, s.key_id) for s in opened.sigs] == [("example.com/foo", 0x530D903A)]
    assert opened.sigs[0].verifier is verifier
    assert opened.unverified_sigs == ()


def test_go_example_signs_byte_for_byte() -> None:
    signer = Signer.from_private_key(GO_SKEY)
    assert signer.vkey == GO_VKEY
    assert signer.private_key == GO_SKEY
    assert sign_note(GO_TEXT, signer) == GO_NOTE
    assert open_note(GO_NOTE, [Verifier.from_vkey(GO_VKEY)]).text == GO_TEXT


def test_tampered_text_fails_with_invalid_signature() -> None:
    tampered = GO_NOTE.replace(b"cryptography", b"cryptographY")
    with pytest.raises(InvalidSignatureError) as info:
        open_note(tampered, [Verifier.from_vkey(GO_VKEY)])
    assert info.value.name == "PeterNeumann"
    assert info.value.key_id == 0xC74F20A3


def test_key_id_is_truncated_sha256_of_name_newline_type_key() -> None:
    verifier = Verifier.from_vkey(C2SP_VKEY)
    digest = hashlib.sha256(b"example.com/foo\n\x01" + verifier.public_key).digest()
    assert compute_key_id("example.com/foo", 1, verifier.public_key) == int.from_bytes(
        digest[:4], "big"
    )


# --- keys --------------------------------------------------------------------------------------


def test_generate_key_round_trips() -> None:
    private, vkey = generate_key("example.com/new")
    signer = Signer.from_private_key(private)
    assert signer.vkey == vkey
    assert Verifier.from_vkey(vkey) == signer.verifier()
    secret = private.split("+", 4)[4]  # the base64 itself may contain "+"
    assert "PRIVATE" not in repr(signer) and secret not in repr(signer)


def test_vkey_base64_may_contain_plus() -> None:
    for seed in range(200):
        vkey = Signer("n", bytes([seed]) * 32).vkey
        if "+" in vkey.split("+", 2)[2]:
            assert Verifier.from_vkey(vkey).vkey == vkey
            return
    pytest.fail("no key with '+' in its base64 among 200 seeds")


def _vkey_with(name: str = "n", hex_id: str | None = None, material: bytes | None = None) -> str:
    material = b"\x01" + bytes(32) if material is None else material
    if hex_id is None:
        hex_id = f"{compute_key_id(name, material[0], material[1:]):08x}"
    return f"{name}+{hex_id}+{base64.b64encode(material).decode()}"


@pytest.mark.parametrize(
    "vkey",
    [
        "",
        "no-plus-at-all",
        "name+530d903a",
        _vkey_with(hex_id="00000000"),  # key ID does not match
        _vkey_with().replace("+", "+X", 1)[:-1],  # hex too long / broken
        "example.com/foo+530D903A+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # uppercase hex
        "example.com/foo+530d903+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # 7 hex digits
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2",  # bad padding
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2l",  # non-canonical
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k\n",
        " example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        _vkey_with(material=b"\x01" + bytes(31)),  # short key
        _vkey_with(material=b"\x01" + bytes(33)),  # long key
        _vkey_with(material=b"\x02" + bytes(32)),  # unknown type for a note verifier
        _vkey_with(material=b"\x04" + bytes(32)),  # a cosignature key is not a note key
        _vkey_with(material=b"\x01"),
        _vkey_with(name="a b"),
        _vkey_with(name="a\u00a0b"),
        _vkey_with(name="a\u2003b"),
        _vkey_with(name="a\tb"),
        _vkey_with(name="x" * 256),
    ],
)
def test_bad_vkeys_are_format_errors(vkey: str) -> None:
    with pytest.raises(FormatError):
        Verifier.from_vkey(vkey)


def test_longest_name_is_accepted() -> None:
    assert Verifier.from_vkey(_vkey_with(name="x" * 255)).name == "x" * 255


@pytest.mark.parametrize(
    "skey",
    [
        GO_SKEY.replace("PRIVATE+KEY+", "PRIVATE+KEYS+"),
        GO_SKEY.replace("c74f20a3", "c74f20a4"),  # key ID mismatch
        GO_SKEY.replace("PeterNeumann", "PeterNeumann2"),  # name is bound into the key ID
        GO_SKEY[:-1],
        GO_SKEY[len("PRIVATE+KEY+") :],
        "PRIVATE+KEY+n+00000000+" + base64.b64encode(b"\x01" + bytes(31)).decode(),
        "PRIVATE+KEY+n+00000000+" + base64.b64encode(b"\x04" + bytes(32)).decode(),
    ],
)
def test_bad_private_keys_are_format_errors(skey: str) -> None:
    with pytest.raises(FormatError):
        Signer.from_private_key(skey)


def test_constructor_misuse_is_usage_error() -> None:
    with pytest.raises(UsageError):
        Signer("bad name", bytes(32))
    with pytest.raises(UsageError):
        Signer("ok", bytes(31))
    with pytest.raises(UsageError):
        Verifier("ok", bytes(31))


def test_key_name_rules() -> None:
    assert is_valid_key_name("example.com/log-1")
    assert is_valid_key_name("ünïcode.example")
    for bad in ["", "a+b", "a b", "a\nb", "a\u2028b", "a\x85b", "a\x00b", "\udcff", "x" * 256]:
        assert not is_valid_key_name(bad), bad


# --- opening notes: every rejection rule --------------------------------------------------------


def _signed(text: bytes = b"hello\n") -> bytes:
    return sign_note(text, ALICE)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello\n",
        b"hello\n\n",  # no signatures
        b"hello\n\n" + sig_line("example.com/alice", bytes(68))[:-1],  # no final newline
        b"\xff\xfe\n\n" + sig_line("a", bytes(68)),  # not UTF-8
        b"hel\rlo\n\n" + sig_line("a", bytes(68)),  # control character
        b"hel\x00lo\n\n" + sig_line("a", bytes(68)),
        b"hello\n\n- a " + base64.b64encode(bytes(68)) + b"\n",  # hyphen instead of em dash
        b"hello\n\n\xe2\x80\x94a " + base64.b64encode(bytes(68)) + b"\n",  # no space after dash
        b"hello\n\n" + sig_line("a", bytes(4)),  # signature too short
        b"hello\n\n" + sig_line("a+b", bytes(68)),  # invalid name
        b"hello\n\n\xe2\x80\x94 a\n",  # no signature
        b"hello\n\n\xe2\x80\x94 a !!!!\n",  # bad base64
        b"hello\n\n\xe2\x80\x94 a AAAAAAB=\n",  # non-canonical base64
        b"hello\n\n" + sig_line("a", bytes(68)) + b"\n",  # blank line among signatures
        b"hello\n\n" + sig_line("a", bytes(5000)),  # oversized signature
    ],
)
def test_malformed_notes_are_format_errors(data: bytes) -> None:
    with pytest.raises(FormatError):
        open_note(data, [ALICE.verifier()])


def test_note_size_bound() -> None:
    text = b"x" * (MAX_NOTE_BYTES - 200) + b"\n"
    assert open_note(sign_note(text, ALICE), [ALICE.verifier()]).text == text
    with pytest.raises(FormatError):
        open_note(b"x" * MAX_NOTE_BYTES + b"\n\n" + sig_line("a", bytes(68)), [ALICE.verifier()])
    with pytest.raises(UsageError):
        sign_note(b"x" * MAX_NOTE_BYTES + b"\n", ALICE)


def test_signature_count_bound() -> None:
    note = _signed()
    unknown = b"".join(sig_line(f"u{i}", bytes(68)) for i in range(MAX_SIGNATURES - 1))
    opened = open_note(note + unknown, [ALICE.verifier()])
    assert len(opened.unverified_sigs) == MAX_SIGNATURES - 1
    with pytest.raises(FormatError):
        open_note(note + unknown + sig_line("one-more", bytes(68)), [ALICE.verifier()])


def test_wrong_signature_from_known_key_rejects_whole_note() -> None:
    note = _signed() + sig_line("example.com/bob", BOB.key_id.to_bytes(4, "big") + bytes(64))
    with pytest.raises(InvalidSignatureError):
        open_note(note, [ALICE.verifier(), BOB.verifier()])
    # Unknown to this verifier set: ignored.
    assert open_note(note, [ALICE.verifier()]).unverified_sigs[0].name == "example.com/bob"


def test_signature_of_wrong_length_from_known_key_is_invalid() -> None:
    note = b"hello\n\n" + sig_line("example.com/alice", ALICE.key_id.to_bytes(4, "big") + b"x")
    with pytest.raises(InvalidSignatureError):
        open_note(note, [ALICE.verifier()])


def test_no_known_signature_is_unverified_note_error() -> None:
    with pytest.raises(UnverifiedNoteError) as info:
        open_note(_signed(), [BOB.verifier()])
    assert isinstance(info.value, VerificationError)
    assert info.value.unverified_sigs[0].name == "example.com/alice"
    with pytest.raises(UnverifiedNoteError):
        open_note(_signed(), [])


def test_same_name_other_id_or_same_id_other_name_is_ignored() -> None:
    sig = split_note(_signed())[1][0]
    other_id = NoteSignature(sig.name, sig.key_id ^ 1, sig.signature).to_line()
    other_name = NoteSignature("example.com/mallory", sig.key_id, sig.signature).to_line()
    opened = open_note(_signed() + other_id + other_name, [ALICE.verifier()])
    assert len(opened.sigs) == 1
    assert {s.name for s in opened.unverified_sigs} == {"example.com/alice", "example.com/mallory"}


def test_duplicate_signatures_count_once() -> None:
    note = _signed()
    line = note[note.rindex(b"\n\n") + 2 :]
    unknown = sig_line("u", bytes(68))
    opened = open_note(note + line + unknown + unknown, [ALICE.verifier()])
    assert len(opened.sigs) == 1
    assert len(opened.unverified_sigs) == 1


def test_text_may_contain_blank_lines_and_be_a_single_newline() -> None:
    for text in [b"a\n\nb\n", b"\n", b"a\n\n\n", "— not a signature\n".encode()]:
        assert open_note(sign_note(text, ALICE), [ALICE.verifier()]).text == text


@pytest.mark.parametrize("text", [b"", b"no newline", b"bad\x01\n", b"\xff\n", b"cr\r\n"])
def test_sign_note_rejects_bad_text(text: bytes) -> None:
    with pytest.raises(UsageError):
        sign_note(text, ALICE)


def test_sign_note_needs_a_signer() -> None:
    with pytest.raises(UsageError):
        sign_note(b"x\n")


def test_add_signatures_appends_and_replaces_same_key() -> None:
    note = sign_note(b"x\n", ALICE)
    both = add_signatures(note, BOB)
    assert [s.name for s in split_note(both)[1]] == ["example.com/alice", "example.com/bob"]
    again = add_signatures(both, ALICE)
    assert [s.name for s in split_note(again)[1]] == ["example.com/bob", "example.com/alice"]
    opened = open_note(again, [ALICE.verifier(), BOB.verifier()])
    assert {s.name for s in opened.sigs} == {"example.com/alice", "example.com/bob"}


def test_verifier_set() -> None:
    verifiers = VerifierSet([ALICE.verifier(), BOB.verifier(), ALICE.verifier()])
    assert len(verifiers) == 2
    assert verifiers.lookup(ALICE.name, ALICE.key_id) == ALICE.verifier()
    assert verifiers.lookup(ALICE.name, BOB.key_id) is None

    class Impostor:
        name = ALICE.name
        key_id = ALICE.key_id

        def verify(self, msg: bytes, sig: bytes) -> bool:
            return True

    with pytest.raises(UsageError):
        verifiers.add(Impostor())


def test_strict_helpers() -> None:
    assert b64decode_strict("AAE=", "x") == b"\x00\x01"
    for bad in ["AAF=", "AAE", "AA E=", "AAE=\n", "é", "-_8="]:
        with pytest.raises(FormatError):
            b64decode_strict(bad, "x")
    assert parse_decimal("0", "x", 10) == 0
    for bad in ["", "01", "+1", "-1", "1_0", " 1", "10", "٣", "99999999999"]:
        with pytest.raises(FormatError):
            parse_decimal(bad, "x", 10)


# --- properties and fuzzing ---------------------------------------------------------------------

note_texts = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters=[chr(i) for i in range(32)])
    | st.just("\n"),
    max_size=200,
).map(lambda s: (s + "\n").encode("utf-8"))


@given(note_texts, st.lists(st.sampled_from([ALICE, BOB]), min_size=1, max_size=3))
def test_sign_open_round_trip(text: bytes, signers: list[Signer]) -> None:
    note = sign_note(text, *signers)
    opened = open_note(note, [ALICE.verifier(), BOB.verifier()])
    assert opened.text == text
    assert {s.name for s in opened.sigs} == {s.name for s in signers}
    assert split_note(note)[0] == text


@given(st.binary(max_size=600))
def test_open_note_on_arbitrary_bytes_raises_only_our_errors(data: bytes) -> None:
    with contextlib.suppress(FormatError, VerificationError):
        open_note(data, [ALICE.verifier()])


@given(note_texts, st.data())
def test_mutated_notes_never_verify_silently(text: bytes, data: st.DataObject) -> None:
    note = bytearray(sign_note(text, ALICE))
    position = data.draw(st.integers(0, len(note) - 1))
    note[position] ^= data.draw(st.integers(1, 255))
    try:
        open_note(bytes(note), [ALICE.verifier()])
    except (FormatError, VerificationError):
        return
    pytest.fail("a mutated note verified")


@given(st.text(max_size=200))
def test_key_parsers_raise_only_format_errors(text: str) -> None:
    for parse in (parse_vkey, parse_private_key, Verifier.from_vkey, Signer.from_private_key):
        with contextlib.suppress(FormatError):
            parse(text)


@given(st.binary(max_size=100))
def test_b64decode_strict_accepts_exactly_canonical(data: bytes) -> None:
    encoded = base64.b64encode(data).decode()
    assert b64decode_strict(encoded, "x") == data
