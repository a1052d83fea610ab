"""The build protocol's log entries: formats, commitments, signatures and the leaf envelope.

Every leaf of the log is the canonical JSON (RFC 8785, :mod:`logserver.canonical_json`) of
``{"entry": <signed entry>, "time": <log milliseconds>}``. A signed entry is an object with a
``type`` (``request``, ``commit``, ``reveal``, ``close``, ``verdict``, ``diff-report``), the
type's fields, a ``signer`` (``{"name", "key_id"}``) and a ``signature``: base64 of the Ed25519
signature over ``"synchronicity/entry/v1\\n"`` followed by the canonical JSON of the entry
without its ``signature`` member. spec/protocol.md is the normative description.

This module is pure: parsing is strict (exact member sets, lowercase hex digests, canonical
base64, bounded strings) and raises :class:`~logserver.errors.FormatError`; the rules that
decide whether an entry may appear at a given point live in :mod:`logserver.buildproto`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from logserver import canonical_json
from logserver.errors import FormatError, VerificationError
from logserver.note import NoteSigner, NoteVerifier

ENTRY_DOMAIN = b"synchronicity/entry/v1\n"
COMMIT_DOMAIN = b"synchronicity/commit/v1\n"
BUILD_FAILURE_DOMAIN = b"synchronicity/build-failure/v1\n"
MAX_LEAF_BYTES = 65_535
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
_KEY_ID_HEX = re.compile(r"[0-9a-f]{8}")
_NAME = re.compile(r"[\x21-\x2a\x2c-\x7e]+")  # printable ASCII without space and '+'


# ---------------------------------------------------------------------------- field checks


def _check(condition: bool, what: str, reason: str) -> None:
    if not condition:
        raise FormatError(what, reason)


def check_digest(value: object, what: str, name: str) -> str:
    """Return ``value`` if it is a lowercase hex SHA-256 digest, else raise FormatError."""
    _check(
        isinstance(value, str) and _HEX32.fullmatch(value) is not None,
        what,
        f"{name} is not 64 lowercase hex digits",
    )
    assert isinstance(value, str)
    return value


def check_name(value: object, what: str, name: str = "name") -> str:
    """Return ``value`` if it is a valid key/builder name (printable ASCII, no '+', ≤255)."""
    _check(
        isinstance(value, str)
        and _NAME.fullmatch(value) is not None
        and len(value) <= MAX_NAME_BYTES,
        what,
        f"{name} must be 1-{MAX_NAME_BYTES} printable ASCII characters without space or '+'",
    )
    assert isinstance(value, str)
    return value


def _check_names(values: object, what: str, name: str) -> tuple[str, ...]:
    _check(isinstance(values, list | tuple), what, f"{name} is not a list")
    assert isinstance(values, list | tuple)
    names = tuple(check_name(v, what, name) for v in values)
    _check(list(names) == sorted(set(names)), what, f"{name} is not sorted and unique")
    return names


def _freeze(entry: object, *names: str) -> None:
    """Store list members of a frozen dataclass as tuples, so equality follows content."""
    for name in names:
        value = getattr(entry, name)
        if isinstance(value, list):
            object.__setattr__(entry, name, tuple(value))


def _check_reason(value: object, what: str) -> str:
    _check(isinstance(value, str) and value != "", what, "reason is not a non-empty string")
    assert isinstance(value, str)
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise FormatError(what, "reason contains a lone surrogate") from exc
    _check(size <= MAX_REASON_BYTES, what, f"reason longer than {MAX_REASON_BYTES} bytes")
    return value


def _check_index(value: object, what: str, name: str) -> int:
    _check(
        type(value) is int and 0 <= value <= MAX_TIME_MS,
        what,
        f"{name} is not a non-negative integer",
    )
    assert isinstance(value, int)
    return value


def _members(obj: object, what: str, expected: set[str]) -> Mapping[str, Any]:
    _check(isinstance(obj, dict), what, "not an object")
    assert isinstance(obj, dict)
    keys = set(obj)
    _check(not keys - expected, what, f"unexpected members {sorted(keys - expected)}")
    _check(not expected - keys, what, f"missing members {sorted(expected - keys)}")
    return obj


def _one_of(value: object, options: Sequence[str], what: str, name: str) -> Any:
    _check(value in options, what, f"{name} must be one of {', '.join(options)}")
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
        _check(isinstance(self.recipe, dict), what, "recipe is not an object")
        encoded = canonical_json.encode(self.recipe)
        computed = hashlib.sha256(encoded).hexdigest()
        # A private copy in plain JSON types: later changes to the caller's dict cannot alter it.
        object.__setattr__(self, "recipe", json.loads(encoded))
        if self.job == "":
            object.__setattr__(self, "job", computed)
        _check(self.job == computed, what, "job is not the SHA-256 of the canonical recipe")

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
            _check(
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
        _check_names(self.committed, what, "committed")
        _freeze(self, "committed")


@dataclass(frozen=True)
class Group:
    """Builders that revealed the same output digest."""

    output_digest: str
    builders: tuple[str, ...]

    def __post_init__(self) -> None:
        check_digest(self.output_digest, "verdict group", "output_digest")
        _check(len(self.builders) > 0, "verdict group", "a group has no builders")
        _check_names(self.builders, "verdict group", "builders")
        _freeze(self, "builders")


@dataclass(frozen=True)
class Failure:
    """A builder that revealed a build failure."""

    builder: str
    reason: str

    def __post_init__(self) -> None:
        check_name(self.builder, "verdict failure", "builder")
        _check_reason(self.reason, "verdict failure")


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
        _check_index(self.commit_leaf, what, "commit_leaf")
        _check_index(self.reveal_leaf, what, "reveal_leaf")
        _check(self.commit_leaf < self.reveal_leaf, what, "commit must precede reveal")


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
            _check(
                isinstance(members, tuple) and all(isinstance(m, kind) for m in members),
                what,
                f"{kind.__name__.lower()} list expected",
            )
        check_digest(self.job, what, "job")
        _one_of(self.reason, VERDICT_REASONS, what, "reason")
        _one_of(self.outcome, OUTCOMES, what, "outcome")
        _check(type(self.threshold) is int and self.threshold >= 1, what, "threshold < 1")
        _check_names(self.agreeing, what, "agreeing")
        _check_names(self.missing, what, "missing")
        order = [(-len(g.builders), g.output_digest) for g in self.groups]
        _check(order == sorted(set(order)), what, "groups not sorted by size then digest")
        _check_names([f.builder for f in self.failures], what, "failures")
        _check_names([e.builder for e in self.evidence], what, "evidence")
        everyone = [b for g in self.groups for b in g.builders]
        everyone += [f.builder for f in self.failures] + list(self.missing)
        everyone += [e.builder for e in self.evidence]
        _check(len(everyone) == len(set(everyone)), what, "a builder is listed twice")
        if self.outcome == "reproduced":
            top = self.groups[0] if self.groups else None
            _check(
                top is not None
                and top.output_digest == self.output_digest
                and top.builders == self.agreeing
                and len(self.agreeing) >= self.threshold,
                what,
                "a reproduced verdict names the largest group, of at least threshold builders",
            )
        else:
            _check(
                self.output_digest is None and not self.agreeing,
                what,
                f"a {self.outcome} verdict has no output digest or agreeing builders",
            )
            _check(
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
        _check(isinstance(self.groups, tuple), what, "groups is not a list")
        for digest in self.groups:
            check_digest(digest, what, "group digest")
        _check(
            len(self.groups) >= 2 and list(self.groups) == sorted(set(self.groups)),
            what,
            "groups must be at least two sorted, distinct output digests",
        )


Entry = Request | Commit | Reveal | Close | Verdict | DiffReport
LOG_AUTHORED = (Close, Verdict)


# ---------------------------------------------------------------------------- JSON forms


def entry_to_json(entry: Entry) -> dict[str, Any]:
    """The members of an entry object, without ``signer`` and ``signature``."""
    match entry:
        case Request():
            return {"type": "request", "job": entry.job, "recipe": dict(entry.recipe)}
        case Commit():
            return {
                "type": "commit",
                "job": entry.job,
                "builder": entry.builder,
                "commitment": entry.commitment,
            }
        case Reveal():
            result: dict[str, Any] = {
                "type": "reveal",
                "job": entry.job,
                "builder": entry.builder,
                "nonce": entry.nonce,
            }
            if entry.failure is None:
                result |= {
                    "result": "built",
                    "output_digest": entry.output_digest,
                    "manifest_sha256": entry.manifest_sha256,
                }
            else:
                result |= {"result": "failed", "reason": entry.failure}
            return result
        case Close():
            return {
                "type": "close",
                "job": entry.job,
                "reason": entry.reason,
                "committed": list(entry.committed),
            }
        case Verdict():
            return {
                "type": "verdict",
                "job": entry.job,
                "reason": entry.reason,
                "outcome": entry.outcome,
                "threshold": entry.threshold,
                "output_digest": entry.output_digest,
                "agreeing": list(entry.agreeing),
                "groups": [
                    {"output_digest": g.output_digest, "builders": list(g.builders)}
                    for g in entry.groups
                ],
                "failures": [{"builder": f.builder, "reason": f.reason} for f in entry.failures],
                "missing": list(entry.missing),
                "evidence": [
                    {
                        "kind": e.kind,
                        "builder": e.builder,
                        "commit_leaf": e.commit_leaf,
                        "reveal_leaf": e.reveal_leaf,
                    }
                    for e in entry.evidence
                ],
            }
        case DiffReport():
            return {
                "type": "diff-report",
                "job": entry.job,
                "report_sha256": entry.report_sha256,
                "groups": list(entry.groups),
            }


_MEMBERS = {
    "request": {"job", "recipe"},
    "commit": {"job", "builder", "commitment"},
    "reveal/built": {"job", "builder", "nonce", "result", "output_digest", "manifest_sha256"},
    "reveal/failed": {"job", "builder", "nonce", "result", "reason"},
    "close": {"job", "reason", "committed"},
    "verdict": {
        "job",
        "reason",
        "outcome",
        "threshold",
        "output_digest",
        "agreeing",
        "groups",
        "failures",
        "missing",
        "evidence",
    },
    "diff-report": {"job", "report_sha256", "groups"},
}
_ENVELOPE = {"type", "signer", "signature"}


def _list(value: object, what: str, name: str) -> list[Any]:
    _check(isinstance(value, list), what, f"{name} is not a list")
    assert isinstance(value, list)
    return value


def _names(value: object, what: str, name: str) -> tuple[str, ...]:
    return _check_names(_list(value, what, name), what, name)


def entry_from_json(obj: Mapping[str, Any]) -> Entry:
    """Parse entry members (``type`` plus the type's fields, nothing else) strictly."""
    what = "log entry"
    kind = obj.get("type")
    if kind == "reveal":
        kind = f"reveal/{obj.get('result')}"
    _check(isinstance(kind, str) and kind in _MEMBERS, what, f"unknown type {kind!r}")
    assert isinstance(kind, str)
    what = f"{kind} entry"
    o = _members(obj, what, _MEMBERS[kind] | {"type"})
    match kind:
        case "request":
            return Request(recipe=o["recipe"], job=check_digest(o["job"], what, "job"))
        case "commit":
            return Commit(job=o["job"], builder=o["builder"], commitment=o["commitment"])
        case "reveal/built":
            return Reveal(
                job=o["job"],
                builder=o["builder"],
                nonce=o["nonce"],
                output_digest=o["output_digest"],
                manifest_sha256=o["manifest_sha256"],
            )
        case "reveal/failed":
            return Reveal(job=o["job"], builder=o["builder"], nonce=o["nonce"], failure=o["reason"])
        case "close":
            return Close(
                job=o["job"],
                reason=o["reason"],
                committed=_names(o["committed"], what, "committed"),
            )
        case "verdict":
            groups = []
            for item in _list(o["groups"], what, "groups"):
                g = _members(item, "verdict group", {"output_digest", "builders"})
                groups.append(
                    Group(g["output_digest"], _names(g["builders"], "verdict group", "builders"))
                )
            failures = [
                Failure(**_members(f, "verdict failure", {"builder", "reason"}))
                for f in _list(o["failures"], what, "failures")
            ]
            evidence = [
                Evidence(
                    **_members(
                        e, "verdict evidence", {"kind", "builder", "commit_leaf", "reveal_leaf"}
                    )
                )
                for e in _list(o["evidence"], what, "evidence")
            ]
            digest = o["output_digest"]
            return Verdict(
                job=o["job"],
                reason=o["reason"],
                outcome=o["outcome"],
                threshold=o["threshold"],
                output_digest=None if digest is None else check_digest(digest, what, "digest"),
                agreeing=_names(o["agreeing"], what, "agreeing"),
                groups=tuple(groups),
                failures=tuple(failures),
                missing=_names(o["missing"], what, "missing"),
                evidence=tuple(evidence),
            )
        case _:  # "diff-report"
            return DiffReport(
                job=o["job"],
                report_sha256=o["report_sha256"],
                groups=tuple(_list(o["groups"], what, "groups")),
            )


# ---------------------------------------------------------------------------- signatures


# Entry keys are signed-note Ed25519 keys: ``logserver.note.Signer`` and ``Verifier`` (or
# anything with their shape: ``name``, ``key_id`` as a uint32, ``sign``/``verify``).
EntrySigner = NoteSigner
EntryVerifier = NoteVerifier


@dataclass(frozen=True)
class KeyRef:
    """The identity of a signing key inside an entry: name and signed-note key ID (uint32)."""

    name: str
    key_id: int

    def __post_init__(self) -> None:
        check_name(self.name, "entry signer")
        _check(type(self.key_id) is int and 0 <= self.key_id < 2**32, "entry signer", "bad key ID")

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "key_id": f"{self.key_id:08x}"}

    def __str__(self) -> str:
        return f"{self.name}+{self.key_id:08x}"


