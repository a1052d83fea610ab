"""The build worker of a builder-witness: build, commit, wait for the close, reveal, explain.

It reads the leaves of its verified mirror up to the size its consensus committed (so it acts
only on cosigned history) and reacts:

- a ``request``: build the recipe in the Docker sandbox (builder.build), upload the manifest and
  the artifacts to the log's blob store, then commit to the output digest with a fresh nonce.
  The job record (digest, nonce) is written durably BEFORE the commit leaves, so a restarted
  worker can still reveal what it committed to;
- a ``close`` that lists this builder: reveal the digest and nonce;
- a ``not-reproduced`` verdict where this builder heads the largest group: fetch another
  group's artifacts from the blob store (their hashes are in its manifest), compare the two
  trees with diffoscope (builder.diff), upload the report and log a ``diff-report`` entry.

Fault injection for tests (``misbehave``): ``fabricate`` commits to and reveals a digest it
never built; ``contradict`` reveals a digest other than the one it committed to.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from builder import recipe as recipes
from builder.build import build_crate
from builder.diff import diff_outputs
from builder.manifest import Manifest, manifest_from_json
from logserver.client import LogClient
from logserver.core import canonical_json, note
from logserver.core.errors import SynchronicityError
from logserver.fsutil import atomic_write
from logserver.protocol.entries import (
    Close,
    Commit,
    DiffReport,
    Entry,
    Request,
    Reveal,
    Verdict,
    compute_commitment,
    failure_digest,
    new_nonce,
)
from logserver.protocol.signed import Leaf, sign_entry
from logserver.storage import LogStore

log = logging.getLogger(__name__)
MISBEHAVIOURS = ("fabricate", "contradict")


def _reason(error: Exception) -> str:
    """A one-line failure reason for the log (bounded, printable)."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return "".join(c for c in text if c.isprintable())[:200]


class SigningWriter:
    """What a builder writes to the log, signed with its key: protocol entries and blobs.

    The HTTP goes through ``log``, the one client of the log; this class only adds the signing.
    """

    def __init__(self, log: LogClient, signer: note.Signer, network_id: str) -> None:
        self.log = log
        self.signer = signer
        self.network_id = network_id  # entries are signed for this network only

    def add_entry(self, entry: Entry) -> int:
        """Sign ``entry`` and append it as canonical JSON; return its index in the log."""
        signed = sign_entry(entry, self.signer, self.network_id)
        return self.log.add_entry(canonical_json.encode(signed.to_json()))

    def put_blob(self, data: bytes) -> str:
        """Upload a blob with this builder's signature; return its name (hex SHA-256)."""
        return self.log.put_blob(data, self.signer)


BuildFn = Callable[..., object]


