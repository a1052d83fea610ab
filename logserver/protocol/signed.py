"""Signed build-protocol entries and the log's leaf envelope.

A signed entry is an entry's JSON object (:mod:`logserver.protocol.entry_json`) plus a
``signer`` (``{"name", "key_id"}``) and a ``signature``: base64 of the Ed25519 signature over
``"synchronicity/entry/v2\\n"``, the network id (one length byte, then its UTF-8 bytes) and
the canonical JSON (RFC 8785, :mod:`logserver.core.canonical_json`) of the entry without its
``signature`` member, so an entry signed for one network is refused by every other. Every leaf
of a protocol log is the canonical JSON of ``{"entry": <signed entry>, "time": <log ms>}``
(:class:`Leaf`). Pure: parsing is strict (canonical base64, bounded sizes).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from logserver.core import canonical_json
from logserver.core.errors import FormatError, UsageError, VerificationError
from logserver.core.note import NoteSigner, NoteVerifier
from logserver.protocol.entries import (
    MAX_LEAF_BYTES,
    Entry,
    check_index,
    check_name,
    members,
    require,
)
from logserver.protocol.entry_json import entry_from_json, entry_to_json

ENTRY_DOMAIN = b"synchronicity/entry/v2\n"
MAX_NETWORK_ID_BYTES = 255
_ENVELOPE = {"type", "signer", "signature"}
_KEY_ID_HEX = re.compile(r"[0-9a-f]{8}")

# Entry keys are signed-note Ed25519 keys: ``logserver.core.note.Signer`` and ``Verifier`` (or
# anything with their shape: ``name``, ``key_id`` as a uint32, ``sign``/``verify``).
EntrySigner = NoteSigner
EntryVerifier = NoteVerifier


@dataclass(frozen=True)
class KeyRef:
    """The identity of a signing key inside an entry: name and signed-note key ID (uint32)."""

    name: str
    key_id: int

    def __post_init__(self) -> None:
        check_name(self.name, "entry signer")
        require(type(self.key_id) is int and 0 <= self.key_id < 2**32, "entry signer", "bad key ID")

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "key_id": f"{self.key_id:08x}"}

    def __str__(self) -> str:
        return f"{self.name}+{self.key_id:08x}"


@dataclass(frozen=True)
class SignedEntry:
    """An entry with its author's identity and signature."""

    entry: Entry
    signer: KeyRef
    signature: bytes

    def unsigned_json(self) -> dict[str, Any]:
        return unsigned_entry_json(self.entry, self.signer)

    def signed_message(self, network_id: str) -> bytes:
        """The signed bytes: domain ‖ u8 len(network id) ‖ network id ‖ canonical JSON."""
        network = network_id_bytes(network_id)
        unsigned = canonical_json.encode(self.unsigned_json())
        return ENTRY_DOMAIN + bytes([len(network)]) + network + unsigned

    def to_json(self) -> dict[str, Any]:
        return self.unsigned_json() | {"signature": base64.b64encode(self.signature).decode()}

    @classmethod
    def from_json(cls, obj: object) -> SignedEntry:
        what = "signed entry"
        require(isinstance(obj, dict), what, "not an object")
        assert isinstance(obj, dict)
        for member in sorted(_ENVELOPE):
            require(member in obj, what, f"missing member {member!r}")
        signer = members(obj["signer"], "entry signer", {"name", "key_id"})
        key_id = signer["key_id"]
        require(
            isinstance(key_id, str) and _KEY_ID_HEX.fullmatch(key_id) is not None,
            "entry signer",
            "key_id is not 8 lowercase hex digits",
        )
        entry = entry_from_json({k: v for k, v in obj.items() if k not in {"signer", "signature"}})
        encoded = obj["signature"]
        require(isinstance(encoded, str), what, "signature is not a string")
        try:
            signature = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise FormatError(what, "signature is not base64") from exc
        require(
            len(signature) == 64 and base64.b64encode(signature).decode() == encoded,
            what,
            "signature is not canonical base64 of 64 bytes",
        )
        return cls(
            entry,
            KeyRef(check_name(signer["name"], "entry signer"), int(key_id, 16)),
            signature,
        )


def network_id_bytes(network_id: str) -> bytes:
    """The UTF-8 bytes of a network id (1 to 255 of them), as the signed message holds them."""
    try:
        encoded = network_id.encode("utf-8")
    except (AttributeError, UnicodeEncodeError) as exc:
        raise UsageError(f"the network id {network_id!r} is not a text") from exc
    if not 0 < len(encoded) <= MAX_NETWORK_ID_BYTES:
        raise UsageError(f"the network id must be 1 to {MAX_NETWORK_ID_BYTES} UTF-8 bytes")
    return encoded


def unsigned_entry_json(entry: Entry, signer: KeyRef) -> dict[str, Any]:
    """The object that is signed: the entry's members plus ``signer``."""
    return entry_to_json(entry) | {"signer": signer.to_json()}


def sign_entry(entry: Entry, signer: EntrySigner, network_id: str) -> SignedEntry:
    """Sign ``entry`` with ``signer`` for the network ``network_id`` (domain-separated, over
    the network id and the entry's canonical JSON)."""
    unsigned = SignedEntry(entry, KeyRef(signer.name, signer.key_id), b"")
    return SignedEntry(entry, unsigned.signer, signer.sign(unsigned.signed_message(network_id)))


def verify_entry(signed: SignedEntry, verifier: EntryVerifier, network_id: str) -> None:
    """Raise VerificationError unless ``verifier``'s key signed ``signed`` for ``network_id``."""
    expected = KeyRef(verifier.name, verifier.key_id)
    if signed.signer != expected:
        raise VerificationError(f"entry signed by {signed.signer}, expected {expected}")
    if not verifier.verify(signed.signed_message(network_id), signed.signature):
        raise VerificationError(
            f"bad entry signature by {signed.signer.name} (for network {network_id!r})"
        )


# ---------------------------------------------------------------------------- leaves


@dataclass(frozen=True)
class Leaf:
    """A log leaf: a signed entry stamped with the log's time in milliseconds."""

    entry: SignedEntry
    time_ms: int

    def __post_init__(self) -> None:
        check_index(self.time_ms, "log leaf", "time")

    def to_bytes(self) -> bytes:
        """Canonical JSON of ``{"entry": ..., "time": ...}``; FormatError if over 65,535 bytes."""
        data = canonical_json.encode({"entry": self.entry.to_json(), "time": self.time_ms})
        require(len(data) <= MAX_LEAF_BYTES, "log leaf", f"{len(data)} bytes > {MAX_LEAF_BYTES}")
        return data

    @classmethod
    def parse(cls, data: bytes) -> Leaf:
        """Strictly parse an encoded leaf (canonical, bounded, every member checked)."""
        obj = canonical_json.decode_object(data, max_bytes=MAX_LEAF_BYTES)
        obj = dict(members(obj, "log leaf", {"entry", "time"}))
        return cls(
            SignedEntry.from_json(obj["entry"]), check_index(obj["time"], "log leaf", "time")
        )
