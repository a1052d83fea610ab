"""The build worker's durable state: one record per job, and how far it has read the log.

Each job's :class:`JobRecord` is a JSON file written atomically (``logserver.fsutil``) at
``<worker>/records/<job>.json``; ``<worker>/scanned`` holds the number of committed leaves the
worker has turned into records. A record is written before the cursor passes the leaf that
caused it and before any message that depends on it leaves the builder, so the records ARE the
worker's work list: a restart resumes from them (witness/worker.py describes the states).

A file that does not parse is an error naming it, never a silent reset: forgetting a job's nonce
would make its reveal impossible, and a fresh one would contradict the commit already logged.

Records written by the first worker (``<worker>/jobs/<job>.json``: nonce, digest or failure)
are read through :meth:`JobRecords.legacy` so that an upgraded builder still opens the commits
it made before; that worker's cursor is not used (the new one rescans the mirror from leaf 0).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logserver.core.errors import OperationalError
from logserver.fsutil import atomic_write
from logserver.protocol.entries import failure_digest

STATES = (
    "requested",  # the request is in the committed log; nothing built yet
    "built",  # built (or failed), nonce chosen: the commit is owed to the log
    "committed",  # the log took the commit
    "closed",  # the close names this builder: blobs and reveal are owed
    "revealed",  # the log took the reveal
    "explaining",  # a not-reproduced verdict this builder heads: a diff is owed
    "diffed",  # the diff report is on disk: its upload and diff-report entry are owed
    "explained",  # terminal: the diff-report entry is in the log
    "finished",  # terminal: the verdict is in the log and nothing more is owed
    "abandoned",  # terminal: the job closed without this builder, or its commit is not ours
)
TERMINAL = frozenset({"explained", "finished", "abandoned"})


@dataclass(frozen=True)
class JobRecord:
    """What one builder knows and owes for one job (times are log milliseconds)."""

    job: str
    state: str
    request_index: int
    build_deadline_ms: int
    recipe: dict[str, Any]
    nonce: str | None = None
    output_digest: str | None = None  # the output digest of a successful build
    manifest: str | None = None  # its canonical manifest, uploaded only after the close
    failure: str | None = None  # the reason of a failed build
    reveal_deadline_ms: int | None = None
    uploaded: bool = False  # the manifest and artifacts are in the log's blob store
    compare: tuple[str, ...] = ()  # the two output digests a diff compares
    explain_deadline_ms: int | None = None
    report_sha256: str | None = None
    note: str = ""  # why the job was abandoned, for people

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"unknown job state {self.state!r}")

    @property
    def committed_digest(self) -> str:
        """The digest the commitment covers: the output digest, or the failure digest."""
        if self.failure is not None:
            return failure_digest(self.failure)
        assert self.output_digest is not None
        return self.output_digest

    def to_json(self) -> bytes:
        value = dataclasses.asdict(self)
        value["compare"] = list(self.compare)
        return json.dumps(value, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> JobRecord:
        """Parse a record file strictly; OperationalError naming ``where`` if it is corrupt."""
        try:
            value = json.loads(data)
            if not isinstance(value, dict) or set(value) != _FIELDS:
                raise ValueError("not an object with exactly the record's fields")
            for name, kinds in _TYPES.items():
                if not _is_a(value[name], kinds):
                    raise ValueError(f"{name} has the wrong type")
            value["compare"] = tuple(value["compare"])
            if not all(isinstance(digest, str) for digest in value["compare"]):
                raise ValueError("compare is not a list of digests")
            return cls(**value)
        except ValueError as e:
            raise OperationalError(f"the job record {where} is corrupt: {e}") from e


def _is_a(value: object, kinds: tuple[type, ...]) -> bool:
    """isinstance, except that a JSON boolean is not an integer."""
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds)


_FIELDS = {f.name for f in dataclasses.fields(JobRecord)}
_TYPES: dict[str, tuple[type, ...]] = {
    "job": (str,),
    "state": (str,),
    "request_index": (int,),
    "build_deadline_ms": (int,),
    "recipe": (dict,),
    "nonce": (str, type(None)),
    "output_digest": (str, type(None)),
    "manifest": (str, type(None)),
    "failure": (str, type(None)),
    "reveal_deadline_ms": (int, type(None)),
    "uploaded": (bool,),
    "compare": (list,),
    "explain_deadline_ms": (int, type(None)),
    "report_sha256": (str, type(None)),
    "note": (str,),
}
assert set(_TYPES) == _FIELDS


class JobRecords:
    """The worker's records and cursor, cached in memory and written through; thread-safe."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory / "records"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._cursor_path = directory / "scanned"
        self._legacy_dir = directory / "jobs"
        self._lock = threading.RLock()
        self._records: dict[str, JobRecord] = {}
        # Records hold commitment nonces: secret until the reveal. An older version wrote them
        # (and its cursor) 0644; narrow what it left.
        for old in [
            *self._dir.glob("*.json"),
            *self._legacy_dir.glob("*.json"),
            directory / "cursor",
        ]:
            if old.is_file() and old.stat().st_mode & 0o077:
                old.chmod(0o600)
        for path in sorted(self._dir.glob("*.json")):
            record = JobRecord.from_json(path.read_bytes(), str(path))
            self._records[record.job] = record

    # ----- the cursor --------------------------------------------------------------------

    def cursor(self) -> int:
        """How many committed leaves have been turned into records."""
        if not self._cursor_path.exists():
            return 0
        text = self._cursor_path.read_text()
        if not (text.isascii() and text.isdigit()):
            raise OperationalError(f"the worker cursor {self._cursor_path} is corrupt: {text!r}")
        return int(text)

    def set_cursor(self, scanned: int) -> None:
        atomic_write(self._cursor_path, str(scanned).encode())

    # ----- records -----------------------------------------------------------------------

    def get(self, job: str) -> JobRecord | None:
        with self._lock:
            return self._records.get(job)

    def put(self, record: JobRecord) -> None:
        """Write ``record`` durably, then make it the current one."""
        with self._lock:
            atomic_write(self._dir / f"{record.job}.json", record.to_json())
            self._records[record.job] = record

    def update(
        self, job: str, change: Callable[[JobRecord], JobRecord | None]
    ) -> tuple[JobRecord, JobRecord] | None:
        """Apply ``change`` to the job's record atomically (None: leave it as it is).

        Returns (old, new) when the record changed.
        """
        with self._lock:
            old = self._records.get(job)
            if old is None:
                return None
            new = change(old)
            if new is None or new == old:
                return None
            self.put(new)
            return old, new

    def in_states(self, states: Iterable[str]) -> list[JobRecord]:
        """The records in any of ``states``, in request order."""
        wanted = set(states)
        with self._lock:
            found = [r for r in self._records.values() if r.state in wanted]
        return sorted(found, key=lambda r: r.request_index)

    def legacy(self, job: str) -> dict[str, str] | None:
        """The first worker's record of ``job`` (nonce, digest or failure, and ``committed``
        when the log took its commit), if any."""
        path = self._legacy_dir / f"{job}.json"
        if not path.exists():
            return None
        try:
            value = json.loads(path.read_bytes())
            if not isinstance(value, dict) or not isinstance(value.get("nonce"), str):
                raise ValueError("no nonce")
            if not isinstance(value.get("digest", value.get("failure")), str):
                raise ValueError("neither a digest nor a failure")
        except ValueError as e:
            raise OperationalError(f"the job record {path} is corrupt: {e}") from e
        return {k: v for k, v in value.items() if k in ("nonce", "digest", "failure", "committed")}
