"""Signed notes (c2sp.org/signed-note) with Ed25519 keys, byte-compatible with Go's sumdb/note.

A note is UTF-8 text ending in a newline, a blank line, then signature lines
``— <key name> <base64(4-byte key ID || signature)>``. This module parses and produces notes
and the two key texts of the ecosystem:

- verifier key (vkey): ``<name>+<hex key ID>+<base64(type || public key)>``
- private key: ``PRIVATE+KEY+<name>+<hex key ID>+<base64(type || 32-byte seed)>``

with key ID = SHA-256(name || 0x0A || type || public key)[:4] read big-endian. Ed25519 note
signatures use type 0x01; cosignature.py adds the witness type 0x04 on the same machinery.

Parsing is strict (canonical base64, lowercase 8-digit hex key IDs, bounded sizes) and raises
FormatError; a signature from a known key that does not verify raises InvalidSignatureError and
a note with no verified signature raises UnverifiedNoteError (both VerificationError).
Pure logic, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar, Protocol, Self, runtime_checkable

import nacl.exceptions
import nacl.signing

from logserver.core.errors import FormatError, UsageError, VerificationError

ED25519_KEY_TYPE = 0x01
MAX_NOTE_BYTES = 1 << 20
MAX_SIGNATURES = 100
MAX_KEY_NAME_BYTES = 255
MAX_KEY_TEXT_CHARS = 1024
# Key ID plus the largest signature we are willing to look at (ML-DSA would need ~2.4 kB).
MAX_SIGNATURE_BYTES = 4 + 4096
SIGNATURE_PREFIX = "— "
PRIVATE_KEY_PREFIX = "PRIVATE+KEY+"
_CONTROL_CHARACTER = re.compile("[\x00-\x09\x0b-\x1f]")


class InvalidSignatureError(VerificationError):
    """A signature line names a known key but its signature does not verify."""

    def __init__(self, name: str, key_id: int) -> None:
        super().__init__(f"invalid signature by known key {name}+{key_id:08x}")
        self.name = name
        self.key_id = key_id


class UnverifiedNoteError(VerificationError):
    """A note carries no valid signature from any of the known keys."""

    def __init__(self, unverified: tuple[NoteSignature, ...]) -> None:
        names = ", ".join(f"{s.name}+{s.key_id:08x}" for s in unverified) or "none"
        super().__init__(f"note has no signature from a known key (signed by: {names})")
        self.unverified_sigs = unverified


# --- small strict encoders shared by the format modules -------------------------------------


def b64decode_strict(text: str, what: str) -> bytes:
    """Decode standard padded base64, rejecting anything but the canonical encoding."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise FormatError(what, "invalid base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise FormatError(what, "non-canonical base64")
    return raw


def b64encode(data: bytes) -> str:
    """Standard padded base64 as text."""
    return base64.b64encode(data).decode("ascii")


def parse_decimal(text: str, what: str, limit: int) -> int:
    """Parse an ASCII decimal with no sign and no leading zeros, below ``limit``."""
    if not text or len(text) > len(str(limit)):
        raise FormatError(what, f"bad decimal number {text[:40]!r}")
    if not all("0" <= c <= "9" for c in text) or (len(text) > 1 and text[0] == "0"):
        raise FormatError(what, f"bad decimal number {text!r}")
    value = int(text)
    if value >= limit:
        raise FormatError(what, f"number {text} out of range")
    return value


def _is_space(char: str) -> bool:
    # Go's unicode.IsSpace plus every Unicode separator category.
    return char.isspace() or unicodedata.category(char) in ("Zs", "Zl", "Zp", "Cc")


def is_valid_key_name(name: str) -> bool:
    """A key name: non-empty, at most 255 UTF-8 bytes, no spaces, controls or '+'."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return False
    if not 0 < size <= MAX_KEY_NAME_BYTES or "+" in name:
        return False
    return not any(_is_space(c) for c in name)


def compute_key_id(name: str, key_type: int, public_key: bytes) -> int:
    """SHA-256(name || 0x0A || type || public key)[:4] as a big-endian uint32."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([key_type]) + public_key)
    return int.from_bytes(digest.digest()[:4], "big")


# --- key texts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyText:
    """The parts of a vkey or private-key text: name, key ID, type byte and key material."""

    name: str
    key_id: int
    key_type: int
    key: bytes


