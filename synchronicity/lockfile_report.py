"""What a directory of verdict proofs says about every package of a ``Cargo.lock``, offline.

A consumer's question, cargo-vet style: for each crates.io package a lockfile pins, is there a
verdict proof for that name and version, does it verify against the trust policy, and what does
it say? Pure: text and bytes in, a :class:`LockReport` out; ``synchronicity verify --proofs DIR
--lockfile FILE`` (:mod:`synchronicity.cmd_verify`) reads the files and prints the report.

- :func:`parse_lockfile` reads every package of a lockfile (format 1 to 4), whatever its source:
  crates.io (``registry+https://github.com/rust-lang/crates.io-index`` or
  ``sparse+https://index.crates.io/``), path, git or another registry.
- :func:`examine_proof` checks one proof file (:func:`~logserver.protocol.verdict_proof.
  verify_verdict`) and reads which crate its recipe names. Proofs are matched to packages by
  that recipe, never by file name.
- :func:`build_report` gives each package a status (:data:`STATUSES`): ``reproduced``,
  ``not-reproduced`` or ``failed`` (a proof of that verdict verifies, its recipe is for this
  name and version and its ``crate_sha256`` is the lockfile's checksum); ``mismatch`` (a proof
  that verifies, for this name and version but other bytes); ``invalid`` (a proof that names
  this crate but does not verify; the detail says why); ``missing`` (no proof names it);
  ``skipped`` (not from crates.io: path, git or another registry). Of several proofs about one
  package the best status stands, in the order of :data:`RANK`.

>>> text = 'version = 4\\n[[package]]\\nname = "app"\\nversion = "0.1.0"\\n'
>>> report = build_report(parse_lockfile(text), [])
>>> [(p.package.name, p.status, p.detail) for p in report.packages]
[('app', 'skipped', 'a path dependency, not from a registry')]
>>> report.ok
True
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from builder.lockfile import CRATES_IO_SOURCES
from logserver.core import canonical_json
from logserver.core.errors import FormatError, UsageError, VerificationError
from logserver.core.policy import Policy
from logserver.core.proof import TlogProof
from logserver.protocol.verdict_proof import VerdictBundle, verify_verdict

STATUSES = ("reproduced", "not-reproduced", "failed", "mismatch", "invalid", "missing", "skipped")
RANK = ("reproduced", "not-reproduced", "failed", "mismatch", "invalid")  # best first

_PACKAGE_KEYS = {"name", "version", "source", "checksum", "dependencies", "replace"}
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]+)?")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_METADATA_KEY = re.compile(r"checksum (?P<name>\S+) (?P<version>\S+) \((?P<source>[^)]+)\)")
MAX_SHOWN = 120  # characters of a text from a proof file that a report shows


def printable(text: str, limit: int = MAX_SHOWN) -> str:
    """``text`` safe for a terminal: control characters escaped, at most ``limit`` characters."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


# ---------------------------------------------------------------------------- the lockfile


@dataclass(frozen=True)
class LockedCrate:
    """One ``[[package]]`` of a consumer's lockfile; ``source`` None for a path package."""

    name: str
    version: str
    source: str | None
    checksum: str | None  # SHA-256 of the .crate, for registry packages

    @property
    def kind(self) -> str:
        """``crates.io``, ``path``, ``git`` or ``registry`` (another registry)."""
        if self.source is None:
            return "path"
        if self.source in CRATES_IO_SOURCES:
            return "crates.io"
        return "git" if self.source.startswith("git+") else "registry"


def _bad(reason: str) -> FormatError:
    return FormatError("Cargo.lock", reason)


def _locked(raw: Any, metadata: dict[tuple[str, str, str], str]) -> LockedCrate:
    if not isinstance(raw, dict):
        raise _bad("[[package]] must be a table")
    unknown = set(raw) - _PACKAGE_KEYS
    if unknown:
        raise _bad(f"unknown package keys {sorted(unknown)}")
    name, version, source = raw.get("name"), raw.get("version"), raw.get("source")
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise _bad(f"package name {name!r} is not valid")
    if not isinstance(version, str) or _VERSION.fullmatch(version) is None:
        raise _bad(f"version {version!r} of {name} is not valid")
    if source is not None and (
        not isinstance(source, str)
        or not source.startswith(("registry+", "sparse+", "git+"))
        or not source.isprintable()
    ):
        raise _bad(f"{name}@{version} has an unknown source {source!r}")
    checksum = raw.get("checksum")
    if source is not None and checksum is None:
        checksum = metadata.get((name, version, source))
    if checksum is not None and not isinstance(checksum, str):
        raise _bad(f"the checksum of {name}@{version} is not a string")
    package = LockedCrate(name, version, source, checksum)
    if package.kind == "crates.io" and (checksum is None or _SHA256.fullmatch(checksum) is None):
        raise _bad(f"{name}@{version} from crates.io lacks a valid SHA-256 checksum")
    return package