class BuildWorker:
    """Acts on the committed leaves of the mirror: builds, commits, reveals and explains."""

    def __init__(
        self,
        name: str,
        writer: SigningWriter,
        mirror: LogStore,
        workdir: Path,
        *,
        build: BuildFn | None = None,
        misbehave: str | None = None,
    ) -> None:
        if misbehave is not None and misbehave not in MISBEHAVIOURS:
            raise ValueError(f"misbehave must be one of {MISBEHAVIOURS}")
        self.name = name
        self.writer = writer
        self.mirror = mirror
        self.workdir = workdir
        (workdir / "jobs").mkdir(parents=True, exist_ok=True)
        self._build = build
        self.misbehave = misbehave
        self._committed_size = 0
        self.stats: dict[str, float] = {
            "builds_ok": 0,
            "builds_failed": 0,
            "last_build_seconds": 0.0,
        }
        self._wake = threading.Event()
        self._builds: queue.Queue[Request | None] = queue.Queue()
        self._stopped = False
        self._scanner = threading.Thread(target=self._scan_loop, daemon=True, name="scanner")
        self._builder = threading.Thread(target=self._build_loop, daemon=True, name="builder")

    # ----- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._scanner.start()
        self._builder.start()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        self._builds.put(None)

    def committed(self, size: int) -> None:
        """Consensus committed the log up to ``size``: act on the new leaves."""
        if size > self._committed_size:
            self._committed_size = size
            self._wake.set()

    # ----- durable records ---------------------------------------------------------------

    def _cursor(self) -> int:
        path = self.workdir / "cursor"
        return int(path.read_text()) if path.exists() else 0

    def _record(self, job: str) -> dict[str, str] | None:
        path = self.workdir / "jobs" / f"{job}.json"
        if not path.exists():
            return None
        record: dict[str, str] = json.loads(path.read_bytes())
        return record

    def _save(self, job: str, record: dict[str, str]) -> None:
        atomic_write(self.workdir / "jobs" / f"{job}.json", json.dumps(record).encode())

    # ----- reading the committed log ----------------------------------------------------

    def _scan_loop(self) -> None:
        while not self._stopped:
            self._wake.wait(1.0)
            self._wake.clear()
            cursor = self._cursor()
            end = min(self._committed_size, self.mirror.size())
            for index in range(cursor, end):
                try:
                    self._on_leaf(index, Leaf.parse(self.mirror.entry(index)).entry.entry)
                except SynchronicityError as e:
                    log.error("worker step failed", extra={"leaf": index, "error": str(e)})
            if end > cursor:
                atomic_write(self.workdir / "cursor", str(end).encode())

    def _on_leaf(self, index: int, entry: Entry) -> None:
        if isinstance(entry, Request) and self._record(entry.job) is None:
            self._builds.put(entry)
        elif isinstance(entry, Close) and self.name in entry.committed:
            self._reveal(entry.job)
        elif (
            isinstance(entry, Verdict)
            and entry.outcome == "not-reproduced"
            and entry.groups
            and entry.groups[0].builders[0] == self.name
        ):
            self._explain(entry)

    # ----- build and commit --------------------------------------------------------------

    def _build_loop(self) -> None:
        while (request := self._builds.get()) is not None:
            try:
                self._build_and_commit(request)
            except SynchronicityError as e:
                # The build could not even run here (sources, Docker, toolchain): commit to
                # that failure, so the job still closes and the verdict says why.
                log.exception("build job failed", extra={"job": request.job, "error": str(e)})
                self.stats["builds_failed"] += 1
                record = self._record(request.job) or {
                    "nonce": new_nonce(),
                    "failure": _reason(e),
                }
                try:
                    self._commit(request.job, record)
                except SynchronicityError:
                    log.exception("cannot commit", extra={"job": request.job})

    def _build_and_commit(self, request: Request) -> None:
        recipe = recipes.from_value(request.recipe)
        out_dir = self.workdir / "builds" / request.job
        local_crate = None
        if recipe.source == recipes.SOURCE_LOCAL:
            local_crate = self.workdir / "crates" / f"{recipe.crate_sha256}.crate"
            local_crate.parent.mkdir(parents=True, exist_ok=True)
            local_crate.write_bytes(self.writer.log.blob(recipe.crate_sha256))
        build = self._build or build_crate
        started = time.monotonic()
        result = build(recipe, out_dir, local_crate=local_crate, progress=lambda line: None)
        self.stats["last_build_seconds"] = time.monotonic() - started
        ok = bool(getattr(result, "ok", False))
        self.stats["builds_ok" if ok else "builds_failed"] += 1
        record: dict[str, str] = {"nonce": new_nonce()}
        manifest = getattr(result, "manifest", None)
        if getattr(result, "ok", False) and isinstance(manifest, Manifest):
            self._upload_outputs(manifest, out_dir / "artifacts")
            record["digest"] = manifest.output_digest
        else:
            record["failure"] = str(getattr(result, "reason", None) or "failed")[:200]
        if self.misbehave == "fabricate":
            record = {
                "nonce": record["nonce"],
                "digest": hashlib.sha256(os.urandom(32)).hexdigest(),
            }
        self._commit(request.job, record)

    def _commit(self, job: str, record: dict[str, str]) -> None:
        """Commit to ``record``'s result; the record is durable before the commit leaves."""
        if record.get("committed"):
            return
        committed_digest = record.get("digest") or failure_digest(record["failure"])
        self._save(job, record)  # durable before the commit leaves
        commitment = compute_commitment(job, self.name, committed_digest, record["nonce"])
        self.writer.add_entry(Commit(job, self.name, commitment))
        record["committed"] = "yes"
        self._save(job, record)
        log.info("committed", extra={"job": job, "digest": committed_digest})

    def _upload_outputs(self, manifest: Manifest, artifacts: Path) -> None:
        self.writer.put_blob(manifest.to_json())
        for artifact in manifest.artifacts:
            self.writer.put_blob((artifacts / artifact.path).read_bytes())

    # ----- reveal ------------------------------------------------------------------------

    def _reveal(self, job: str) -> None:
        record = self._record(job)
        if record is None or record.get("revealed"):
            return
        nonce = record["nonce"]
        if "failure" in record:
            reveal = Reveal(job, self.name, nonce, failure=record["failure"])
        else:
            digest = record["digest"]
            if self.misbehave == "contradict":
                digest = hashlib.sha256(digest.encode()).hexdigest()
            reveal = Reveal(job, self.name, nonce, output_digest=digest, manifest_sha256=digest)
        self.writer.add_entry(reveal)
        record["revealed"] = "yes"
        self._save(job, record)

    # ----- explain a mismatch -------------------------------------------------------------

    def _fetch_tree(self, digest: str, into: Path) -> None:
        manifest = manifest_from_json(self.writer.log.blob(digest))
        for artifact in manifest.artifacts:
            (into / artifact.path).write_bytes(self.writer.log.blob(artifact.sha256))

    def _explain(self, verdict: Verdict) -> None:
        record = self._record(verdict.job)
        if record is None or record.get("explained") or len(verdict.groups) < 2:
            return
        first, second = verdict.groups[0].output_digest, verdict.groups[1].output_digest
        with tempfile.TemporaryDirectory(prefix="synchronicity-diff-") as tmp:
            left, right = Path(tmp) / "left", Path(tmp) / "right"
            left.mkdir()
            right.mkdir()
            self._fetch_tree(first, left)
            self._fetch_tree(second, right)
            report = diff_outputs(left, right)
        report_sha = self.writer.put_blob(report)
        groups = tuple(sorted({first, second}))
        self.writer.add_entry(DiffReport(verdict.job, report_sha, groups))
        record["explained"] = report_sha
        self._save(verdict.job, record)
