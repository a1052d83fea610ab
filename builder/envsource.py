"""Where a builder obtains the environment archives it lacks, and how it checks them first.

A **source** hands out the canonical archive (:mod:`builder.envarchive`) of a tree it holds:

- :class:`DirectorySource`: a directory as ``synchronicity image export`` writes it, holding
  ``<kind>-<tree sha256>.tar.gz`` (or ``.tar``);
- :class:`UrlSource`: the same layout under an ``http://`` or ``https://`` URL (any static web
  server, e.g. ``python -m http.server`` in an export directory, or a peer's);
- :class:`BlobSource`: a store of content-addressed blobs, such as the network log's (blobs of
  at most 64 MiB): the archive is found by its *archive digest*, the name of its
  :class:`~builder.envarchive.ArchiveIndex` blob, which lists the chunks, each a blob.

:func:`fetch_archive` tries the sources in order and keeps the first archive that verifies:
the stream is decompressed, parsed strictly, its tree digest recomputed and, when the recipe
names one, its archive digest too; the bytes go to a temporary file that becomes the cached
archive only after every check passed. Nothing unverified is ever used. When no source has a
good archive in time, :class:`EnvironmentUnavailable` names what each source answered.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from builder.envarchive import (
    ArchiveIndex,
    GunzipReader,
    Readable,
    VerifiedArchive,
    archive_name,
    verify_archive,
)
from logserver.core.errors import FormatError, OperationalError, UsageError, VerificationError

Progress = Callable[[str], None]
_READ = 1 << 20


class EnvironmentUnavailable(OperationalError):
    """No source gave a verified archive of the environment in time (``reason`` says why)."""


class SourceMiss(OperationalError):
    """A source does not hold the archive asked for."""


class EnvironmentSource(Protocol):
    """A place that may hold environment archives."""

    def describe(self) -> str: ...

    def open(
        self, kind: str, tree_sha256: str, archive_sha256: str | None
    ) -> contextlib.AbstractContextManager[tuple[Readable, bool]]:
        """The archive's bytes and whether they are gzip-compressed; SourceMiss if absent."""
        ...


@dataclass(frozen=True)
class DirectorySource:
    """An export directory: ``<kind>-<tree sha256>.tar.gz`` or ``.tar``."""

    path: Path

    def describe(self) -> str:
        return f"directory {self.path}"

    @contextlib.contextmanager
    def open(
        self, kind: str, tree_sha256: str, archive_sha256: str | None
    ) -> Iterator[tuple[Readable, bool]]:
        del archive_sha256
        for compressed in (True, False):
            path = self.path / archive_name(kind, tree_sha256, compressed=compressed)
            if path.is_file():
                with path.open("rb") as handle:
                    yield handle, compressed
                return
        raise SourceMiss(f"no {archive_name(kind, tree_sha256)} in {self.path}")


@dataclass(frozen=True)
class UrlSource:
    """The layout of an export directory under an HTTP(S) URL."""

    url: str
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise UsageError(f"{self.url!r} is not an http(s) URL")

    def describe(self) -> str:
        return self.url

    @contextlib.contextmanager
    def open(
        self, kind: str, tree_sha256: str, archive_sha256: str | None
    ) -> Iterator[tuple[Readable, bool]]:
        del archive_sha256
        for compressed in (True, False):
            url = f"{self.url.rstrip('/')}/{archive_name(kind, tree_sha256, compressed=compressed)}"
            request = urllib.request.Request(url, headers={"User-Agent": "synchronicity"})  # noqa: S310
            try:
                response = urllib.request.urlopen(request, timeout=self.timeout)  # noqa: S310
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code == 404:
                    continue
                raise OperationalError(f"GET {url}: HTTP {exc.code}") from exc
            except (urllib.error.URLError, OSError) as exc:
                raise OperationalError(f"GET {url}: {exc}") from exc
            with response:
                yield response, compressed
            return
        raise SourceMiss(f"{self.url} has no {archive_name(kind, tree_sha256)}")


class _Chunks:
    """A readable stream over the chunks of an index, each fetched and checked in turn (one
    chunk in memory; reads return slices of it without copying what is left)."""

    def __init__(self, index: ArchiveIndex, fetch: Callable[[str], bytes]) -> None:
        self.index = index
        self.fetch = fetch
        self.number = 0
        self.current = memoryview(b"")

    def _next(self) -> bool:
        if self.number == len(self.index.chunks):
            return False
        name = self.index.chunks[self.number]
        data = self.fetch(name)
        if hashlib.sha256(data).hexdigest() != name:
            raise VerificationError(f"chunk {self.number} is not the blob {name}")
        if len(data) != self.index.chunk_size(self.number):
            raise VerificationError(f"chunk {self.number} has {len(data)} bytes")
        self.current = memoryview(data)
        self.number += 1
        return True

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:
            return b"".join(iter(lambda: self.read(_READ), b""))
        if not self.current and not self._next():
            return b""
        data, self.current = self.current[:size], self.current[size:]
        return bytes(data)