def _parse_name_id_key(text: str, what: str) -> KeyText:
    if len(text) > MAX_KEY_TEXT_CHARS:
        raise FormatError(what, "too long")
    # The base64 part may contain '+': split on the first two only.
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise FormatError(what, "expected <name>+<key ID>+<key>")
    name, hex_id, key64 = parts
    if not is_valid_key_name(name):
        raise FormatError(what, f"invalid key name {name!r}")
    if len(hex_id) != 8 or not all(c in "0123456789abcdef" for c in hex_id):
        raise FormatError(what, "key ID must be 8 lowercase hex digits")
    material = b64decode_strict(key64, what)
    if len(material) < 2:
        raise FormatError(what, "key material too short")
    return KeyText(name, int(hex_id, 16), material[0], material[1:])


def parse_vkey(text: str) -> KeyText:
    """Parse ``<name>+<hex id>+<base64(type || public key)>`` and check the key ID."""
    parsed = _parse_name_id_key(text, "verifier key")
    if compute_key_id(parsed.name, parsed.key_type, parsed.key) != parsed.key_id:
        raise FormatError("verifier key", "key ID does not match the key")
    return parsed


def parse_private_key(text: str) -> KeyText:
    """Parse ``PRIVATE+KEY+<name>+<hex id>+<base64(type || seed)>`` (key ID checked later)."""
    if not text.startswith(PRIVATE_KEY_PREFIX):
        raise FormatError("private key", "missing PRIVATE+KEY+ prefix")
    return _parse_name_id_key(text[len(PRIVATE_KEY_PREFIX) :], "private key")


# --- verifiers and signers -------------------------------------------------------------------


@runtime_checkable
class NoteVerifier(Protocol):
    """Anything that can check note signatures for one (name, key ID)."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def verify(self, msg: bytes, sig: bytes) -> bool: ...


class NoteSigner(Protocol):
    """Anything that can sign note text for one (name, key ID)."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def sign(self, msg: bytes) -> bytes: ...


class _KeyIdentity:
    """What a signer and a verifier of one key share: its name, key ID and public key."""

    _name: str
    _key_id: int
    _public_key: bytes

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return self._key_id

    @property
    def public_key(self) -> bytes:
        return self._public_key


class Verifier(_KeyIdentity):
    """An Ed25519 note verifier (type 0x01), usually built from a vkey text."""

    KEY_TYPE: ClassVar[int] = ED25519_KEY_TYPE

    def __init__(self, name: str, public_key: bytes) -> None:
        if not is_valid_key_name(name):
            raise UsageError(f"invalid key name {name!r}")
        if len(public_key) != 32:
            raise UsageError("an Ed25519 public key is 32 bytes")
        self._name = name
        self._public_key = bytes(public_key)
        self._key_id = compute_key_id(name, self.KEY_TYPE, public_key)
        self._verify_key = nacl.signing.VerifyKey(self._public_key)

    @classmethod
    def from_vkey(cls, text: str) -> Self:
        parsed = parse_vkey(text)
        if parsed.key_type != cls.KEY_TYPE:
            raise FormatError(
                "verifier key", f"key type 0x{parsed.key_type:02x}, want 0x{cls.KEY_TYPE:02x}"
            )
        if len(parsed.key) != 32:
            raise FormatError("verifier key", "an Ed25519 public key is 32 bytes")
        return cls(parsed.name, parsed.key)

    @property
    def vkey(self) -> str:
        material = b64encode(bytes([self.KEY_TYPE]) + self._public_key)
        return f"{self._name}+{self._key_id:08x}+{material}"

    def _ed25519_ok(self, msg: bytes, sig: bytes) -> bool:
        if len(sig) != 64:
            return False
        try:
            self._verify_key.verify(msg, sig)
        except nacl.exceptions.BadSignatureError:
            return False
        return True

    def verify(self, msg: bytes, sig: bytes) -> bool:
        return self._ed25519_ok(msg, sig)

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and isinstance(other, Verifier)
            and (other.name, other.public_key) == (self._name, self._public_key)
        )

    def __hash__(self) -> int:
        return hash((type(self), self._name, self._public_key))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.vkey!r})"


