"""Environment archives: a root file system or a toolchain as a canonical tar, and its chunk index.

The **canonical archive** of a tree (spec/builds.md section 10) holds every entry of the tree in
the order of :mod:`builder.fstree` (relative paths sorted by their UTF-8 bytes), each as one
ustar header, preceded by a pax header (``path``, ``linkpath``) only when the path or link
target is not ASCII or longer than 100 bytes; every mtime 315532800, numeric owners, no user or
group names; file data padded to 512 bytes; then two zero blocks and zeros up to a multiple of
10,240 bytes. A toolchain is archived with the owners :func:`builder.fstree.walk` records with
``owners=False`` (uid and gid 0, modes 0755 or 0644), the root file system with its own.

So the archive's bytes are a function of the tree alone: two hosts holding one tree write the
same archive, the same :class:`ArchiveIndex` (its SHA-256 of 32 MiB chunks), and the same
*archive digest*, the SHA-256 of that index, which a recipe pins to find the archive in a store
of content-addressed blobs.

Reading is strict. :func:`read_archive` parses a stream and re-encodes every header it read,
requiring the very same bytes; :class:`Encoder` (which writes archives) checks that paths
increase, that each parent is a directory listed before, and only directories, regular files
and symbolic links occur. An archive is therefore accepted only if it is the canonical archive
of some tree, whose digest (section 7) the encoder computes while the bytes stream past.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from builder import fstree
from builder.fstree import TreeEntry
from logserver.core import canonical_json
from logserver.core.errors import FormatError

KIND_ROOTFS = "rootfs"
KIND_TOOLCHAIN = "toolchain"
KINDS = (KIND_ROOTFS, KIND_TOOLCHAIN)
INDEX_SCHEMA = "synchronicity/env-archive/v1"
FIXED_MTIME = 315532800  # builder.image.FIXED_EPOCH: 1980-01-01T00:00:00Z
CHUNK_BYTES = 32 << 20  # a chunk is one blob of the log's store (at most 64 MiB)
MAX_ARCHIVE_BYTES = 16 << 30
MAX_ENTRIES = 1_000_000
GZIP_LEVEL = 6
_BLOCK = 512
_RECORD = 20 * _BLOCK
_READ = 1 << 20
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_TYPES = {"f": b"0", "d": b"5", "l": b"2"}
_KIND_OF_TYPE = {value: key for key, value in _TYPES.items()}

Entry = tuple[TreeEntry, Iterable[bytes]]  # a tree entry (sha256 not yet known) and its data


class Readable(Protocol):
    """A source of bytes: ``read(n)`` returns up to n bytes, b"" at the end."""

    def read(self, size: int = -1, /) -> bytes: ...


def _bad(reason: str) -> FormatError:
    return FormatError("environment archive", reason)


def archive_name(kind: str, tree_sha256: str, *, compressed: bool = True) -> str:
    """The file name of an archive in an export directory or under a URL."""
    if kind not in KINDS or _SHA256_HEX.fullmatch(tree_sha256) is None:
        raise _bad(f"no archive name for {kind!r} {tree_sha256!r}")
    return f"{kind}-{tree_sha256}.tar" + (".gz" if compressed else "")


# ----- headers ---------------------------------------------------------------------------


def _octal(value: int, width: int) -> bytes:
    text = b"%0*o" % (width - 1, value)
    if len(text) != width - 1:
        raise _bad(f"{value} does not fit a {width}-byte tar field")
    return text + b"\0"


def _fits(name: bytes) -> bool:
    return len(name) <= 100 and name.isascii()


def _ustar(
    name: bytes, typeflag: bytes, mode: int, uid: int, gid: int, size: int, link: bytes
) -> bytes:
    header = bytearray(_BLOCK)
    header[0 : len(name)] = name
    header[100:108] = _octal(mode, 8)
    header[108:116] = _octal(uid, 8)
    header[116:124] = _octal(gid, 8)
    header[124:136] = _octal(size, 12)
    header[136:148] = _octal(FIXED_MTIME, 12)
    header[148:156] = b" " * 8
    header[156:157] = typeflag
    header[157 : 157 + len(link)] = link
    header[257:265] = b"ustar\x0000"
    header[329:337] = _octal(0, 8)
    header[337:345] = _octal(0, 8)
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def _record(key: bytes, value: bytes) -> bytes:
    """One pax record, ``<length> <key>=<value>\\n``, the length counting itself."""
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(body) + len(str(length)) != length:
        length = len(body) + len(str(length))
    return str(length).encode() + body


def _padding(size: int) -> bytes:
    return b"\0" * (-size % _BLOCK)


def encode_header(entry: TreeEntry) -> bytes:
    """The header bytes of one entry in a canonical archive (a pax header only if needed)."""
    path = entry.path.encode("utf-8")
    link = entry.link_target.encode("utf-8")
    size = entry.size if entry.kind == "f" else 0
    prefix = b""
    if not _fits(path) or (entry.kind == "l" and not _fits(link)):
        records = _record(b"path", path)
        if entry.kind == "l":
            records += _record(b"linkpath", link)
        prefix = _ustar(b"././@PaxHeader", b"x", 0o644, 0, 0, len(records), b"")
        prefix += records + _padding(len(records))
    typeflag = _TYPES[entry.kind]
    return prefix + _ustar(path[:100], typeflag, entry.mode, entry.uid, entry.gid, size, link[:100])


def _check_path(path: str) -> None:
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts) or "\0" in path or "\n" in path:
        raise _bad(f"path {path!r} is not a plain relative path")


# ----- writing ---------------------------------------------------------------------------


class Encoder:
    """Encodes entries as a canonical archive, checking them and computing the tree digest.

    ``prefix`` (e.g. ``opt/rust``) places the tree under a directory of that name (its own
    entry first) for ``docker`` to unpack; the digest is always that of the tree itself.
    ``tree_sha256`` and ``size`` are set once :meth:`encode` has been consumed to its end.
    """

    def __init__(self, kind: str, *, prefix: str = "") -> None:
        if kind not in KINDS:
            raise _bad(f"unknown archive kind {kind!r}")
        if prefix:
            _check_path(prefix)
        self.kind = kind
        self.prefix = prefix
        self.tree_sha256: str | None = None
        self.size = 0
        self.entries = 0
        self._digest = hashlib.sha256()
        self._previous = b""
        self._directories: set[str] = set()

    def _check(self, entry: TreeEntry) -> None:
        _check_path(entry.path)
        encoded = entry.path.encode("utf-8")
        if self.entries and encoded <= self._previous:
            raise _bad(f"{entry.path!r} is out of order or listed twice")
        parent, _, _ = entry.path.rpartition("/")
        if parent and parent not in self._directories:
            raise _bad(f"the parent of {entry.path!r} is not a directory listed before it")
        if entry.kind not in _TYPES:
            raise _bad(f"{entry.path!r} is not a directory, regular file or symbolic link")
        if entry.kind == "l" and entry.mode != 0o777:
            raise _bad(f"symbolic link {entry.path!r} has mode {entry.mode:o}, not 777")
        if not 0 <= entry.mode <= 0o7777:
            raise _bad(f"{entry.path!r} has mode {entry.mode:o}")
        if entry.kind == "l" and (not entry.link_target or "\0" in entry.link_target):
            raise _bad(f"symbolic link {entry.path!r} has no usable target")
        if self.kind == KIND_TOOLCHAIN:
            allowed = {"d": (0o755,), "f": (0o755, 0o644), "l": (0o777,)}[entry.kind]
            if entry.uid or entry.gid or entry.mode not in allowed:
                raise _bad(f"toolchain entry {entry.path!r} is not owned by 0:0 with mode 755/644")
        self.entries += 1
        if self.entries > MAX_ENTRIES:
            raise _bad(f"more than {MAX_ENTRIES} entries")
        self._previous = encoded
        if entry.kind == "d":
            self._directories.add(entry.path)

    def _placed(self, entry: TreeEntry) -> TreeEntry:
        if not self.prefix:
            return entry
        return dataclasses.replace(entry, path=f"{self.prefix}/{entry.path}")

    def _emit(self, data: bytes) -> bytes:
        self.size += len(data)
        if self.size > MAX_ARCHIVE_BYTES:
            raise _bad(f"larger than {MAX_ARCHIVE_BYTES} bytes")
        return data

    def encode(self, entries: Iterable[Entry], *, end: bool = True) -> Iterator[bytes]:
        """The archive's bytes, in pieces; a FormatError on anything not canonical.

        With ``end=False`` the trailer is left out (more entries follow in the same tar).
        """
        if self.prefix:
            yield self._emit(encode_header(TreeEntry(self.prefix, "d", 0o755, 0, 0, 0, "", "")))
        for entry, data in entries:
            self._check(entry)
            yield self._emit(encode_header(self._placed(entry)))
            digest = hashlib.sha256()
            written = 0
            for piece in data:
                digest.update(piece)
                written += len(piece)
                if written > entry.size:
                    break
                yield self._emit(piece)
            if entry.kind == "f":
                if written != entry.size:
                    raise _bad(f"{entry.path!r} has {written} bytes, not {entry.size}")
                yield self._emit(_padding(written))
            sha = digest.hexdigest() if entry.kind == "f" else ""
            self._digest.update(dataclasses.replace(entry, sha256=sha).line())
        if end:
            last = self.size + 2 * _BLOCK
            yield self._emit(b"\0" * (math.ceil(last / _RECORD) * _RECORD - self.size))
        self.tree_sha256 = self._digest.hexdigest()


def _file_pieces(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while piece := handle.read(_READ):
            yield piece


def tree_entries(root: Path, kind: str) -> Iterator[Entry]:
    """The entries of a directory tree, with owners as the archive of ``kind`` records them."""
    for entry in fstree.walk(root, owners=kind == KIND_ROOTFS, hash_files=False):
        yield entry, (_file_pieces(root / entry.path) if entry.kind == "f" else ())


# ----- reading ---------------------------------------------------------------------------


class _Reader:
    """Exact reads from a stream, counting bytes."""

    def __init__(self, stream: Readable) -> None:
        self.stream = stream
        self.offset = 0

    def read(self, size: int) -> bytes:
        parts: list[bytes] = []
        wanted = size
        while wanted:
            piece = self.stream.read(min(wanted, _READ))
            if not piece:
                break
            parts.append(piece)
            wanted -= len(piece)
        data = b"".join(parts)
        self.offset += len(data)
        return data

    def exactly(self, size: int, what: str) -> bytes:
        data = self.read(size)
        if len(data) != size:
            raise _bad(f"the archive ends inside {what}")
        return data


def _field_octal(field: bytes, what: str) -> int:
    text = field.rstrip(b"\0 ")
    if not text or any(c not in b"01234567" for c in text):
        raise _bad(f"the {what} field {field!r} is not an octal number")
    return int(text, 8)


def _field_name(field: bytes) -> bytes:
    return field.split(b"\0", 1)[0]


def _pax_records(data: bytes) -> dict[bytes, bytes]:
    records: dict[bytes, bytes] = {}
    position = 0
    while position < len(data):
        length_text, space, _ = data[position : position + 21].partition(b" ")
        if not space or not length_text.isdigit():
            raise _bad("a malformed pax record")
        record = data[position : position + int(length_text)]
        if len(record) != int(length_text) or not record.endswith(b"\n") or b"=" not in record:
            raise _bad("a malformed pax record")
        key, _, value = record[len(length_text) + 1 : -1].partition(b"=")
        records[key] = value
        position += len(record)
    return records


def _decode(name: bytes) -> str:
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"the name {name!r} is not UTF-8") from exc


def read_archive(stream: Readable) -> Iterator[Entry]:
    """Parse a canonical archive into entries; their data must be consumed in order.

    Every header is re-encoded and compared with the bytes read, and the end must be exactly
    the canonical trailer followed by the end of the stream. Feed the entries to an
    :class:`Encoder` to check them further and compute the tree digest.
    """
    reader = _Reader(stream)
    while True:
        start = reader.offset
        block = reader.exactly(_BLOCK, "a header")
        if block == b"\0" * _BLOCK:
            break
        raw = block
        records: dict[bytes, bytes] = {}
        if block[156:157] == b"x":
            length = _field_octal(block[124:136], "size")
            if length > 1 << 20:
                raise _bad("a pax header larger than 1 MiB")
            data = reader.exactly(length + len(_padding(length)), "a pax header")
            records = _pax_records(data[:length])
            block = reader.exactly(_BLOCK, "a header")
            raw += data + block
        kind = _KIND_OF_TYPE.get(block[156:157])
        if kind is None:
            raise _bad(f"an entry of tar type {block[156:157]!r} at offset {start}")
        path = _decode(records.get(b"path", _field_name(block[0:100])))
        link = _decode(records.get(b"linkpath", _field_name(block[157:257])))
        size = _field_octal(block[124:136], "size")
        entry = TreeEntry(
            path=path,
            kind=kind,
            mode=_field_octal(block[100:108], "mode"),
            uid=_field_octal(block[108:116], "uid"),
            gid=_field_octal(block[116:124], "gid"),
            size=size if kind == "f" else 0,
            sha256="",
            link_target=link if kind == "l" else "",
        )
        if encode_header(entry) != raw:
            raise _bad(f"the header of {path!r} at offset {start} is not canonical")
        yield entry, _data(reader, entry.size)
    end = reader.offset - _BLOCK
    tail = reader.read(math.ceil((end + 2 * _BLOCK) / _RECORD) * _RECORD - reader.offset + 1)
    if tail.rstrip(b"\0") or reader.offset != math.ceil((end + 2 * _BLOCK) / _RECORD) * _RECORD:
        raise _bad("the archive does not end with its canonical trailer")


def _data(reader: _Reader, size: int) -> Iterator[bytes]:
    left = size
    while left:
        piece = reader.exactly(min(left, _READ), "a file")
        left -= len(piece)
        yield piece
    if reader.exactly(len(_padding(size)), "padding").strip(b"\0"):
        raise _bad("file padding that is not zeros")


# ----- hashing and chunking --------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveIndex:
    """How an archive is cut into blobs: its kind, tree digest, size, SHA-256 and chunks of
    ``CHUNK_BYTES`` (32 MiB; the last one shorter).

    Its canonical JSON (``to_json``) is stored as a blob of its own; ``digest``, the SHA-256 of
    those bytes, is the *archive digest* a recipe pins: a function of the archive alone.
    """

    kind: str
    tree_sha256: str
    size: int
    sha256: str
    chunks: tuple[str, ...]
    chunk_bytes: int = CHUNK_BYTES

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise _bad(f"unknown archive kind {self.kind!r}")
        for digest in (self.tree_sha256, self.sha256, *self.chunks):
            if not isinstance(digest, str) or _SHA256_HEX.fullmatch(digest) is None:
                raise _bad("a digest in the index is not 64 lowercase hex digits")
        if self.chunk_bytes != CHUNK_BYTES:  # one archive has one index, one archive digest
            raise _bad(f"chunk_bytes must be {CHUNK_BYTES}")
        if not 0 < self.size <= MAX_ARCHIVE_BYTES:
            raise _bad("an archive size out of range")
        if len(self.chunks) != math.ceil(self.size / self.chunk_bytes):
            raise _bad("the chunks do not cover the archive's size")

    def to_json(self) -> bytes:
        return canonical_json.encode(
            {
                "chunk_bytes": self.chunk_bytes,
                "chunks": list(self.chunks),
                "kind": self.kind,
                "schema": INDEX_SCHEMA,
                "sha256": self.sha256,
                "size": self.size,
                "tree_sha256": self.tree_sha256,
            },
            "archive index",
        )

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_json()).hexdigest()

    def chunk_size(self, number: int) -> int:
        return min(self.chunk_bytes, self.size - number * self.chunk_bytes)

    @classmethod
    def from_json(cls, data: bytes) -> ArchiveIndex:
        value = canonical_json.decode(data, "archive index", max_bytes=1 << 20)
        keys = {"chunk_bytes", "chunks", "kind", "schema", "sha256", "size", "tree_sha256"}
        if not isinstance(value, dict) or set(value) != keys:
            raise _bad(f"an archive index has exactly the members {sorted(keys)}")
        if value["schema"] != INDEX_SCHEMA or not isinstance(value["chunks"], list):
            raise _bad(f"an archive index of schema {INDEX_SCHEMA} lists its chunks")
        for key in ("chunk_bytes", "size"):
            if not isinstance(value[key], int) or isinstance(value[key], bool):
                raise _bad(f"{key} must be an integer")
        return cls(
            kind=value["kind"],
            tree_sha256=value["tree_sha256"],
            size=value["size"],
            sha256=value["sha256"],
            chunks=tuple(value["chunks"]),
            chunk_bytes=value["chunk_bytes"],
        )


class ArchiveHasher:
    """The SHA-256, size and chunk digests of a byte stream, fed in pieces."""

    def __init__(self) -> None:
        self.chunk_bytes = CHUNK_BYTES
        self.size = 0
        self._total = hashlib.sha256()
        self._chunk = hashlib.sha256()
        self._chunk_size = 0
        self._chunks: list[str] = []

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            part = view[: self.chunk_bytes - self._chunk_size]
            self._chunk.update(part)
            self._total.update(part)
            self._chunk_size += len(part)
            self.size += len(part)
            view = view[len(part) :]
            if self._chunk_size == self.chunk_bytes:
                self._chunks.append(self._chunk.hexdigest())
                self._chunk, self._chunk_size = hashlib.sha256(), 0

    def index(self, kind: str, tree_sha256: str) -> ArchiveIndex:
        chunks = self._chunks + ([self._chunk.hexdigest()] if self._chunk_size else [])
        return ArchiveIndex(
            kind=kind,
            tree_sha256=tree_sha256,
            size=self.size,
            sha256=self._total.hexdigest(),
            chunks=tuple(chunks),
            chunk_bytes=self.chunk_bytes,
        )


class HashingReader:
    """Reads from ``stream``, hashing what passes and copying it to ``sink`` (if any)."""

    def __init__(self, stream: Readable, sink: BinaryIO | None = None) -> None:
        self.stream = stream
        self.sink = sink
        self.hasher = ArchiveHasher()

    def read(self, size: int = -1, /) -> bytes:
        data = self.stream.read(size)
        self.hasher.update(data)
        if self.sink is not None:
            self.sink.write(data)
        return data


# ----- compression -----------------------------------------------------------------------


def gzip_pieces(pieces: Iterable[bytes], level: int = GZIP_LEVEL) -> Iterator[bytes]:
    """gzip (one member, mtime 0, no name): the same bytes for the same input and zlib."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31, 9)
    for piece in pieces:
        out = compressor.compress(piece)
        if out:
            yield out
    yield compressor.flush()