def parse_lockfile(text: str) -> list[LockedCrate]:
    """Every package of a lockfile (formats 1 to 4), sorted by name, version and source;
    FormatError if it is not one."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _bad(f"not TOML: {e}") from e
    unknown = set(document) - {"version", "package", "metadata", "patch"}
    if unknown:
        raise _bad(f"unknown top-level keys {sorted(unknown)}")
    if "version" in document and document["version"] not in (3, 4):
        raise _bad(f"format version {document['version']!r} is not 1, 2, 3 or 4")
    metadata: dict[tuple[str, str, str], str] = {}
    raw_metadata = document.get("metadata", {})
    if not isinstance(raw_metadata, dict):
        raise _bad("[metadata] must be a table")
    for key, value in raw_metadata.items():
        match = _METADATA_KEY.fullmatch(key)
        if match is not None and isinstance(value, str):
            metadata[match["name"], match["version"], match["source"]] = value
    raw_packages = document.get("package", [])
    if not isinstance(raw_packages, list) or not raw_packages:
        raise _bad("no [[package]] entries")
    packages = [_locked(raw, metadata) for raw in raw_packages]
    keys = [(p.name, p.version, p.source or "") for p in packages]
    if len(set(keys)) != len(keys):
        raise _bad("a package appears twice")
    return sorted(packages, key=lambda p: (p.name, p.version, p.source or ""))


# ---------------------------------------------------------------------------- proof files


@dataclass(frozen=True)
class ProofFinding:
    """One proof file: the crate its recipe names (read even when the proof does not verify,
    so that the report can say which package an invalid proof was for) and, if it verifies,
    its verdict; else ``error`` says why not."""

    file: str
    name: str | None = None  # None: the file names no crate (not a verdict bundle, ...)
    version: str | None = None
    crate_sha256: str | None = None
    outcome: str | None = None  # the verified verdict's outcome; None if it did not verify
    error: str | None = None
    index: int | None = None
    origin: str | None = None
    job: str | None = None
    agreeing: int = 0  # builders that agreed (reproduced)

    @property
    def crate(self) -> str | None:
        return None if self.name is None else f"{self.name}@{self.version}"


def _claim(recipe_bytes: bytes) -> tuple[str, str, str | None] | None:
    """(name, version, crate_sha256) of a crates recipe, unverified; None if it names none."""
    try:
        recipe = canonical_json.decode_object(recipe_bytes)
    except FormatError:
        return None
    name, version, sha = (recipe.get(k) for k in ("name", "version", "crate_sha256"))
    if recipe.get("ecosystem") != "crates" or not isinstance(name, str):
        return None
    if not isinstance(version, str):
        return None
    return name, version, sha if isinstance(sha, str) else None


def examine_proof(file: str, data: bytes, policy: Policy) -> ProofFinding:
    """Check one proof file against ``policy`` and read which crate it is about."""
    try:
        extra = TlogProof.parse(data).extra
    except FormatError as e:
        return ProofFinding(file, error=str(e))
    if extra is None:
        return ProofFinding(file, error="no extra data, so no verdict bundle: it names no crate")
    try:
        bundle = VerdictBundle.from_extra(extra)
    except FormatError as e:  # e.g. an older proof of a verdict leaf alone, without its recipe
        return ProofFinding(file, error=f"not a verdict bundle, so it names no crate ({e})")
    claim = _claim(bundle.recipe)
    if claim is None:
        return ProofFinding(file, error="the bundle's recipe names no crates.io crate")
    name, version, sha = claim
    try:
        proven = verify_verdict(data, policy)
    except (FormatError, VerificationError, UsageError) as e:
        return ProofFinding(file, name, version, sha, error=str(e))
    verdict = proven.verdict
    return ProofFinding(
        file,
        name,
        version,
        sha,
        outcome=verdict.outcome,
        index=proven.index,
        origin=proven.origin,
        job=verdict.job,
        agreeing=len(verdict.agreeing),
    )


# ---------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class PackageReport:
    """A locked package, its status, why, and the proof that decided it (if any)."""

    package: LockedCrate
    status: str
    detail: str
    proof: ProofFinding | None = None
    others: tuple[ProofFinding, ...] = ()  # further proofs about this package


@dataclass(frozen=True)
class LockReport:
    """Every package of a lockfile with its status; proofs about no locked package."""

    packages: tuple[PackageReport, ...]
    unused: tuple[ProofFinding, ...] = field(default=())

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(p.status == s for p in self.packages) for s in STATUSES}

    @property
    def ok(self) -> bool:
        """Every package from crates.io is reproduced (the others are skipped)."""
        return all(p.status in ("reproduced", "skipped") for p in self.packages)


def _judge(package: LockedCrate, finding: ProofFinding) -> tuple[str, str]:
    """The status one proof about ``package`` gives it, and why."""
    where = finding.file
    if finding.error is not None or finding.outcome is None:
        return "invalid", f"{where}: {finding.error}"
    if finding.crate_sha256 != package.checksum:
        return "mismatch", (
            f"{where}: the verdict is for a .crate with SHA-256 {finding.crate_sha256}, "
            f"the lockfile pins {package.checksum}"
        )
    at = f"verdict #{finding.index} of {finding.origin}"
    if finding.outcome == "reproduced":
        return "reproduced", f"{where}: {at}, {finding.agreeing} builders agree"
    return finding.outcome, f"{where}: {at}"


def _skip_reason(package: LockedCrate) -> str:
    if package.kind == "path":
        return "a path dependency, not from a registry"
    if package.kind == "git":
        return f"a git dependency ({package.source}), not from a registry"
    return f"from another registry ({package.source}), not crates.io"


def build_report(packages: Sequence[LockedCrate], findings: Iterable[ProofFinding]) -> LockReport:
    """Match proofs to packages by the crate their recipe names, and judge each package."""
    by_crate: dict[tuple[str, str], list[ProofFinding]] = {}
    unused: list[ProofFinding] = []
    for finding in sorted(findings, key=lambda f: f.file):
        if finding.name is None or finding.version is None:
            unused.append(finding)
        else:
            by_crate.setdefault((finding.name, finding.version), []).append(finding)
    used: set[str] = set()
    out = []
    for package in packages:
        if package.kind != "crates.io":
            out.append(PackageReport(package, "skipped", _skip_reason(package)))
            continue
        about = by_crate.get((package.name, package.version), [])
        used.update(f.file for f in about)
        if not about:
            out.append(PackageReport(package, "missing", "no proof names this crate and version"))
            continue
        judged = sorted(((_judge(package, f), f) for f in about), key=lambda j: RANK.index(j[0][0]))
        (status, detail), best = judged[0]
        others = tuple(f for _, f in judged[1:])
        out.append(PackageReport(package, status, detail, best, others))
    unused += [f for fs in by_crate.values() for f in fs if f.file not in used]
    return LockReport(tuple(out), tuple(sorted(unused, key=lambda f: f.file)))


def render_table(report: LockReport) -> str:
    """The report for people: one line a package, then the counts (and unused proofs)."""
    rows = [("PACKAGE", "VERSION", "STATUS", "DETAIL")]
    rows += [
        (p.package.name, p.package.version, p.status, printable(p.detail, 400))
        for p in report.packages
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in rows
    ]
    counts = report.counts
    registry = len(report.packages) - counts["skipped"]
    judged = ", ".join(f"{counts[s]} {s}" for s in STATUSES[:-1] if counts[s] or s == "reproduced")
    lines.append("")
    lines.append(
        f"{registry} packages from crates.io: {judged}; "
        f"{counts['skipped']} skipped (not from crates.io)"
    )
    if report.unused:
        lines.append(f"{len(report.unused)} proof files are about no locked package:")
        for finding in report.unused:
            why = finding.error or f"a proof for {finding.crate}"
            lines.append(f"  {printable(finding.file)}: {printable(why)}")
    return "\n".join(lines) + "\n"


def report_json(report: LockReport) -> dict[str, Any]:
    """The report for machines (``--json``)."""

    def proof(finding: ProofFinding | None) -> dict[str, Any] | None:
        if finding is None:
            return None
        return {
            "file": finding.file,
            "crate": finding.crate,
            "outcome": finding.outcome,
            "error": finding.error,
            "verdict_index": finding.index,
            "log": finding.origin,
            "job": finding.job,
        }

    return {
        "ok": report.ok,
        "counts": report.counts,
        "packages": [
            {
                "name": p.package.name,
                "version": p.package.version,
                "source": p.package.source,
                "checksum": p.package.checksum,
                "status": p.status,
                "detail": p.detail,
                "proof": proof(p.proof),
                "other_proofs": [proof(f) for f in p.others],
            }
            for p in report.packages
        ],
        "unused_proofs": [proof(f) for f in report.unused],
    }
