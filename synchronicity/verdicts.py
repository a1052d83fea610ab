"""What a logged verdict gives its user: a proof file, the builders' reasons, a diff report.

Shared by ``rebuild`` (one job) and ``campaign`` (many). Call these once a quorum-cosigned
checkpoint covers the verdict (``synchronicity.client.wait_published``): the log proves a leaf
against its published checkpoint.

- ``write_verdict_proof``: the c2sp.org/tlog-proof@v1 file of a verdict. For ``reproduced`` its
  extra data is the verdict bundle (verdict leaf, output manifest, recipe, network id), so
  ``synchronicity verify`` checks an artifact against it offline; the written file is verified
  before it is kept. For any other outcome the bundle has an empty manifest, so that its recipe
  says which crate the verdict is about (``verify --proofs DIR --lockfile FILE`` matches proofs
  to packages by it); the bundle always holds the recipe.
- ``failure_reasons``: each builder's failure reason, read from the reveal leaf the verdict's
  ``failures`` point to, and who did not reveal.
- ``find_diff_report``: the diff report a builder logged for a mismatch, if it is there yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from logserver.client import LogClient
from logserver.core import proof
from logserver.core.policy import Policy
from logserver.fsutil import atomic_write
from logserver.protocol.entries import DiffReport, Reveal, Verdict
from logserver.protocol.verdict_proof import (
    Reproduced,
    VerdictBundle,
    verify_verdict,
    verify_verdict_proof,
)
from synchronicity.client import LoggedEntry, logged_entries

PUBLIC = 0o644  # proofs, policies and reports are for anyone to read


@dataclass(frozen=True)
class WrittenProof:
    """A proof file written for a verdict; ``reproduced`` is its offline check (reproduced
    verdicts only: the outputs and the manifest's artifacts)."""

    path: Path
    reproduced: Reproduced | None


def write_verdict_proof(
    client: LogClient,
    logged: LoggedEntry,
    recipe_json: bytes,
    network_id: str,
    policy: Policy,
    path: Path,
) -> WrittenProof:
    """Write the proof file of the verdict ``logged`` to ``path`` (atomically)."""
    verdict = logged.entry
    if not isinstance(verdict, Verdict):
        raise TypeError(f"leaf {logged.index} is not a verdict")
    raw = proof.TlogProof.parse(client.tlog_proof(logged.index))
    if verdict.outcome != "reproduced" or verdict.output_digest is None:
        extra = VerdictBundle(logged.leaf.to_bytes(), b"", recipe_json, network_id).to_extra()
        data = proof.TlogProof(raw.index, raw.hashes, raw.checkpoint, extra).to_bytes()
        verify_verdict(data, policy)  # never keep a proof that does not verify
        atomic_write(path, data, PUBLIC)
        return WrittenProof(path, None)
    manifest = client.blob(verdict.output_digest)
    bundle = VerdictBundle(logged.leaf.to_bytes(), manifest, recipe_json, network_id)
    data = proof.TlogProof(raw.index, raw.hashes, raw.checkpoint, bundle.to_extra()).to_bytes()
    reproduced = verify_verdict_proof(data, policy)  # never keep a proof that does not verify
    atomic_write(path, data, PUBLIC)
    return WrittenProof(path, reproduced)


def failure_reasons(client: LogClient, verdict: Verdict) -> dict[str, str]:
    """Why each builder that did not agree gave no output: its reveal's failure reason, or
    that it did not reveal before the deadline."""
    reasons: dict[str, str] = {}
    for failure in verdict.failures:
        reveal = next(iter(logged_entries(client, failure.reveal_leaf, failure.reveal_leaf + 1)))
        entry = reveal.entry
        reason = entry.failure if isinstance(entry, Reveal) and entry.failure else "failed"
        reasons[failure.builder] = reason
    for builder in verdict.missing:
        reasons[builder] = "no reveal before the deadline"
    return reasons


def summarize_reasons(reasons: dict[str, str]) -> str:
    """One line for people: builders that gave the same reason are named together.

    >>> summarize_reasons({"b1": "E0554", "b2": "E0554", "b3": "timeout"})
    'b1, b2: E0554; b3: timeout'
    """
    by_reason: dict[str, list[str]] = {}
    for builder, reason in sorted(reasons.items()):
        by_reason.setdefault(reason, []).append(builder)
    return "; ".join(f"{', '.join(names)}: {reason}" for reason, names in by_reason.items())


def can_be_explained(verdict: Verdict) -> bool:
    """Whether a diff report may come: only a mismatch of at least two outputs has one."""
    return verdict.outcome == "not-reproduced" and len(verdict.groups) >= 2


def find_diff_report(entries: list[LoggedEntry], job: str) -> str | None:
    """The SHA-256 of the diff report of ``job`` among ``entries``, if one is logged."""
    for logged in entries:
        if isinstance(logged.entry, DiffReport) and logged.entry.job == job:
            return logged.entry.report_sha256
    return None