class GunzipReader:
    """A readable stream of the decompressed bytes of one gzip member read from ``stream``.

    A corrupt stream (a bad CRC or length, an early end, data after the member) is a
    FormatError. Output is produced in bounded steps, so a small input cannot fill memory.
    """

    def __init__(self, stream: Readable) -> None:
        self.stream = stream
        self._inflater = zlib.decompressobj(31)
        self._buffer = memoryview(b"")
        self._done = False

    def _fill(self) -> None:
        try:
            if self._inflater.eof:
                if self._inflater.unused_data or self.stream.read(1):
                    raise _bad("data after the end of the gzip stream")
                self._done = True
                return
            data = self._inflater.unconsumed_tail or self.stream.read(_READ)
            if not data:
                raise _bad("the gzip stream ends early")
            self._buffer = memoryview(self._inflater.decompress(data, 4 * _READ))
        except zlib.error as exc:
            raise _bad(f"the gzip stream is corrupt: {exc}") from exc

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:
            return b"".join(iter(lambda: self.read(_READ), b""))
        while not self._buffer and not self._done:
            self._fill()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return bytes(data)


@dataclass(frozen=True)
class VerifiedArchive:
    """What reading an archive found: its index (with the tree digest) and captured files."""

    index: ArchiveIndex
    captured: dict[str, bytes]