class Signer(_KeyIdentity):
    """An Ed25519 note signer (type 0x01), usually built from a private-key text."""

    KEY_TYPE: ClassVar[int] = ED25519_KEY_TYPE
    VERIFIER: ClassVar[type[Verifier]] = Verifier

    def __init__(self, name: str, seed: bytes) -> None:
        if not is_valid_key_name(name):
            raise UsageError(f"invalid key name {name!r}")
        if len(seed) != 32:
            raise UsageError("an Ed25519 seed is 32 bytes")
        self._name = name
        self._seed = bytes(seed)
        self._signing_key = nacl.signing.SigningKey(self._seed)
        self._public_key = bytes(self._signing_key.verify_key)
        self._key_id = compute_key_id(name, self.KEY_TYPE, self._public_key)

    @classmethod
    def _seed_from_private_key(cls, text: str) -> tuple[str, bytes]:
        parsed = parse_private_key(text)
        if parsed.key_type != cls.KEY_TYPE:
            raise FormatError(
                "private key", f"key type 0x{parsed.key_type:02x}, want 0x{cls.KEY_TYPE:02x}"
            )
        if len(parsed.key) != 32:
            raise FormatError("private key", "an Ed25519 seed is 32 bytes")
        public_key = bytes(nacl.signing.SigningKey(parsed.key).verify_key)
        if compute_key_id(parsed.name, cls.KEY_TYPE, public_key) != parsed.key_id:
            raise FormatError("private key", "key ID does not match the key")
        return parsed.name, parsed.key

    @classmethod
    def from_private_key(cls, text: str) -> Self:
        name, seed = cls._seed_from_private_key(text)
        return cls(name, seed)

    @property
    def private_key(self) -> str:
        material = b64encode(bytes([self.KEY_TYPE]) + self._seed)
        return f"{PRIVATE_KEY_PREFIX}{self._name}+{self._key_id:08x}+{material}"

    def verifier(self) -> Verifier:
        return self.VERIFIER(self._name, self._public_key)

    @property
    def vkey(self) -> str:
        return self.verifier().vkey

    def sign(self, msg: bytes) -> bytes:
        return self._signing_key.sign(msg).signature

    def __repr__(self) -> str:
        # Never print the seed.
        return f"{type(self).__name__}({self._name!r}, key_id={self._key_id:08x})"


def generate_key(name: str) -> tuple[str, str]:
    """A fresh Ed25519 note key: (private key text, vkey text)."""
    signer = Signer(name, os.urandom(32))
    return signer.private_key, signer.vkey


class VerifierSet:
    """Known verifiers, looked up by (name, key ID); a (name, key ID) may appear once."""

    def __init__(self, verifiers: Iterable[NoteVerifier] = ()) -> None:
        self._by_id: dict[tuple[str, int], NoteVerifier] = {}
        for verifier in verifiers:
            self.add(verifier)

    def add(self, verifier: NoteVerifier) -> None:
        key = (verifier.name, verifier.key_id)
        existing = self._by_id.get(key)
        if existing is not None and existing != verifier:
            raise UsageError(f"two verifiers share name and key ID {key[0]}+{key[1]:08x}")
        self._by_id[key] = verifier

    def lookup(self, name: str, key_id: int) -> NoteVerifier | None:
        return self._by_id.get((name, key_id))

    def __iter__(self) -> Iterator[NoteVerifier]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)


# --- notes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoteSignature:
    """One signature line; ``verifier`` is set on signatures that were verified."""

    name: str
    key_id: int
    signature: bytes
    verifier: NoteVerifier | None = None

    def to_line(self) -> bytes:
        payload = b64encode(self.key_id.to_bytes(4, "big") + self.signature)
        return f"{SIGNATURE_PREFIX}{self.name} {payload}\n".encode()


@dataclass(frozen=True)
class Note:
    """An opened note: its text, the verified signatures and those from unknown keys."""

    text: bytes
    sigs: tuple[NoteSignature, ...]
    unverified_sigs: tuple[NoteSignature, ...] = ()


def _check_text(text: str, what: str) -> None:
    bad = _CONTROL_CHARACTER.search(text)
    if bad:
        raise FormatError(what, f"control character U+{ord(bad.group()):04X}")


