"""A campaign's list, state and summary: the parts of ``synchronicity campaign`` without I/O
beyond its own files (``cmd_campaign`` runs it against a network).

- The list (FILE): one ``NAME`` or ``NAME@VERSION`` a line; blank lines and ``#`` comments are
  ignored; a line given twice counts once. ``parse_campaign`` raises UsageError naming the line.
- The state (``DIR/campaign.json``, written atomically after every change): per line, the
  version it was pinned to, its job, the index of its request in the log, how many requests
  this campaign logged for it, and once it has one, its outcome and reason. A rerun skips what
  has an outcome and follows what was requested. Recipes are kept next to it
  (``DIR/recipes/<job>.json``) so that a rerun requests exactly the job it pinned. A state file
  that does not parse is an error naming it, never a fresh start.
- The summary: ``summary.json`` (``total``, ``reproduced``, ``not_reproduced``, ``failed``,
  ``pending`` and per crate ``outcome`` and ``reason``) and ``summary.md`` (a table).

>>> parse_campaign("itoa@1.0.11\\n# a comment\\n\\nhex   # newest\\nitoa@1.0.11\\n")
['itoa@1.0.11', 'hex']
>>> count_outcomes([CrateState("a", outcome="reproduced"), CrateState("b")])["pending"]
1
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from logserver.core.errors import OperationalError, UsageError
from logserver.fsutil import atomic_write

STATE_FILE = "campaign.json"
STATE_FORMAT = "synchronicity-campaign/v1"
RECIPES_DIR = "recipes"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
POLICY_FILE = "network.policy"
OUTCOMES = ("reproduced", "not-reproduced", "failed")
PUBLIC = 0o644

_NAME = r"[A-Za-z][A-Za-z0-9_-]{0,63}"
_VERSION = r"[0-9]+\.[0-9]+\.[0-9]+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?"
_LINE = re.compile(rf"({_NAME})(?:@({_VERSION}))?")


def parse_campaign(text: str, where: str = "the campaign file") -> list[str]:
    """The crates a campaign file lists (``NAME`` or ``NAME@VERSION``), first mention first."""
    specs: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if _LINE.fullmatch(line) is None:
            raise UsageError(f"{where}, line {number}: {line!r} is not NAME or NAME@VERSION")
        if line not in specs:
            specs.append(line)
    if not specs:
        raise UsageError(f"{where} lists no crates")
    return specs


def read_campaign(path: Path) -> list[str]:
    """``parse_campaign`` of a file; a file that is not UTF-8 text is a usage error."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text: {e}") from e
    return parse_campaign(text, str(path))


@dataclass
class CrateState:
    """What a campaign knows of one line of its list."""

    spec: str  # the line: NAME or NAME@VERSION
    version: str | None = None  # the version the line was pinned to
    job: str | None = None  # the recipe digest; its recipe is in DIR/recipes/<job>.json
    request_index: int | None = None  # the index of the job's request leaf
    asked_at: int | None = None  # the log's size when the campaign last asked for the job
    requests: int = 0  # requests this campaign logged for the job (a resumed one: still 1)
    outcome: str | None = None  # reproduced, not-reproduced or failed; None while pending
    reason: str = ""  # why not reproduced: builders' failure reasons or "diff report: FILE"
    verdict_index: int | None = None
    proof: str | None = None  # file name in DIR
    diff_report: str | None = None  # file name in DIR
    failures: dict[str, str] = field(default_factory=dict)  # builder -> reason
    seconds: float | None = None  # from the request to the outcome, this campaign's clock

    @property
    def name(self) -> str:
        return self.spec.partition("@")[0]

    @property
    def label(self) -> str:
        """NAME@VERSION once pinned, else the line."""
        return f"{self.name}@{self.version}" if self.version else self.spec

    @property
    def stem(self) -> str:
        """The file name stem of its proof and diff report: NAME-VERSION."""
        return f"{self.name}-{self.version}"

    def finish(self, outcome: str, reason: str = "", **more: Any) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        self.outcome, self.reason = outcome, reason
        for key, value in more.items():
            setattr(self, key, value)


_FIELDS = {f.name: f for f in dataclasses.fields(CrateState)}


def _crate_from_json(value: object) -> CrateState:
    if not isinstance(value, dict) or not set(value) <= set(_FIELDS) or "spec" not in value:
        raise ValueError("a crate is not an object with the state's fields")
    crate = CrateState(**value)
    if crate.outcome is not None and crate.outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {crate.outcome!r}")
    if not isinstance(crate.failures, dict) or not isinstance(crate.requests, int):
        raise ValueError("failures must be an object and requests a number")
    return crate