def verify_archive(
    stream: Readable,
    kind: str,
    *,
    sink: BinaryIO | None = None,
    capture: Iterable[str] = (),
    check: Callable[[], None] | None = None,
) -> VerifiedArchive:
    """Read a whole canonical archive of ``kind`` from ``stream`` (uncompressed), copying it
    to ``sink``; return its index (the tree digest computed from the stream) and the bytes of
    the small files named in ``capture`` (at most 4 MiB each). ``check`` is called between
    pieces (a deadline). Anything not canonical is a FormatError."""
    wanted = set(capture)
    captured: dict[str, bytes] = {}
    hashing = HashingReader(stream, sink)

    def watched(entries: Iterable[Entry]) -> Iterator[Entry]:
        for entry, data in entries:
            if entry.path in wanted and entry.kind == "f" and entry.size <= 4 << 20:
                content = b"".join(data)
                captured[entry.path] = content
                yield entry, (content,)
            else:
                yield entry, data

    encoder = Encoder(kind)
    for _ in encoder.encode(watched(read_archive(hashing))):
        if check is not None:
            check()
    assert encoder.tree_sha256 is not None
    if hashing.read(1):
        raise _bad("data after the archive's end")
    return VerifiedArchive(hashing.hasher.index(kind, encoder.tree_sha256), captured)
