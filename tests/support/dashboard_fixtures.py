"""Real build-protocol leaves for the dashboard's tests and benchmark.

A :class:`ProtocolFixture` holds a log key and four builder keys, and writes the leaves of whole
builds (request, commits, close, reveals, verdict, diff report) signed with
:mod:`logserver.protocol.signed`. Every leaf is applied to a
:class:`~logserver.protocol.rules.ProtocolState` before it is returned, and the log's close and
verdict entries are the ones that state says are due, so the leaves are exactly what a log
running the protocol would hold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from logserver.core.note import Signer
from logserver.protocol import entries as e
from logserver.protocol import signed
from logserver.protocol.rules import ProtocolConfig, ProtocolState

Plan = Literal["reproduced", "not-reproduced", "failed", "misbehaviour", "open"]
BUILDERS = ("builder-1", "builder-2", "builder-3", "builder-4")


def _seed(name: str) -> bytes:
    return hashlib.sha256(b"dashboard fixture key " + name.encode()).digest()


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def diff_report_text(job: str) -> bytes:
    """The blob a job's diff-report entry names (a stand-in for diffoscope's output)."""
    return f"--- builder-1\n+++ builder-3\n@@ job {job} @@\n-a\n+b\n".encode()


def failure_reason(builder: str) -> str:
    """What a builder of a ``failed`` plan reveals: the sandbox's reason code with hostile
    detail for three builders, a time-out for the fourth."""
    if builder == "builder-4":
        return "timeout"
    return f'nonzero-exit: linker <error> & "quotes" on {builder}'


def recipe(name: str, version: str, features: Sequence[str] = ()) -> dict[str, Any]:
    """A recipe with every field of spec/builds.md (values are made up, the shape is real);
    other ``features`` make another recipe (another job) for the same crate."""
    return {
        "schema": "synchronicity/recipe/v1",
        "ecosystem": "crates",
        "source": "crates.io",
        "name": name,
        "version": version,
        "crate_sha256": _digest("crate", name, version),
        "cargo_lock": f'version = 4\n\n[[package]]\nname = "{name}"\nversion = "{version}"\n',
        "toolchain": {
            "commit_hash": _digest("rustc")[:40],
            "files_sha256": _digest("toolchain files"),
            "rustc_version": "1.80.1",
        },
        "build_env": {"rootfs_sha256": _digest("rootfs")},
        "target": "x86_64-unknown-linux-gnu",
        "profile": "release",
        "features": sorted(features),
        "default_features": True,
        "artifacts": ["bin", "rlib"],
    }


@dataclass
class BuiltJob:
    job: str
    name: str
    version: str
    plan: Plan
    leaves: dict[str, int] = field(default_factory=dict)  # "request", "verdict", ... -> index


class ProtocolFixture:
    """Signs and sequences protocol leaves; ``time_ms`` is the log's clock."""

    def __init__(
        self,
        log_signer: Signer | None = None,
        start_ms: int = 1_700_000_000_000,
        network_id: str = "example.test",
    ):
        self.log_signer = log_signer or Signer("example.test/log", _seed("example.test/log"))
        self.builders = {name: Signer(name, _seed(name)) for name in BUILDERS}
        config = ProtocolConfig(
            log=self.log_signer.verifier(),
            builders={n: s.verifier() for n, s in self.builders.items()},
            build_deadline_ms=600_000,
            reveal_deadline_ms=600_000,
            network_id=network_id,
        )
        self.state = ProtocolState(config)
        self.jobs: dict[str, BuiltJob] = {}  # every job so far: older ones may fall due later
        self.time_ms = start_ms

    def _leaf(self, entry: e.Entry, signer: Signer) -> bytes:
        leaf = signed.Leaf(
            signed.sign_entry(entry, signer, self.state.config.network_id), self.time_ms
        )
        self.state.apply(leaf)
        return leaf.to_bytes()

    def _due(self, out: list[bytes]) -> list[tuple[int, str]]:
        """Append the log's due entries; (position in ``out``, job id) of each."""
        positions = []
        for entry in self.state.due_entries(self.time_ms):
            positions.append((len(out), entry.job))
            out.append(self._leaf(entry, self.log_signer))
        return positions

    def builds(
        self,
        first_index: int,
        specs: Sequence[tuple[str, str, Plan]],
        step_ms: int = 1500,
        features: Sequence[str] = (),
    ) -> tuple[list[bytes], list[BuiltJob]]:
        """Leaves of one wave of builds starting at leaf ``first_index``, interleaved as a busy
        log would hold them: all requests, then commits, closes, reveals, verdicts, reports.
        ``features`` go into every recipe of the wave (to build a crate again)."""
        assert first_index >= self.state.size, "leaves are numbered as in the log"
        # Leaves in between are not protocol leaves: number ours as the log does, so that
        # evidence in verdicts names real leaf indexes.
        self.state.size = first_index
        out: list[bytes] = []
        jobs: list[BuiltJob] = []

        def mark(job: BuiltJob, role: str) -> None:
            job.leaves[role] = first_index + len(out) - 1

        for name, version, plan in specs:
            request = e.Request(recipe(name, version, features))
            out.append(self._leaf(request, self.builders["builder-1"]))
            jobs.append(BuiltJob(request.job, name, version, plan))
            self.jobs[request.job] = jobs[-1]
            mark(jobs[-1], "request")
        self.time_ms += step_ms * 40
        nonces: dict[tuple[str, str], str] = {}
        for job in jobs:
            for builder in BUILDERS:
                nonce = nonces[job.job, builder] = _digest("nonce", job.job, builder)
                commitment = e.compute_commitment(
                    job.job, builder, self._output(job, builder), nonce
                )
                out.append(
                    self._leaf(e.Commit(job.job, builder, commitment), self.builders[builder])
                )
                mark(job, f"commit {builder}")
                self.time_ms += step_ms
        for position, job_id in self._due(out):
            self._mark_due(job_id, first_index + position)
        self.time_ms += step_ms * 5
        for job in jobs:
            if job.plan == "open":
                continue
            for builder in BUILDERS:
                out.append(self._leaf(self._reveal(job, builder, nonces), self.builders[builder]))
                mark(job, f"reveal {builder}")
                self.time_ms += step_ms
        for position, job_id in self._due(out):
            self._mark_due(job_id, first_index + position)
        for job in jobs:
            if job.plan == "not-reproduced":
                groups = tuple(sorted({self._output(job, b) for b in BUILDERS}))
                digest = hashlib.sha256(diff_report_text(job.job)).hexdigest()
                report = e.DiffReport(job.job, digest, groups)
                out.append(self._leaf(report, self.builders["builder-1"]))
                mark(job, "diff-report")
        self.time_ms += step_ms
        return out, jobs

    def _mark_due(self, job_id: str, index: int) -> None:
        """Record a close or verdict; a job left open earlier may reach its reveal deadline."""
        job = self.jobs[job_id]
        job.leaves["verdict" if "close" in job.leaves else "close"] = index

    def _output(self, job: BuiltJob, builder: str) -> str:
        if job.plan == "failed":
            return e.failure_digest(failure_reason(builder))
        if job.plan == "not-reproduced" and builder in ("builder-3", "builder-4"):
            return _digest("output", job.job, "other")
        return _digest("output", job.job)

    def _reveal(self, job: BuiltJob, builder: str, nonces: dict[tuple[str, str], str]) -> e.Reveal:
        nonce = nonces[job.job, builder]
        if job.plan == "misbehaviour" and builder == "builder-4":
            nonce = _digest("another nonce")  # does not open the commit: evidence
        if job.plan == "failed":
            return e.Reveal(job.job, builder, nonce, failure=failure_reason(builder))
        return e.Reveal(
            job.job,
            builder,
            nonce,
            output_digest=self._output(job, builder),
            manifest_sha256=_digest("manifest", job.job, builder),
        )