@dataclass
class CampaignState:
    """A campaign's state file: the network it runs on and one ``CrateState`` per line."""

    directory: Path
    network_id: str
    crates: dict[str, CrateState] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path, network_id: str) -> CampaignState:
        """The state in ``directory`` (a fresh one if there is none) of a campaign on
        ``network_id``; a state of another network is a usage error."""
        path = directory / STATE_FILE
        if not path.exists():
            return cls(directory, network_id)
        try:
            value = json.loads(path.read_bytes())
            if not isinstance(value, dict) or value.get("format") != STATE_FORMAT:
                raise ValueError(f"not a {STATE_FORMAT} object")
            crates = [_crate_from_json(c) for c in value["crates"]]
            stored_network = value["network_id"]
            if not isinstance(stored_network, str):
                raise ValueError("network_id is not a string")
        except (ValueError, KeyError, TypeError) as e:
            raise OperationalError(f"the campaign state {path} is corrupt: {e}") from e
        if stored_network != network_id:
            raise UsageError(
                f"{directory} holds a campaign on network {stored_network!r}, not "
                f"{network_id!r}: give another --out"
            )
        return cls(directory, network_id, {c.spec: c for c in crates})

    def crate(self, spec: str) -> CrateState:
        """The state of line ``spec`` (created pending)."""
        return self.crates.setdefault(spec, CrateState(spec))

    def save(self) -> None:
        value = {
            "format": STATE_FORMAT,
            "network_id": self.network_id,
            "crates": [dataclasses.asdict(c) for c in self.crates.values()],
        }
        data = json.dumps(value, indent=1, sort_keys=True).encode() + b"\n"
        atomic_write(self.directory / STATE_FILE, data, PUBLIC)

    def save_recipe(self, job: str, recipe_json: bytes) -> None:
        (self.directory / RECIPES_DIR).mkdir(exist_ok=True)
        atomic_write(self.directory / RECIPES_DIR / f"{job}.json", recipe_json, PUBLIC)

    def recipe(self, job: str) -> bytes | None:
        path = self.directory / RECIPES_DIR / f"{job}.json"
        return path.read_bytes() if path.exists() else None


def count_outcomes(crates: Iterable[CrateState]) -> dict[str, int]:
    """total, reproduced, not_reproduced, failed and pending."""
    listed = list(crates)
    counts = {"total": len(listed), "reproduced": 0, "not_reproduced": 0, "failed": 0}
    for crate in listed:
        if crate.outcome is not None:
            counts[crate.outcome.replace("-", "_")] += 1
    counts["pending"] = counts["total"] - sum(
        counts[k] for k in ("reproduced", "not_reproduced", "failed")
    )
    return counts


def summary(crates: list[CrateState], network_id: str) -> dict[str, Any]:
    """The ``summary.json`` of the crates of a campaign's list (in its order)."""
    return {
        **count_outcomes(crates),
        "network_id": network_id,
        "policy": POLICY_FILE,
        "crates": [
            {
                "crate": crate.label,
                "line": crate.spec,
                "name": crate.name,
                "version": crate.version,
                "job": crate.job,
                "outcome": crate.outcome,
                "reason": crate.reason,
                "proof": crate.proof,
                "diff_report": crate.diff_report,
                "failures": crate.failures,
                "verdict_index": crate.verdict_index,
            }
            for crate in crates
        ],
    }


def summary_markdown(report: dict[str, Any]) -> str:
    """``summary.md``: the counts, then one table row per crate."""
    lines = [
        "# Campaign summary",
        "",
        f"Network `{report['network_id']}`: {report['total']} crates, "
        f"{report['reproduced']} reproduced, {report['not_reproduced']} not reproduced, "
        f"{report['failed']} failed, {report['pending']} pending.",
        "",
        f"Check a proof: `synchronicity verify --policy {report['policy']} "
        "--proof NAME-VERSION.tlog-proof`",
        "",
        "| crate | outcome | reason | proof |",
        "|---|---|---|---|",
    ]
    for crate in report["crates"]:
        reason = str(crate["reason"] or "").replace("|", "\\|").replace("\n", " ")
        proof = f"[{crate['proof']}]({crate['proof']})" if crate["proof"] else ""
        lines.append(f"| {crate['crate']} | {crate['outcome'] or 'pending'} | {reason} | {proof} |")
    return "\n".join(lines) + "\n"


def write_summary(directory: Path, report: dict[str, Any]) -> None:
    data = json.dumps(report, indent=1, sort_keys=True).encode() + b"\n"
    atomic_write(directory / SUMMARY_JSON, data, PUBLIC)
    atomic_write(directory / SUMMARY_MD, summary_markdown(report).encode(), PUBLIC)


class Display:
    """A campaign's progress on stderr: on a terminal one line that updates in place (bar,
    done/total, counts by outcome, elapsed); otherwise one line per finished crate."""

    WIDTH = 24

    def __init__(self, stream: TextIO, total: int, tty: bool | None = None) -> None:
        self.stream = stream
        self.total = total
        self.tty = stream.isatty() if tty is None else tty
        self.started = time.monotonic()
        self._bar = ""

    def say(self, line: str) -> None:
        """A line of its own (the bar, if shown, is drawn again below it)."""
        if self.tty and self._bar:
            self.stream.write("\r\x1b[K")
        self.stream.write(line + "\n")
        if self.tty and self._bar:
            self.stream.write(self._bar)
        self.stream.flush()

    def finished(self, crate: CrateState, done: int) -> None:
        """A crate got its outcome (``done`` of ``total`` now have one)."""
        if not self.tty:
            why = f" ({crate.reason})" if crate.reason else ""
            self.say(f"[{done}/{self.total}] {crate.label}: {crate.outcome}{why}")

    def update(self, counts: dict[str, int], running: int) -> None:
        """Redraw the bar (on a terminal)."""
        if not self.tty:
            return
        done = counts["total"] - counts["pending"]
        filled = self.WIDTH * done // max(1, counts["total"])
        self._bar = (
            f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] {done}/{counts['total']}  "
            f"reproduced {counts['reproduced']}  not reproduced {counts['not_reproduced']}  "
            f"failed {counts['failed']}  in flight {running}  "
            f"{elapsed(time.monotonic() - self.started)}"
        )
        self.stream.write("\r\x1b[K" + self._bar)
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._bar:
            self.stream.write("\n")
            self.stream.flush()
            self._bar = ""


def elapsed(seconds: float) -> str:
    """``1h02m03s``, ``2m05s`` or ``7s``.

    >>> elapsed(3723), elapsed(125), elapsed(7.4)
    ('1h02m03s', '2m05s', '7s')
    """
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
