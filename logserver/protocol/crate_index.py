"""The index of verdicts by crate name and version: a pure fold of a protocol log's leaves.

For each crate (the recipe's ``name``) and version, the verdicts in log order: the verdict's
leaf index, its outcome, the job id, the leaf index of the job's request (where the recipe is)
and the recipe's ``source`` (``crates.io`` or ``local``). The log serves it
(``GET /crates/<name>[/<version>]``, spec/api.md) so that ``synchronicity install`` can find a
crate's newest reproduced build without reading the log; a monitor folds the same leaves with
this same code and compares the answers (witness/monitor.py), so a log that hides a verdict —
say a ``not-reproduced`` behind an older ``reproduced`` — is caught.

Every answer is a pure function of the folded leaves, a tree ``size`` (only leaves below it
count: the log answers at its published size, a monitor at the size it verified), the crate
and the network id, bounded in size (``MAX_VERSIONS``, ``ROWS_PER_VERSION``, ``MAX_ROWS``). A
request whose recipe has no valid name, version or source is not indexed, nor is a verdict of
a job never requested; signatures are not checked here (the log's sequencer and a monitor's
``VerdictChecker`` do that). Thread-safe: the log folds from one thread and answers from others.

>>> from logserver.core import note
>>> from logserver.protocol import entries, signed
>>> builder = note.Signer("builder-1", bytes(32))
>>> request = entries.Request({"name": "demo", "version": "1.0.0", "source": "crates.io"})
>>> leaf = signed.Leaf(signed.sign_entry(request, builder, "example"), time_ms=0)
>>> index = CrateIndex()
>>> index.add_leaves(0, [leaf.to_bytes()])
set()
>>> index.crate_answer("demo", 1, "example") is None  # requested, but no verdict yet
True
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from logserver.core.errors import FormatError, UsageError
from logserver.protocol.entries import Request, Verdict
from logserver.protocol.signed import Leaf

MAX_VERSIONS = 100  # versions in a crate's answer: the newest by SemVer precedence
ROWS_PER_VERSION = 16  # verdicts of each version in a crate's answer: the newest
MAX_ROWS = 256  # verdicts in a version's answer: the newest
SOURCES = ("crates.io", "local")

# spec/builds.md, section 2: the recipe's crate name and SemVer 2.0 version.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_SEMVER = re.compile(
    r"(?P<major>0|[1-9][0-9]*)\.(?P<minor>0|[1-9][0-9]*)\.(?P<patch>0|[1-9][0-9]*)"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?"
)
MAX_VERSION_CHARS = 128

VersionKey = tuple[int, int, int, tuple[tuple[int, int | str], ...]]
CrateKey = tuple[str, str]  # (name, version)


def check_crate_name(name: str) -> str:
    """``name`` if it is a crate name as a recipe holds it, else ``FormatError``."""
    if _NAME.fullmatch(name) is None:
        raise FormatError("crate name", f"{name[:80]!r} is not [A-Za-z][A-Za-z0-9_-]{{0,63}}")
    return name


def check_version(version: str) -> str:
    """``version`` if it is a SemVer 2.0 version (at most 128 characters), else ``FormatError``."""
    if len(version) > MAX_VERSION_CHARS or _SEMVER.fullmatch(version) is None:
        raise FormatError("crate version", f"{version[:80]!r} is not a SemVer 2.0 version")
    return version


def version_key(version: str) -> VersionKey:
    """A sort key giving SemVer 2.0 precedence, build metadata ignored (the precedence of
    ``builder.choice.semver_key``, which the builder keeps for itself: it may not import the
    protocol; a test keeps the two equal)."""
    match = _SEMVER.fullmatch(check_version(version))
    assert match is not None
    pre: tuple[tuple[int, int | str], ...] = ((2, 0),)  # a release: after every pre-release
    if match["pre"] is not None:
        pre = tuple(
            (0, int(part)) if part.isdigit() else (1, part) for part in match["pre"].split(".")
        )
    return int(match["major"]), int(match["minor"]), int(match["patch"]), pre


def is_prerelease(version: str) -> bool:
    """Whether ``version`` is a SemVer pre-release (``1.0.0-rc.1``)."""
    match = _SEMVER.fullmatch(version)
    return match is not None and match["pre"] is not None


@dataclass(frozen=True)
class VerdictRow:
    """One verdict of a crate version: where it is, what it says, and where its recipe is."""

    index: int  # the verdict's leaf
    outcome: str
    job: str
    request: int  # the leaf of the job's request, which holds the recipe
    source: str  # the recipe's source: crates.io or local

    def to_value(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "job": self.job,
            "outcome": self.outcome,
            "request": self.request,
            "source": self.source,
        }

    @classmethod
    def from_value(cls, value: object) -> VerdictRow:
        """A row of an index answer; ``FormatError`` unless it has exactly the members."""
        if not isinstance(value, dict) or set(value) != {
            "index",
            "job",
            "outcome",
            "request",
            "source",
        }:
            raise FormatError(
                "crate index row", "members must be index, job, outcome, request, source"
            )
        ints = [value["index"], value["request"]]
        if any(type(n) is not int or n < 0 for n in ints):
            raise FormatError("crate index row", "index and request must be leaf indexes")
        texts = [value["job"], value["outcome"], value["source"]]
        if any(not isinstance(t, str) for t in texts):
            raise FormatError("crate index row", "job, outcome and source must be strings")
        return cls(
            value["index"], value["outcome"], value["job"], value["request"], value["source"]
        )


@dataclass(frozen=True)
class _Requested:
    name: str
    version: str
    source: str
    index: int


def _recipe_key(recipe: object) -> tuple[str, str, str] | None:
    """(name, version, source) of a recipe if all three are valid, else None."""
    if not isinstance(recipe, dict):
        return None
    name, version, source = recipe.get("name"), recipe.get("version"), recipe.get("source")
    if not (isinstance(name, str) and isinstance(version, str) and source in SOURCES):
        return None
    try:
        check_crate_name(name)
        check_version(version)
    except FormatError:
        return None
    assert isinstance(source, str)
    return name, version, source


def _rows_below(rows: list[VerdictRow], size: int) -> list[VerdictRow]:
    """The rows whose verdict leaf is below ``size`` (rows are in log order)."""
    return rows[: bisect.bisect_left(rows, size, key=lambda row: row.index)]


class CrateIndex:
    """Protocol leaves folded into crate name -> version -> verdicts in log order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._size = 0  # leaves folded so far = index of the next leaf
        self._requests: dict[str, _Requested] = {}  # job id -> its request
        self._judged: set[str] = set()  # jobs that have their verdict
        self._crates: dict[str, dict[str, list[VerdictRow]]] = {}
        self._skipped = 0

    @property
    def size(self) -> int:
        """How many leaves of the log have been folded in."""
        with self._lock:
            return self._size

    @property
    def skipped(self) -> int:
        """Leaves not indexed: not protocol leaves, recipes without a valid crate, verdicts of
        jobs never requested."""
        with self._lock:
            return self._skipped

    def names(self) -> list[str]:
        """Every crate with at least one verdict, sorted."""
        with self._lock:
            return sorted(self._crates)

    def add_leaves(self, first_index: int, leaves: Sequence[bytes]) -> set[CrateKey]:
        """Fold leaves ``first_index, first_index + 1, ...`` (those already folded are ignored);
        return the (name, version) pairs that got a new verdict."""
        parsed: list[Leaf | None] = []
        for data in leaves:
            try:
                parsed.append(Leaf.parse(data))
            except FormatError:
                parsed.append(None)
        touched: set[CrateKey] = set()
        with self._lock:
            if leaves and first_index > self._size:
                raise UsageError(f"leaf {first_index} given before leaf {self._size}")
            for index, leaf in enumerate(parsed, first_index):
                if index < self._size:
                    continue
                if leaf is None or not self._fold(index, leaf, touched):
                    self._skipped += 1
                self._size = index + 1
        return touched

    def _fold(self, index: int, leaf: Leaf, touched: set[CrateKey]) -> bool:
        """Fold one leaf, adding to ``touched`` the crate it gives a verdict; False when the
        leaf is skipped."""
        entry = leaf.entry.entry
        if isinstance(entry, Request):
            recipe = _recipe_key(entry.recipe)
            if recipe is None or entry.job in self._requests:
                return False  # no crate to index, or a duplicate request: the first stands
            self._requests[entry.job] = _Requested(*recipe, index)
            return True
        if not isinstance(entry, Verdict):
            return True
        requested = self._requests.get(entry.job)
        if requested is None or entry.job in self._judged:
            return False
        self._judged.add(entry.job)
        row = VerdictRow(index, entry.outcome, entry.job, requested.index, requested.source)
        versions = self._crates.setdefault(requested.name, {})
        versions.setdefault(requested.version, []).append(row)
        touched.add((requested.name, requested.version))
        return True

    # ------------------------------------------------------------------------ answers

    def crate_answer(self, name: str, size: int, network: str) -> dict[str, Any] | None:
        """``GET /crates/<name>``: the crate's versions with a verdict below leaf ``size``,
        newest first (at most ``MAX_VERSIONS``), each with its newest ``ROWS_PER_VERSION``
        verdicts in log order and its counts; None when it has none."""
        with self._lock:
            found = []
            for version, rows in self._crates.get(name, {}).items():
                below = _rows_below(rows, size)
                if below:
                    found.append((version, below))
        if not found:
            return None
        found.sort(key=lambda item: (version_key(item[0]), item[0]), reverse=True)
        versions = [
            {
                "reproduced_total": sum(row.outcome == "reproduced" for row in rows),
                "verdicts": [row.to_value() for row in rows[-ROWS_PER_VERSION:]],
                "verdicts_total": len(rows),
                "version": version,
            }
            for version, rows in found[:MAX_VERSIONS]
        ]
        return {
            "name": name,
            "network": network,
            "size": size,
            "versions": versions,
            "versions_total": len(found),
        }

    def version_answer(
        self, name: str, version: str, size: int, network: str
    ) -> dict[str, Any] | None:
        """``GET /crates/<name>/<version>``: the version's newest ``MAX_ROWS`` verdicts below
        leaf ``size``, in log order; None when it has none."""
        with self._lock:
            rows = _rows_below(self._crates.get(name, {}).get(version, []), size)
        if not rows:
            return None
        return {
            "name": name,
            "network": network,
            "size": size,
            "verdicts": [row.to_value() for row in rows[-MAX_ROWS:]],
            "verdicts_total": len(rows),
            "version": version,
        }


