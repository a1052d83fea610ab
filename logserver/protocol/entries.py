"""The build protocol's log entries as values: their types, field checks and commitments.

A log entry is one of ``Request``, ``Commit``, ``Reveal``, ``Close``, ``Verdict`` and
``DiffReport`` (the ``Entry`` union). Each checks its fields when it is made, so an entry that
exists is well formed. Their JSON form is :mod:`logserver.protocol.entry_json`; signatures and
the leaf envelope (``{"entry": <signed entry>, "time": <log ms>}``) are
:mod:`logserver.protocol.signed`. spec/protocol.md is the normative description.

This module is pure: checks are strict (exact member sets, lowercase hex digests, bounded
strings) and raise :class:`~logserver.core.errors.FormatError`; the rules that decide whether an
entry may appear at a given point live in :mod:`logserver.protocol.rules`.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from logserver.core import canonical_json
from logserver.core.errors import FormatError

COMMIT_DOMAIN = b"synchronicity/commit/v1\n"
BUILD_FAILURE_DOMAIN = b"synchronicity/build-failure/v1\n"
MAX_LEAF_BYTES = 65_535
# A request carries its recipe: the canonical recipe may take a leaf but for room for the
# entry's other members, its signature, the network id and the leaf's time (under 1 KiB).
MAX_REQUEST_RECIPE_BYTES = MAX_LEAF_BYTES - 2048
MAX_NAME_BYTES = 255
MAX_REASON_BYTES = 1024
MAX_TIME_MS = canonical_json.MAX_SAFE_INTEGER

CloseReason = Literal["all-committed", "deadline"]
VerdictReason = Literal["all-revealed", "deadline"]
Outcome = Literal["reproduced", "not-reproduced", "failed"]
CLOSE_REASONS: tuple[CloseReason, ...] = ("all-committed", "deadline")
VERDICT_REASONS: tuple[VerdictReason, ...] = ("all-revealed", "deadline")
OUTCOMES: tuple[Outcome, ...] = ("reproduced", "not-reproduced", "failed")
EVIDENCE_KINDS = ("commitment-mismatch",)

_HEX32 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[\x21-\x2a\x2c-\x7e]+")  # printable ASCII without space and '+'


# ---------------------------------------------------------------------------- field checks


def require(condition: bool, what: str, reason: str) -> None:
    """Raise ``FormatError(what, reason)`` unless ``condition`` holds."""
    if not condition:
        raise FormatError(what, reason)


def check_digest(value: object, what: str, name: str) -> str:
    """Return ``value`` if it is a lowercase hex SHA-256 digest, else raise FormatError."""
    require(
        isinstance(value, str) and _HEX32.fullmatch(value) is not None,
        what,
        f"{name} is not 64 lowercase hex digits",
    )
    assert isinstance(value, str)
    return value


def check_name(value: object, what: str, name: str = "name") -> str:
    """Return ``value`` if it is a valid key/builder name (printable ASCII, no '+', ≤255)."""
    require(
        isinstance(value, str)
        and _NAME.fullmatch(value) is not None
        and len(value) <= MAX_NAME_BYTES,
        what,
        f"{name} must be 1-{MAX_NAME_BYTES} printable ASCII characters without space or '+'",
    )
    assert isinstance(value, str)
    return value


def check_names(values: object, what: str, name: str) -> tuple[str, ...]:
    """Return ``values`` as a tuple if it is a sorted, duplicate-free list of valid names."""
    require(isinstance(values, list | tuple), what, f"{name} is not a list")
    assert isinstance(values, list | tuple)
    names = tuple(check_name(v, what, name) for v in values)
    require(list(names) == sorted(set(names)), what, f"{name} is not sorted and unique")
    return names


def _freeze(entry: object, *names: str) -> None:
    """Store list members of a frozen dataclass as tuples, so equality follows content."""
    for name in names:
        value = getattr(entry, name)
        if isinstance(value, list):
            object.__setattr__(entry, name, tuple(value))


def _check_reason(value: object, what: str) -> str:
    require(isinstance(value, str) and value != "", what, "reason is not a non-empty string")
    assert isinstance(value, str)
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise FormatError(what, "reason contains a lone surrogate") from exc
    require(size <= MAX_REASON_BYTES, what, f"reason longer than {MAX_REASON_BYTES} bytes")
    return value


def check_index(value: object, what: str, name: str) -> int:
    """Return ``value`` if it is an integer in 0..2**53-1 (a leaf index or a time in ms)."""
    require(
        type(value) is int and 0 <= value <= MAX_TIME_MS,
        what,
        f"{name} is not a non-negative integer",
    )
    assert isinstance(value, int)
    return value


def members(obj: object, what: str, expected: set[str]) -> Mapping[str, Any]:
    """Return ``obj`` if it is an object with exactly the ``expected`` members."""
    require(isinstance(obj, dict), what, "not an object")
    assert isinstance(obj, dict)
    keys = set(obj)
    require(not keys - expected, what, f"unexpected members {sorted(keys - expected)}")
    require(not expected - keys, what, f"missing members {sorted(expected - keys)}")
    return obj


def _one_of(value: object, options: Sequence[str], what: str, name: str) -> Any:
    require(value in options, what, f"{name} must be one of {', '.join(options)}")
    return value


# ---------------------------------------------------------------------------- commitments


def failure_digest(reason: str) -> str:
    """The output digest a builder commits to when its build failed with ``reason``."""
    reason = _check_reason(reason, "build failure")
    return hashlib.sha256(BUILD_FAILURE_DOMAIN + reason.encode("utf-8")).hexdigest()


def compute_commitment(job: str, builder: str, output_digest: str, nonce: str) -> str:
    """SHA-256(domain ‖ job ‖ u8 len ‖ builder ‖ output digest ‖ nonce), as lowercase hex.

    ``job``, ``output_digest`` and ``nonce`` are 32-byte values given as hex; ``builder`` is
    the builder's name (ASCII, 1-255 bytes, prefixed by its length as one byte).
    """
    what = "commitment input"
    name = check_name(builder, what, "builder").encode("ascii")
    message = b"".join(
        [
            COMMIT_DOMAIN,
            bytes.fromhex(check_digest(job, what, "job")),
            bytes([len(name)]),
            name,
            bytes.fromhex(check_digest(output_digest, what, "output digest")),
            bytes.fromhex(check_digest(nonce, what, "nonce")),
        ]
    )
    return hashlib.sha256(message).hexdigest()


def new_nonce() -> str:
    """A fresh 32-byte commitment nonce from the operating system's CSPRNG, as hex."""
    return secrets.token_hex(32)


