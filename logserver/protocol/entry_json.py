"""The JSON form of build-protocol entries: ``entry_to_json`` and the strict ``entry_from_json``.

An entry object has a ``type`` and exactly the members of that type (spec/protocol.md); anything
else is a :class:`~logserver.core.errors.FormatError`. Signing (the ``signer`` and
``signature`` members) is :mod:`logserver.protocol.signed`. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from logserver.protocol.entries import (
    Close,
    Commit,
    DiffReport,
    Entry,
    Evidence,
    Failure,
    Group,
    Request,
    Reveal,
    Verdict,
    check_digest,
    check_names,
    members,
    require,
)


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
                "failures": [
                    {"builder": f.builder, "reveal_leaf": f.reveal_leaf} for f in entry.failures
                ],
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


def _list(value: object, what: str, name: str) -> list[Any]:
    require(isinstance(value, list), what, f"{name} is not a list")
    assert isinstance(value, list)
    return value


def _names(value: object, what: str, name: str) -> tuple[str, ...]:
    return check_names(_list(value, what, name), what, name)


def entry_from_json(obj: Mapping[str, Any]) -> Entry:
    """Parse entry members (``type`` plus the type's fields, nothing else) strictly."""
    what = "log entry"
    kind = obj.get("type")
    if kind == "reveal":
        kind = f"reveal/{obj.get('result')}"
    require(isinstance(kind, str) and kind in _MEMBERS, what, f"unknown type {kind!r}")
    assert isinstance(kind, str)
    what = f"{kind} entry"
    o = members(obj, what, _MEMBERS[kind] | {"type"})
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
                g = members(item, "verdict group", {"output_digest", "builders"})
                groups.append(
                    Group(g["output_digest"], _names(g["builders"], "verdict group", "builders"))
                )
            failures = [
                Failure(**members(f, "verdict failure", {"builder", "reveal_leaf"}))
                for f in _list(o["failures"], what, "failures")
            ]
            evidence = [
                Evidence(
                    **members(
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