@dataclass(frozen=True)
class SignedEntry:
    """An entry with its author's identity and signature."""

    entry: Entry
    signer: KeyRef
    signature: bytes

    def unsigned_json(self) -> dict[str, Any]:
        return unsigned_entry_json(self.entry, self.signer)

    def signed_message(self) -> bytes:
        return ENTRY_DOMAIN + canonical_json.encode(self.unsigned_json())

    def to_json(self) -> dict[str, Any]:
        return self.unsigned_json() | {"signature": base64.b64encode(self.signature).decode()}

    @classmethod
    def from_json(cls, obj: object) -> SignedEntry:
        what = "signed entry"
        _check(isinstance(obj, dict), what, "not an object")
        assert isinstance(obj, dict)
        for member in sorted(_ENVELOPE):
            _check(member in obj, what, f"missing member {member!r}")
        signer = _members(obj["signer"], "entry signer", {"name", "key_id"})
        key_id = signer["key_id"]
        _check(
            isinstance(key_id, str) and _KEY_ID_HEX.fullmatch(key_id) is not None,
            "entry signer",
            "key_id is not 8 lowercase hex digits",
        )
        entry = entry_from_json({k: v for k, v in obj.items() if k not in {"signer", "signature"}})
        encoded = obj["signature"]
        _check(isinstance(encoded, str), what, "signature is not a string")
        try:
            signature = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise FormatError(what, "signature is not base64") from exc
        _check(
            len(signature) == 64 and base64.b64encode(signature).decode() == encoded,
            what,
            "signature is not canonical base64 of 64 bytes",
        )
        return cls(
            entry,
            KeyRef(check_name(signer["name"], "entry signer"), int(key_id, 16)),
            signature,
        )


