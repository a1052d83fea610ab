"""Signed requests to a builder-witness: how a requester of the network config proves who asks.

Anyone may ask a witness to rebuild a crates.io release; uploading a local ``.crate`` or asking
for a build of a recipe whose source is local needs a requester named in the network config
(``requesters``, spec/network.md). Such a request carries one header::

    X-Request-Signature: <requester name> <base64 Ed25519 signature, 64 bytes>

by the requester's signed-note key over::

    "synchronicity/request/v1\\n" ‖ network id ‖ "\\n" ‖ method ‖ " " ‖ path ‖ "\\n" ‖ SHA-256(body)

(the hash as 32 raw bytes). The domain separator keeps the signature from meaning anything else
the key signs; the network id keeps it from being replayed to another network; the method and
path to another endpoint; the hash binds the body. Within one network a replay is harmless, so
there is no timestamp: both signed endpoints are idempotent (a job is requested once, whoever
asks again gets the same job and index; a crate is stored under its own SHA-256).

Example::

    signer = RequestSigner(note.Signer.from_private_key(text), config.network_id)
    headers = signer.headers("PUT", f"/crate/{sha256}", data)

Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from logserver.core import note
from logserver.core.errors import FormatError, VerificationError

REQUEST_DOMAIN = b"synchronicity/request/v1\n"
REQUEST_SIGNATURE_HEADER = "X-Request-Signature"
_SIGNATURE_BYTES = 64


def request_message(network_id: str, method: str, path: str, body: bytes) -> bytes:
    """The bytes a requester signs for one request."""
    head = f"{network_id}\n{method.upper()} {path}\n".encode()
    return REQUEST_DOMAIN + head + hashlib.sha256(body).digest()


@dataclass(frozen=True)
class RequestSigner:
    """A requester's key and the network it signs requests for."""

    signer: note.Signer
    network_id: str

    @property
    def name(self) -> str:
        return self.signer.name

    def headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        """The ``X-Request-Signature`` header for one request."""
        message = request_message(self.network_id, method, path, body)
        signature = base64.b64encode(self.signer.sign(message)).decode()
        return {REQUEST_SIGNATURE_HEADER: f"{self.signer.name} {signature}"}


@dataclass(frozen=True)
class RequestSignature:
    """A parsed ``X-Request-Signature`` header: who claims to ask, and the signature."""

    name: str
    signature: bytes

    @classmethod
    def parse(cls, header: str) -> RequestSignature:
        """Parse ``<name> <base64 signature>`` strictly (``FormatError`` otherwise)."""
        name, sep, encoded = header.partition(" ")
        what = REQUEST_SIGNATURE_HEADER
        if not sep or not note.is_valid_key_name(name):
            raise FormatError(what, "want '<requester name> <base64 signature>'")
        try:
            signature = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise FormatError(what, "the signature is not base64") from None
        if len(signature) != _SIGNATURE_BYTES or base64.b64encode(signature).decode() != encoded:
            raise FormatError(what, "the signature is not 64 bytes of canonical base64")
        return cls(name, signature)

    def verify(
        self, verifier: note.Verifier, network_id: str, method: str, path: str, body: bytes
    ) -> None:
        """``VerificationError`` unless ``verifier``'s key signed this request."""
        message = request_message(network_id, method, path, body)
        if verifier.name != self.name or not verifier.verify(message, self.signature):
            raise VerificationError(f"bad request signature by {self.name}")
