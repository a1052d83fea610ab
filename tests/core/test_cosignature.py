"""Witness cosignatures (logserver.core.cosignature): layout, keys, tampering, note integration."""

from __future__ import annotations

import base64
from collections.abc import Callable

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from logserver.core.checkpoint import Checkpoint
from logserver.core.cosignature import (
    MAX_TIMESTAMP,
    CosignatureSigner,
    CosignatureVerifier,
    cosignature_timestamp,
    cosigned_message,
    generate_cosignature_key,
    load_signer,
    load_verifier,
    signature_timestamp,
)
from logserver.core.errors import FormatError, UsageError
from logserver.core.note import (
    InvalidSignatureError,
    Signer,
    Verifier,
    add_signatures,
    compute_key_id,
    open_note,
    sign_note,
    split_note,
)

# From c2sp.org/tlog-checkpoint and c2sp.org/tlog-cosignature.
SPEC_BODY = b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_SIGNED_MESSAGE = b"cosignature/v1\ntime 1679315147\n" + SPEC_BODY
SPEC_COSIGNATURE = (
    "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbI"
    "UBkBIfZ+qnA=="
)

NOW = 1_700_000_000
WITNESS = CosignatureSigner("witness.example/w1", bytes(range(32)), clock=lambda: NOW)
LOG = Signer("example.com/behind-the-sofa", bytes(range(32, 64)))
BODY = Checkpoint("example.com/behind-the-sofa", 7, bytes(32)).to_bytes()
OTHER_BODY = Checkpoint("example.com/behind-the-sofa", 8, bytes(32)).to_bytes()


def test_signed_message_matches_spec() -> None:
    assert cosigned_message(SPEC_BODY, 1679315147) == SPEC_SIGNED_MESSAGE


def test_spec_cosignature_layout() -> None:
    payload = base64.b64decode(SPEC_COSIGNATURE)
    assert payload[:4].hex() == "8d66cf3f"  # key ID
    assert cosignature_timestamp(payload[4:]) == 1679315147
    assert len(payload) == 4 + 8 + 64


def test_key_id_uses_type_0x04() -> None:
    public_key = WITNESS.public_key
    assert WITNESS.key_id == compute_key_id(WITNESS.name, 0x04, public_key)
    assert WITNESS.key_id != Signer(WITNESS.name, bytes(range(32))).key_id
    raw = base64.b64decode(WITNESS.vkey.split("+", 2)[2])
    assert raw == b"\x04" + public_key
    raw_private = base64.b64decode(WITNESS.private_key.split("+", 4)[4])
    assert raw_private == b"\x04" + bytes(range(32))


def test_signature_is_timestamp_and_plain_ed25519_over_message() -> None:
    sig = WITNESS.sign(BODY)
    assert sig[:8] == NOW.to_bytes(8, "big")
    nacl.signing.VerifyKey(WITNESS.public_key).verify(cosigned_message(BODY, NOW), sig[8:])
    assert WITNESS.verifier().verify_with_timestamp(BODY, sig) == (True, NOW)
    assert WITNESS.verifier().verify(BODY, sig)


def test_key_texts_round_trip_and_dispatch() -> None:
    private, vkey = generate_cosignature_key("witness.example/new")
    signer = load_signer(private)
    assert isinstance(signer, CosignatureSigner)
    assert signer.vkey == vkey and signer.private_key == private
    verifier = load_verifier(vkey)
    assert isinstance(verifier, CosignatureVerifier)
    assert verifier == CosignatureVerifier.from_vkey(vkey) == signer.verifier()
    assert type(load_verifier(LOG.vkey)) is Verifier
    assert type(load_signer(LOG.private_key)) is Signer