def _decode(data: bytes, what: str) -> str:
    if len(data) > MAX_NOTE_BYTES:
        raise FormatError(what, f"larger than {MAX_NOTE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(what, "not valid UTF-8") from exc
    _check_text(text, what)
    return text


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(SIGNATURE_PREFIX):
        raise FormatError("note", "signature line does not start with an em dash and space")
    name, space, payload64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
    if not space or not is_valid_key_name(name):
        raise FormatError("note", f"invalid key name in signature line {line[:80]!r}")
    if len(payload64) > (MAX_SIGNATURE_BYTES + 2) // 3 * 4:
        raise FormatError("note", "signature too long")
    payload = b64decode_strict(payload64, "note signature")
    if len(payload) < 5:
        raise FormatError("note", "signature too short")
    return NoteSignature(name, int.from_bytes(payload[:4], "big"), payload[4:])


def split_note(note: bytes) -> tuple[bytes, tuple[NoteSignature, ...]]:
    """Parse a note's structure without verifying: (text, signature lines in order)."""
    decoded = _decode(note, "note")
    split = decoded.rfind("\n\n")
    if split < 0:
        raise FormatError("note", "no blank line before the signatures")
    text, block = decoded[: split + 1], decoded[split + 2 :]
    if not block or not block.endswith("\n"):
        raise FormatError("note", "missing signature lines or final newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise FormatError("note", f"more than {MAX_SIGNATURES} signatures")
    return text.encode("utf-8"), tuple(_parse_signature_line(line) for line in lines)


def open_note(note: bytes, verifiers: VerifierSet | Iterable[NoteVerifier]) -> Note:
    """Parse a note and verify its signatures against the known verifiers (Go's note.Open).

    Signatures from unknown keys are returned unverified (identical lines once); a known key's
    signature that fails raises InvalidSignatureError; repeated signatures by one key count once;
    no verified signature raises UnverifiedNoteError.
    """
    known = verifiers if isinstance(verifiers, VerifierSet) else VerifierSet(verifiers)
    text, signatures = split_note(note)
    verified: dict[tuple[str, int], NoteSignature] = {}
    unverified: dict[NoteSignature, None] = {}
    for sig in signatures:
        verifier = known.lookup(sig.name, sig.key_id)
        if verifier is None:
            unverified.setdefault(sig)
            continue
        if not verifier.verify(text, sig.signature):
            raise InvalidSignatureError(sig.name, sig.key_id)
        verified.setdefault(
            (sig.name, sig.key_id), NoteSignature(sig.name, sig.key_id, sig.signature, verifier)
        )
    if not verified:
        raise UnverifiedNoteError(tuple(unverified))
    return Note(text, tuple(verified.values()), tuple(unverified))


def _check_note_text(text: bytes) -> None:
    try:
        _decode(text, "note text")
    except FormatError as exc:
        raise UsageError(f"cannot sign: {exc}") from exc
    if not text.endswith(b"\n"):
        raise UsageError("cannot sign: note text must end in a newline")


def _signature_lines(text: bytes, signers: tuple[NoteSigner, ...]) -> list[NoteSignature]:
    if not signers:
        raise UsageError("at least one signer is needed")
    return [NoteSignature(s.name, s.key_id, s.sign(text)) for s in signers]


def _assemble(text: bytes, signatures: list[NoteSignature]) -> bytes:
    if len(signatures) > MAX_SIGNATURES:
        raise UsageError(f"a note holds at most {MAX_SIGNATURES} signatures")
    note = text + b"\n" + b"".join(sig.to_line() for sig in signatures)
    if len(note) > MAX_NOTE_BYTES:
        raise UsageError(f"signed note would exceed {MAX_NOTE_BYTES} bytes")
    return note


def sign_note(text: bytes, *signers: NoteSigner) -> bytes:
    """Sign ``text`` (UTF-8, ending in a newline, no other control characters)."""
    _check_note_text(text)
    return _assemble(text, _signature_lines(text, signers))


def add_signatures(note: bytes, *signers: NoteSigner) -> bytes:
    """Append signatures to a signed note; an existing line by the same key is replaced."""
    text, existing = split_note(note)
    new = _signature_lines(text, signers)
    replaced = {(s.name, s.key_id) for s in new}
    kept = [s for s in existing if (s.name, s.key_id) not in replaced]
    return _assemble(text, kept + new)