@dataclass(frozen=True)
class BlobSource:
    """A content-addressed blob store (the network log's): ``fetch(sha256)`` returns a blob.

    The archive is found by its archive digest only (an older recipe without one cannot use a
    blob store); ``fetch`` raises SourceMiss, or any OperationalError, when a blob is absent.
    """

    fetch: Callable[[str], bytes]
    name: str = "the log's blob store"

    def describe(self) -> str:
        return self.name

    @contextlib.contextmanager
    def open(
        self, kind: str, tree_sha256: str, archive_sha256: str | None
    ) -> Iterator[tuple[Readable, bool]]:
        if archive_sha256 is None:
            raise SourceMiss("the recipe names no archive digest to look up in a blob store")
        data = self.fetch(archive_sha256)
        if hashlib.sha256(data).hexdigest() != archive_sha256:
            raise VerificationError(f"the blob {archive_sha256} is not the archive index asked")
        index = ArchiveIndex.from_json(data)
        if (index.kind, index.tree_sha256) != (kind, tree_sha256):
            raise VerificationError(f"the index {archive_sha256} is not of {kind} {tree_sha256}")
        yield _Chunks(index, self.fetch), False


def parse_source(text: str) -> EnvironmentSource:
    """``--env-source``: an ``http(s)://`` URL, else a directory."""
    if text.startswith(("http://", "https://")):
        return UrlSource(text)
    return DirectorySource(Path(text))


class _Deadline:
    """Raises EnvironmentUnavailable once ``at`` (monotonic seconds) has passed."""

    def __init__(self, at: float, what: str) -> None:
        self.at = at
        self.what = what

    def check(self) -> None:
        if time.monotonic() > self.at:
            raise EnvironmentUnavailable(f"{self.what}: not obtained in time")


class _Watched:
    """A stream whose reads check a deadline."""

    def __init__(self, stream: Readable, deadline: _Deadline) -> None:
        self.stream = stream
        self.deadline = deadline

    def read(self, size: int = -1, /) -> bytes:
        self.deadline.check()
        return self.stream.read(size)


def fetch_archive(
    kind: str,
    tree_sha256: str,
    archive_sha256: str | None,
    sources: tuple[EnvironmentSource, ...],
    dest: Path,
    *,
    deadline: float,
    capture: tuple[str, ...] = (),
    progress: Progress,
) -> VerifiedArchive:
    """Fetch the archive of ``kind`` whose tree digest is ``tree_sha256`` into ``dest``.

    Each source in turn: the bytes are verified (canonical, tree digest, archive digest when
    given) while they are written to a temporary file, renamed to ``dest`` only if they pass.
    A source that lacks the archive, fails, or sends a bad one is skipped (and said); if none
    succeeds, or ``deadline`` (monotonic seconds) passes, EnvironmentUnavailable.
    """
    what = f"the {kind} {tree_sha256[:16]}"
    clock = _Deadline(deadline, what)
    failures: list[str] = []
    dest.parent.mkdir(parents=True, exist_ok=True)
    for source in sources:
        clock.check()
        partial = dest.with_name(f".{dest.name}.{os.getpid()}-{threading.get_ident()}.part")
        started = time.monotonic()
        try:
            with source.open(kind, tree_sha256, archive_sha256) as (stream, compressed):
                progress(f"fetching {what} from {source.describe()}")
                raw: Readable = _Watched(stream, clock)
                plain = GunzipReader(raw) if compressed else raw
                with partial.open("wb") as sink:
                    verified = verify_archive(plain, kind, sink=sink, capture=capture)
                    sink.flush()
                    os.fsync(sink.fileno())
            _check(verified, kind, tree_sha256, archive_sha256)
        except SourceMiss as exc:
            partial.unlink(missing_ok=True)
            failures.append(f"{source.describe()}: {exc}")
            continue
        except EnvironmentUnavailable:
            partial.unlink(missing_ok=True)
            raise
        except (OperationalError, FormatError, VerificationError, OSError) as exc:
            partial.unlink(missing_ok=True)
            failures.append(f"{source.describe()}: {exc}")
            progress(f"{source.describe()} gave no good archive of {what}: {exc}")
            continue
        os.replace(partial, dest)
        seconds = time.monotonic() - started
        progress(f"{what} verified: {verified.index.size >> 20} MiB in {seconds:.1f}s")
        return verified
    tried = "; ".join(failures) or "no source configured"
    raise EnvironmentUnavailable(f"no source has {what} ({tried})")


def _check(verified: VerifiedArchive, kind: str, tree: str, archive: str | None) -> None:
    if verified.index.tree_sha256 != tree:
        raise VerificationError(
            f"the archive holds the {kind} {verified.index.tree_sha256}, not {tree}"
        )
    if archive is not None and verified.index.digest != archive:
        raise VerificationError(
            f"the archive's digest is {verified.index.digest}, the recipe's {archive}"
        )
