"""The one HTTP client of a log: every read and write of its API (spec/api.md), bounded.

``LogClient`` speaks to one log server over HTTP, in the manner of Tessera's ``client`` package
and python-tuf's fetcher: it brings bytes and checks their *form* (a checkpoint parses, an entry
bundle decodes to the entries asked for, a proof has 32-byte hashes, a blob hashes to its name),
but it trusts nothing. Signatures, trust policies and consistency are the caller's to check:
``Policy.verify_checkpoint``, the witness's ``Mirror``, the ``Monitor``. Every answer is read
with a size bound per call, so a hostile log cannot exhaust memory.

Errors say who is at fault (python-tuf's ``DownloadError`` and ``RepositoryError``)::

    OperationalError     the log could not be asked: the network failed or timed out, the log
    │                    answered with a non-2xx status, or its answer exceeded the call's bound
    └── RemoteError      the log answered, but its bytes do not parse or do not check out: bad
                         JSON, an entry bundle that does not decode, a malformed checkpoint or
                         proof, a blob whose SHA-256 is not its name

Both are operational failures for the command line (exit 3): a log that sends garbage is never
the caller's usage error. Example::

    with LogClient("http://127.0.0.1:8080") as log:
        size = log.size()
        leaves = log.leaves(0, size)
        proof = log.consistency_proof(size // 2, size)

This module imports only ``logserver.core`` and ``logserver.blobs``; it never imports the
witness, the builder or the command line.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Iterator, Mapping
from types import TracebackType
from urllib.parse import quote

import httpx

from logserver.blobs import MAX_BLOB, check_name, upload_message
from logserver.core import canonical_json, note, tiles
from logserver.core.checkpoint import Checkpoint
from logserver.core.errors import FormatError, OperationalError, RemoteError
from logserver.core.proof import MAX_PROOF_FILE_BYTES, TlogProof
from logserver.core.tlog import MAX_PROOF_HASHES

HASH_SIZE = 32
MAX_ANSWER = 1 << 20  # JSON answers and checkpoint notes (note.MAX_NOTE_BYTES)
MAX_BUNDLE = tiles.TILE_WIDTH * (2 + tiles.MAX_ENTRY_SIZE)  # 256 entries of 64 KiB, prefixed
MAX_HASH_TILE = tiles.TILE_WIDTH * HASH_SIZE
DEFAULT_TIMEOUT = 10.0
BLOB_SIGNATURE_HEADER = "X-Blob-Signature"


class LogClient:
    """Reads and writes one log over HTTP; safe to share between threads.

    ``timeout`` bounds each network operation in seconds (connect, each read, each write);
    a witness uses 5 s for its reads, a builder 60 s for its uploads.
    """

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        # gzip is the one encoding asked for: _read inflates it within each call's bound.
        self._http = httpx.Client(timeout=timeout, headers={"Accept-Encoding": "gzip"})

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> LogClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    # ----- transport ---------------------------------------------------------------------

    def _exchange(
        self,
        method: str,
        path: str,
        limit: int,
        *,
        params: Mapping[str, int] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """Send one request; return the status and at most ``limit`` bytes of the answer."""
        try:
            with self._http.stream(
                method, self.url + path, params=params, content=content, headers=headers
            ) as r:
                return r.status_code, self._read(r, limit, f"{method} {path}")
        except httpx.HTTPError as e:
            raise OperationalError(f"cannot reach the log at {self.url}: {e}") from e

    def _read(self, r: httpx.Response, limit: int, what: str) -> bytes:
        """The body of ``r``, gunzipped if it came gzipped, never more than ``limit`` bytes
        of it once decoded: a gzip bomb is refused before it is inflated past the bound
        (httpx's own decoding inflates a whole network read, up to ~1000 times its size)."""
        encoding = r.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", "x-gzip"):
            raise self._remote(f"an answer in the {encoding!r} encoding, which was not asked for")
        inflate = None if encoding == "identity" else zlib.decompressobj(wbits=31)
        body = bytearray()
        for raw in r.iter_raw():
            chunk = raw
            if inflate is not None:
                try:
                    chunk = inflate.decompress(raw, limit + 1 - len(body))
                except zlib.error as e:
                    raise self._remote(f"a gzip answer that does not inflate: {e}") from e
            body += chunk
            if len(body) > limit:
                raise OperationalError(f"{what}: the answer is larger than {limit} bytes")
        if inflate is not None and (not inflate.eof or inflate.unused_data):
            raise self._remote("a gzip answer that is truncated or has bytes after its end")
        return bytes(body)

    def _call(
        self,
        method: str,
        path: str,
        limit: int = MAX_ANSWER,
        *,
        ok: tuple[int, ...] = (200,),
        params: Mapping[str, int] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """Like ``_exchange``, but any status outside ``ok`` is an OperationalError."""
        status, body = self._exchange(
            method, path, limit, params=params, content=content, headers=headers
        )
        if status not in ok:
            raise OperationalError(f"{method} {path}: the log answered {status}: {_excerpt(body)}")
        return body

    def _remote(self, reason: str) -> RemoteError:
        return RemoteError(f"the log at {self.url}", reason)

    def _json(self, body: bytes, what: str) -> dict[str, object]:
        try:
            value = canonical_json.parse(body, what, max_bytes=MAX_ANSWER)
        except FormatError as e:  # also nesting too deep to parse
            raise self._remote(f"{what} that is not JSON: {e}") from e
        if not isinstance(value, dict):
            raise self._remote(f"{what} that is not a JSON object")
        return value

    def _integer(self, body: dict[str, object], key: str, what: str) -> int:
        value = body.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self._remote(f"{what} without a non-negative integer {key!r}")
        return value

    def _checked_note(self, body: bytes, what: str) -> bytes:
        try:
            text, _ = note.split_note(body)
            Checkpoint.parse(text)
        except FormatError as e:
            raise self._remote(f"{what} that does not parse: {e}") from e
        return body

    # ----- checkpoints -------------------------------------------------------------------

    def checkpoint(self) -> bytes:
        """The published checkpoint note (``GET /checkpoint``), well-formed but unverified."""
        return self._checked_note(self._call("GET", "/checkpoint"), "a checkpoint")

    def latest_checkpoint(self, after: int = 0, wait_ms: int = 0) -> bytes | None:
        """The newest checkpoint the log signed, witnessed or not (``GET /latest-checkpoint``).

        The log waits up to ``wait_ms`` for a tree larger than ``after``. None when the log has
        none to give (any status but 200).
        """
        status, body = self._exchange(
            "GET", "/latest-checkpoint", MAX_ANSWER, params={"after": after, "wait_ms": wait_ms}
        )
        if status != 200:
            return None
        return self._checked_note(body, "a latest checkpoint")

    def size(self) -> int:
        """The number of entries the log holds, sequenced but maybe not published (``/readyz``)."""
        body = self._json(self._call("GET", "/readyz"), "a readiness answer")
        return self._integer(body, "size", "a readiness answer")

    # ----- tiles and entries -------------------------------------------------------------

    def tile(self, tile: tiles.Tile) -> bytes:
        """The raw bytes of a hash tile or an entry bundle (``GET /tile/...``).

        A hash tile must hold exactly its width of hashes; an entry bundle is returned as sent
        (``entry_bundle`` decodes it).
        """
        if tile.is_entries:
            return self._call("GET", "/" + tile.path, MAX_BUNDLE)
        data = self._call("GET", "/" + tile.path, MAX_HASH_TILE)
        if len(data) != tile.width * HASH_SIZE:
            raise self._remote(f"a tile {tile.path} of {len(data)} bytes")
        return data

    def entry_bundle(self, bundle: tiles.Tile) -> list[bytes]:
        """The entries of an entry bundle, strictly decoded: exactly ``bundle.width`` of them."""
        data = self.tile(bundle)
        try:
            return tiles.decode_entry_bundle(data, bundle.width)
        except FormatError as e:
            raise self._remote(f"an entry bundle {bundle.path} that does not decode: {e}") from e

    def iter_leaves(self, start: int, end: int) -> Iterator[bytes]:
        """Entries ``start``..``end``-1 as raw bytes, fetched bundle by bundle as consumed."""
        for bundle, skip in tiles.entry_bundle_plan(start, end):
            yield from self.entry_bundle(bundle)[skip:]

    def leaves(self, start: int, end: int) -> list[bytes]:
        """Entries ``start``..``end``-1 as raw bytes, read through the entry bundles."""
        return list(self.iter_leaves(start, end))

    def entry(self, index: int) -> bytes:
        """One entry's raw bytes (``GET /entry/<I>``, a convenience; bundles are normative)."""
        return self._call("GET", f"/entry/{index}", MAX_BUNDLE)

    # ----- proofs ------------------------------------------------------------------------

    def _hashes(self, body: bytes, what: str) -> list[bytes]:
        hashes = self._json(body, what).get("hashes")
        if not isinstance(hashes, list) or len(hashes) > MAX_PROOF_HASHES:
            raise self._remote(f"{what} without a list of at most {MAX_PROOF_HASHES} hashes")
        out = []
        for h in hashes:
            try:
                decoded = base64.b64decode(h, validate=True)
            except (ValueError, TypeError) as e:
                raise self._remote(f"{what} with a hash that is not base64: {e}") from e
            if len(decoded) != HASH_SIZE:
                raise self._remote(f"{what} with a hash of {len(decoded)} bytes")
            out.append(decoded)
        return out

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """The hashes proving entry ``index`` in the tree of ``size`` entries."""
        body = self._call("GET", "/proof/inclusion", params={"index": index, "size": size})
        return self._hashes(body, "an inclusion proof")

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """The hashes proving the tree of ``old`` entries is a prefix of the tree of ``new``."""
        body = self._call("GET", "/proof/consistency", params={"old": old, "new": new})
        return self._hashes(body, "a consistency proof")

    def tlog_proof(self, index: int) -> bytes:
        """A c2sp.org/tlog-proof@v1 file for entry ``index``, well-formed but unverified."""
        body = self._call("GET", "/proof/tlog", MAX_PROOF_FILE_BYTES, params={"index": index})
        try:
            TlogProof.parse(body)
        except FormatError as e:
            raise self._remote(f"a proof file that does not parse: {e}") from e
        return body

    # ----- blobs -------------------------------------------------------------------------

    def blob(self, name: str) -> bytes:
        """The blob whose SHA-256 is ``name`` (``GET /blob/<sha256>``), checked against it."""
        check_name(name)
        data = self._call("GET", f"/blob/{name}", MAX_BLOB)
        if hashlib.sha256(data).hexdigest() != name:
            raise self._remote(f"a blob whose SHA-256 is not {name}")
        return data

    def put_blob(self, data: bytes, signer: note.NoteSigner | None = None) -> str:
        """Store ``data`` in the log's blob store; return its name, the hex SHA-256.

        A network log accepts only uploads signed by a builder: give its ``signer``, and the
        ``X-Blob-Signature`` header carries its signature over the blob's upload message.
        """
        name = hashlib.sha256(data).hexdigest()
        headers: dict[str, str] = {}
        if signer is not None:
            signature = base64.b64encode(signer.sign(upload_message(name))).decode()
            headers[BLOB_SIGNATURE_HEADER] = f"{signer.name} {signature}"
        self._call("PUT", f"/blob/{name}", ok=(200, 201), content=data, headers=headers)
        return name

    # ----- the crate index ----------------------------------------------------------------

    def crate_index(
        self, name: str, version: str | None = None, size: int | None = None
    ) -> dict[str, object] | None:
        """The log's index of a crate's verdicts (``GET /crates/<name>[/<version>]``, at the
        published size or at ``size``) as a JSON object, unverified; None when the log has no
        verdict for it (404). ``name`` and ``version`` must be valid (``crate_index``)."""
        path = "/crates/" + quote(name, safe="")
        if version is not None:
            path += "/" + quote(version, safe="")
        params = None if size is None else {"size": size}
        status, body = self._exchange("GET", path, MAX_ANSWER, params=params)
        if status == 404:
            return None
        if status != 200:
            raise OperationalError(f"GET {path}: the log answered {status}: {_excerpt(body)}")
        return self._json(body, "a crate index answer")

    # ----- writes ------------------------------------------------------------------------

    def add_entry(self, entry: bytes) -> int:
        """Append one raw entry (``POST /add-entry``); return its index once it is durable."""
        body = self._json(self._call("POST", "/add-entry", content=entry), "an add-entry answer")
        return self._integer(body, "index", "an add-entry answer")

    def send_cosignature(self, cosigned: bytes) -> None:
        """Deliver a witness's cosigned checkpoint (``POST /cosignature``)."""
        self._call("POST", "/cosignature", content=cosigned)


def _excerpt(body: bytes) -> str:
    """A short, one-line excerpt of an error answer for a message."""
    text = " ".join(body[:300].decode("utf-8", "replace").split())
    return "".join(c for c in text if c.isprintable())[:200]