def test_key_types_do_not_mix() -> None:
    with pytest.raises(FormatError):
        CosignatureVerifier.from_vkey(LOG.vkey)
    with pytest.raises(FormatError):
        Verifier.from_vkey(WITNESS.vkey)
    with pytest.raises(FormatError):
        CosignatureSigner.from_private_key(LOG.private_key)
    with pytest.raises(FormatError):
        Signer.from_private_key(WITNESS.private_key)
    other_type = LOG.vkey.split("+")[0]
    material = base64.b64encode(b"\x02" + bytes(32)).decode()
    vkey = f"{other_type}+{compute_key_id(other_type, 2, bytes(32)):08x}+{material}"
    with pytest.raises(FormatError):
        load_verifier(vkey)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda sig: sig[:7] + bytes([sig[7] ^ 1]) + sig[8:],  # timestamp tampered
        lambda sig: sig[:-1] + bytes([sig[-1] ^ 1]),  # signature tampered
        lambda sig: (2**63).to_bytes(8, "big") + sig[8:],  # timestamp beyond 2^63 - 1
        lambda sig: sig[:-1],  # short
        lambda sig: sig + b"\x00",  # long
        lambda sig: b"",
    ],
)
def test_tampered_cosignatures_fail(mutate: Callable[[bytes], bytes]) -> None:
    sig = WITNESS.sign(BODY)
    ok, timestamp = WITNESS.verifier().verify_with_timestamp(BODY, mutate(sig))
    assert not ok and timestamp is None


def test_cosignature_over_another_checkpoint_fails() -> None:
    sig = WITNESS.sign(BODY)
    assert not WITNESS.verifier().verify(OTHER_BODY, sig)
    # A plain Ed25519 note signature by the same key is not a cosignature either.
    plain = Signer(WITNESS.name, bytes(range(32))).sign(BODY)
    assert not WITNESS.verifier().verify(BODY, NOW.to_bytes(8, "big") + plain)


def test_signer_misuse() -> None:
    with pytest.raises(UsageError):
        WITNESS.sign(b"not a checkpoint\n")
    with pytest.raises(UsageError):
        WITNESS.sign_at(BODY, -1)
    with pytest.raises(UsageError):
        WITNESS.sign_at(BODY, MAX_TIMESTAMP + 1)
    assert cosignature_timestamp(WITNESS.sign_at(BODY, MAX_TIMESTAMP)) == MAX_TIMESTAMP


def test_open_note_checks_log_signature_and_cosignature_together() -> None:
    note = add_signatures(sign_note(BODY, LOG), WITNESS)
    opened = open_note(note, [LOG.verifier(), WITNESS.verifier()])
    assert [s.name for s in opened.sigs] == [LOG.name, WITNESS.name]
    assert [signature_timestamp(s) for s in opened.sigs] == [None, NOW]

    # A cosignature moved onto another checkpoint is rejected as invalid.
    other = sign_note(OTHER_BODY, LOG)
    moved = other + split_note(note)[1][1].to_line()
    with pytest.raises(InvalidSignatureError):
        open_note(moved, [LOG.verifier(), WITNESS.verifier()])


def test_clock_is_read_at_signing_time() -> None:
    times = iter([10, 20])
    signer = CosignatureSigner("w", bytes(32), clock=lambda: next(times))
    assert cosignature_timestamp(signer.sign(BODY)) == 10
    assert cosignature_timestamp(signer.sign(BODY)) == 20


checkpoints = st.builds(
    Checkpoint,
    origin=st.from_regex(r"[a-z0-9./-]{1,30}", fullmatch=True),
    size=st.integers(0, 2**63 - 1),
    root_hash=st.binary(min_size=32, max_size=32),
)


@given(checkpoints, st.integers(0, MAX_TIMESTAMP))
def test_round_trip(cp: Checkpoint, timestamp: int) -> None:
    body = cp.to_bytes()
    sig = WITNESS.sign_at(body, timestamp)
    assert WITNESS.verifier().verify_with_timestamp(body, sig) == (True, timestamp)
    note = sign_note(body, WITNESS)
    assert open_note(note, [WITNESS.verifier()]).text == body


@given(st.binary(max_size=100), st.binary(max_size=200))
def test_verify_never_raises(msg: bytes, sig: bytes) -> None:
    assert WITNESS.verifier().verify_with_timestamp(msg, sig) == (False, None)