def job_id(recipe: Mapping[str, Any]) -> str:
    """The job id of a recipe: hex SHA-256 of its canonical JSON."""
    return hashlib.sha256(canonical_json.encode(recipe)).hexdigest()


# ---------------------------------------------------------------------------- entries


@dataclass(frozen=True)
class Request:
    """A rebuild request. ``recipe`` is opaque here (specified in builder/recipe.py)."""

    recipe: Mapping[str, Any]
    job: str = ""

    def __post_init__(self) -> None:
        what = "request entry"
        require(isinstance(self.recipe, dict), what, "recipe is not an object")
        encoded = canonical_json.encode(self.recipe)
        computed = hashlib.sha256(encoded).hexdigest()
        # A private copy in plain JSON types: later changes to the caller's dict cannot alter it.
        object.__setattr__(self, "recipe", json.loads(encoded))
        if self.job == "":
            object.__setattr__(self, "job", computed)
        require(self.job == computed, what, "job is not the SHA-256 of the canonical recipe")

    @property
    def display_name(self) -> str:
        """``name version`` from the recipe, for dashboards (best effort)."""
        name, version = self.recipe.get("name"), self.recipe.get("version")
        return " ".join(str(part) for part in (name, version) if isinstance(part, str))


@dataclass(frozen=True)
class Commit:
    """A builder's commitment to its (still secret) build result."""

    job: str
    builder: str
    commitment: str

    def __post_init__(self) -> None:
        what = "commit entry"
        check_digest(self.job, what, "job")
        check_name(self.builder, what, "builder")
        check_digest(self.commitment, what, "commitment")


@dataclass(frozen=True)
class Reveal:
    """A builder opens its commitment: a built output (digest + manifest) or a failure."""

    job: str
    builder: str
    nonce: str
    output_digest: str | None = None
    manifest_sha256: str | None = None
    failure: str | None = None

    def __post_init__(self) -> None:
        what = "reveal entry"
        check_digest(self.job, what, "job")
        check_name(self.builder, what, "builder")
        check_digest(self.nonce, what, "nonce")
        if self.failure is None:
            check_digest(self.output_digest, what, "output_digest")
            check_digest(self.manifest_sha256, what, "manifest_sha256")
        else:
            _check_reason(self.failure, what)
            require(
                self.output_digest is None and self.manifest_sha256 is None,
                what,
                "a failed build has no output digest or manifest",
            )

    @property
    def committed_digest(self) -> str:
        """The output digest the commitment covers (the failure digest for a failure)."""
        if self.failure is not None:
            return failure_digest(self.failure)
        assert self.output_digest is not None
        return self.output_digest

    def matches(self, commit: Commit) -> bool:
        """Whether this reveal opens ``commit``."""
        return commit.commitment == compute_commitment(
            self.job, self.builder, self.committed_digest, self.nonce
        )


@dataclass(frozen=True)
class Close:
    """Log-authored: no more commits for ``job``; ``committed`` may now reveal."""

    job: str
    reason: CloseReason
    committed: tuple[str, ...]

    def __post_init__(self) -> None:
        what = "close entry"
        check_digest(self.job, what, "job")
        _one_of(self.reason, CLOSE_REASONS, what, "reason")
        check_names(self.committed, what, "committed")
        _freeze(self, "committed")