def versions_of(answer: dict[str, Any]) -> Iterable[tuple[str, int, list[VerdictRow]]]:
    """(version, reproduced verdicts, newest rows) of a crate answer, newest version first;
    ``FormatError`` for an answer without that shape."""
    versions = answer.get("versions")
    if not isinstance(versions, list):
        raise FormatError("crate index answer", "no versions list")
    for item in versions:
        if not isinstance(item, dict):
            raise FormatError("crate index answer", "a version that is not an object")
        version, reproduced, rows = (
            item.get("version"),
            item.get("reproduced_total"),
            item.get("verdicts"),
        )
        if not isinstance(version, str) or type(reproduced) is not int:
            raise FormatError("crate index answer", "a version without version or counts")
        if not isinstance(rows, list):
            raise FormatError("crate index answer", f"version {version[:80]!r} has no verdicts")
        yield check_version(version), reproduced, [VerdictRow.from_value(row) for row in rows]


def rows_of(answer: dict[str, Any]) -> list[VerdictRow]:
    """The rows of a version answer, in log order; ``FormatError`` for another shape."""
    rows = answer.get("verdicts")
    if not isinstance(rows, list) or not rows:
        raise FormatError("crate index answer", "no verdicts list")
    parsed = [VerdictRow.from_value(row) for row in rows]
    if [row.index for row in parsed] != sorted({row.index for row in parsed}):
        raise FormatError("crate index answer", "verdicts are not in log order")
    return parsed