def unsigned_entry_json(entry: Entry, signer: KeyRef) -> dict[str, Any]:
    """The object that is signed: the entry's members plus ``signer``."""
    return entry_to_json(entry) | {"signer": signer.to_json()}


def sign_entry(entry: Entry, signer: EntrySigner) -> SignedEntry:
    """Sign ``entry`` with ``signer`` (domain-separated, over its canonical JSON)."""
    unsigned = SignedEntry(entry, KeyRef(signer.name, signer.key_id), b"")
    return SignedEntry(entry, unsigned.signer, signer.sign(unsigned.signed_message()))


def verify_entry(signed: SignedEntry, verifier: EntryVerifier) -> None:
    """Raise VerificationError unless ``verifier``'s key made ``signed``'s signature."""
    expected = KeyRef(verifier.name, verifier.key_id)
    if signed.signer != expected:
        raise VerificationError(f"entry signed by {signed.signer}, expected {expected}")
    if not verifier.verify(signed.signed_message(), signed.signature):
        raise VerificationError(f"bad entry signature by {signed.signer.name}")


# ---------------------------------------------------------------------------- leaves


@dataclass(frozen=True)
class Leaf:
    """A log leaf: a signed entry stamped with the log's time in milliseconds."""

    entry: SignedEntry
    time_ms: int

    def __post_init__(self) -> None:
        _check_index(self.time_ms, "log leaf", "time")

    def to_bytes(self) -> bytes:
        """Canonical JSON of ``{"entry": ..., "time": ...}``; FormatError if over 65,535 bytes."""
        data = canonical_json.encode({"entry": self.entry.to_json(), "time": self.time_ms})
        _check(len(data) <= MAX_LEAF_BYTES, "log leaf", f"{len(data)} bytes > {MAX_LEAF_BYTES}")
        return data

    @classmethod
    def parse(cls, data: bytes) -> Leaf:
        """Strictly parse an encoded leaf (canonical, bounded, every member checked)."""
        obj = canonical_json.decode_object(data, max_bytes=MAX_LEAF_BYTES)
        obj = dict(_members(obj, "log leaf", {"entry", "time"}))
        return cls(
            SignedEntry.from_json(obj["entry"]), _check_index(obj["time"], "log leaf", "time")
        )