@dataclass(frozen=True)
class Group:
    """Builders that revealed the same output digest."""

    output_digest: str
    builders: tuple[str, ...]

    def __post_init__(self) -> None:
        check_digest(self.output_digest, "verdict group", "output_digest")
        require(len(self.builders) > 0, "verdict group", "a group has no builders")
        check_names(self.builders, "verdict group", "builders")
        _freeze(self, "builders")


@dataclass(frozen=True)
class Failure:
    """A builder that revealed a build failure: the leaf of its reveal, which holds the reason.

    A verdict refers to the reason rather than copying it, so its size does not depend on
    what builders write (the largest verdict must fit one leaf).
    """

    builder: str
    reveal_leaf: int

    def __post_init__(self) -> None:
        check_name(self.builder, "verdict failure", "builder")
        check_index(self.reveal_leaf, "verdict failure", "reveal_leaf")


@dataclass(frozen=True)
class Evidence:
    """Proof of misbehaviour: the leaves of a commit and of a reveal that does not open it."""

    builder: str
    commit_leaf: int
    reveal_leaf: int
    kind: str = "commitment-mismatch"

    def __post_init__(self) -> None:
        what = "verdict evidence"
        check_name(self.builder, what, "builder")
        _one_of(self.kind, EVIDENCE_KINDS, what, "kind")
        check_index(self.commit_leaf, what, "commit_leaf")
        check_index(self.reveal_leaf, what, "reveal_leaf")
        require(self.commit_leaf < self.reveal_leaf, what, "commit must precede reveal")


@dataclass(frozen=True)
class Verdict:
    """Log-authored: the result of a job (see spec/protocol.md for the computation)."""

    job: str
    reason: VerdictReason
    outcome: Outcome
    threshold: int
    output_digest: str | None
    agreeing: tuple[str, ...]
    groups: tuple[Group, ...]
    failures: tuple[Failure, ...] = ()
    missing: tuple[str, ...] = ()
    evidence: tuple[Evidence, ...] = field(default=())

    def __post_init__(self) -> None:
        what = "verdict entry"
        _freeze(self, "agreeing", "groups", "failures", "missing", "evidence")
        for members, kind in [
            (self.groups, Group),
            (self.failures, Failure),
            (self.evidence, Evidence),
        ]:
            require(
                isinstance(members, tuple) and all(isinstance(m, kind) for m in members),
                what,
                f"{kind.__name__.lower()} list expected",
            )
        check_digest(self.job, what, "job")
        _one_of(self.reason, VERDICT_REASONS, what, "reason")
        _one_of(self.outcome, OUTCOMES, what, "outcome")
        require(type(self.threshold) is int and self.threshold >= 1, what, "threshold < 1")
        check_names(self.agreeing, what, "agreeing")
        check_names(self.missing, what, "missing")
        order = [(-len(g.builders), g.output_digest) for g in self.groups]
        require(order == sorted(set(order)), what, "groups not sorted by size then digest")
        check_names([f.builder for f in self.failures], what, "failures")
        check_names([e.builder for e in self.evidence], what, "evidence")
        everyone = [b for g in self.groups for b in g.builders]
        everyone += [f.builder for f in self.failures] + list(self.missing)
        everyone += [e.builder for e in self.evidence]
        require(len(everyone) == len(set(everyone)), what, "a builder is listed twice")
        if self.outcome == "reproduced":
            top = self.groups[0] if self.groups else None
            require(
                top is not None
                and top.output_digest == self.output_digest
                and top.builders == self.agreeing
                and len(self.agreeing) >= self.threshold,
                what,
                "a reproduced verdict names the largest group, of at least threshold builders",
            )
        else:
            require(
                self.output_digest is None and not self.agreeing,
                what,
                f"a {self.outcome} verdict has no output digest or agreeing builders",
            )
            require(
                bool(self.groups) == (self.outcome == "not-reproduced"),
                what,
                "not-reproduced needs groups; failed has none",
            )


@dataclass(frozen=True)
class DiffReport:
    """A diffoscope report (in the blob store) comparing outputs of a not-reproduced job."""

    job: str
    report_sha256: str
    groups: tuple[str, ...]

    def __post_init__(self) -> None:
        what = "diff-report entry"
        check_digest(self.job, what, "job")
        check_digest(self.report_sha256, what, "report_sha256")
        _freeze(self, "groups")
        require(isinstance(self.groups, tuple), what, "groups is not a list")
        for digest in self.groups:
            check_digest(digest, what, "group digest")
        require(
            len(self.groups) >= 2 and list(self.groups) == sorted(set(self.groups)),
            what,
            "groups must be at least two sorted, distinct output digests",
        )


Entry = Request | Commit | Reveal | Close | Verdict | DiffReport
LOG_AUTHORED = (Close, Verdict)
