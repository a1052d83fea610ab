"""The dashboard's build page: one job's request, commits, reveals, close, verdict and diff reports.

Pure: :func:`collect` sorts the job's leaves (given in log order) into a :class:`BuildRecord`,
and :func:`render_build` turns it into HTML with the helpers of :mod:`logserver.dashboard.pages`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from logserver.dashboard.index import JobSummary
from logserver.dashboard.pages import (
    badge,
    code,
    esc,
    fmt_duration,
    fmt_time,
    kv_table,
    layout,
    recipe_rows,
    short,
    table,
)
from logserver.protocol.entries import Close, Commit, DiffReport, Request, Reveal, Verdict
from logserver.protocol.signed import Leaf


@dataclass(frozen=True)
class Logged:
    """An entry of the job with its leaf index, log time and signer name."""

    index: int
    time: int
    signer: str


@dataclass
class BuildRecord:
    """One job's leaves as the build page shows them: the request, commits, reveals, close,
    verdict and diff reports, each with its leaf index."""

    request: tuple[Logged, Request] | None = None
    commits: dict[str, tuple[Logged, Commit]] = field(default_factory=dict)
    reveals: dict[str, tuple[Logged, Reveal]] = field(default_factory=dict)
    close: tuple[Logged, Close] | None = None
    verdict: tuple[Logged, Verdict] | None = None
    diff_reports: list[tuple[Logged, DiffReport]] = field(default_factory=list)

    @property
    def builders(self) -> list[str]:
        names = set(self.commits) | set(self.reveals)
        if self.close is not None:
            names |= set(self.close[1].committed)
        return sorted(names)


def collect(leaves: Sequence[tuple[int, Leaf]]) -> BuildRecord:
    """Sort a job's leaves into their roles; the first of each kind stands, as in the log."""
    record = BuildRecord()
    for index, leaf in leaves:
        at = Logged(index, leaf.time_ms, leaf.entry.signer.name)
        match leaf.entry.entry:
            case Request() as request if record.request is None:
                record.request = (at, request)
            case Commit() as commit:
                record.commits.setdefault(commit.builder, (at, commit))
            case Reveal() as reveal:
                record.reveals.setdefault(reveal.builder, (at, reveal))
            case Close() as close if record.close is None:
                record.close = (at, close)
            case Verdict() as verdict if record.verdict is None:
                record.verdict = (at, verdict)
            case DiffReport() as report:
                record.diff_reports.append((at, report))
            case _:
                pass
    return record


def _leaf(at: Logged) -> str:
    return f'<a href="/entry/{at.index}">#{at.index}</a> {esc(fmt_time(at.time))}'


def _blob(digest: str, label: str) -> str:
    return f'<a href="/blob/{esc(digest)}">{esc(label)}</a>'


def _builders_table(record: BuildRecord) -> str:
    rows = []
    for builder in record.builders:
        commit = record.commits.get(builder)
        reveal = record.reveals.get(builder)
        result, manifest, opens = "—", "—", "—"
        if reveal is not None:
            r = reveal[1]
            if r.failure is not None:
                result = f"build failed: {esc(r.failure)}"
            else:
                result = short(r.output_digest)
                assert r.manifest_sha256 is not None
                manifest = _blob(r.manifest_sha256, "manifest")
            if commit is not None:
                opens = "yes" if r.matches(commit[1]) else "<b>NO: misbehaviour</b>"
        rows.append(
            [
                esc(builder),
                _leaf(commit[0]) if commit else "no commit",
                _leaf(reveal[0]) if reveal else "no reveal",
                result,
                manifest,
                opens,
            ]
        )
    headers = ["builder", "commit", "reveal", "output digest", "manifest", "opens commit"]
    return table(headers, rows, "builders")


def _verdict_section(record: BuildRecord, published_size: int) -> str:
    if record.verdict is None:
        return "<h2>Verdict</h2><p>No verdict yet.</p>"
    at, v = record.verdict
    rows = [
        ["outcome", badge(v.outcome)],
        ["reason", esc(v.reason)],
        ["logged", _leaf(at)],
        ["threshold", esc(v.threshold)],
        ["output digest", code(v.output_digest) if v.output_digest else "—"],
        ["agreeing", esc(", ".join(v.agreeing)) or "—"],
    ]
    for g in v.groups:
        rows.append([f"group {g.output_digest[:16]}…", esc(", ".join(g.builders))])
    for failure in v.failures:  # the verdict refers to the reveal, which holds the reason
        reveal = record.reveals.get(failure.builder)
        reason = esc(reveal[1].failure) if reveal and reveal[1].failure else ""
        link = f'<a href="/entry/{failure.reveal_leaf}">#{failure.reveal_leaf}</a>'
        rows.append([f"failure of {failure.builder}", f"{reason} (reveal {link})".strip()])
    if v.missing:
        rows.append(["did not reveal", esc(", ".join(v.missing))])
    for e in v.evidence:
        rows.append(
            [
                f"evidence against {e.builder}",
                f'{esc(e.kind)}: commit <a href="/entry/{e.commit_leaf}">#{e.commit_leaf}</a>, '
                f'reveal <a href="/entry/{e.reveal_leaf}">#{e.reveal_leaf}</a>',
            ]
        )
    parts = ["<h2>Verdict</h2>", kv_table(rows, "verdict")]
    if at.index < published_size:
        parts.append(
            f'<p><a id="proof" href="/proof/tlog?index={at.index}" download>'
            "Download the proof file</a> (verdict, inclusion proof, cosigned checkpoint), "
            "for <code>synchronicity verify</code>.</p>"
        )
    else:
        parts.append(
            f"<p>The proof file will be available once a published checkpoint covers leaf "
            f"{at.index} (published size {published_size}).</p>"
        )
    return "".join(parts)


def render_build(
    origin: str, summary: JobSummary, leaves: Sequence[tuple[int, Leaf]], published_size: int
) -> str:
    record = collect(leaves)
    title = f"{summary.name} {summary.version}".strip() or "(unnamed)"
    parts = [f"<h1>{esc(title)} {badge(summary.status)}</h1>", f"<p>Job {code(summary.job)}</p>"]
    if record.request is not None:
        at, request = record.request
        parts.append(f"<p>Requested by {esc(at.signer)} at {_leaf(at)}.</p>")
        parts.append("<h2>Recipe</h2>" + kv_table(recipe_rows(request.recipe), "recipe"))
    parts.append("<h2>Builders</h2>" + _builders_table(record))
    close_time = record.close[0].time if record.close else None
    verdict_time = record.verdict[0].time if record.verdict else None
    timings = [
        ["requested", fmt_time(summary.request_time)],
        ["closed", _leaf(record.close[0]) if record.close else "—"],
        ["decided", _leaf(record.verdict[0]) if record.verdict else "—"],
        [
            "build phase (request → close)",
            fmt_duration(None if close_time is None else close_time - summary.request_time),
        ],
        [
            "reveal phase (close → verdict)",
            fmt_duration(
                None if close_time is None or verdict_time is None else verdict_time - close_time
            ),
        ],
        [
            "total",
            fmt_duration(None if verdict_time is None else verdict_time - summary.request_time),
        ],
    ]
    if record.close is not None:
        timings.insert(2, ["close reason", esc(record.close[1].reason)])
    parts.append("<h2>Timings</h2>" + kv_table(timings, "timings"))
    parts.append(_verdict_section(record, published_size))
    if record.diff_reports:
        rows = [
            [
                _leaf(at),
                _blob(r.report_sha256, "diff report"),
                ", ".join(short(g) for g in r.groups),
            ]
            for at, r in record.diff_reports
        ]
        parts.append("<h2>Diff reports</h2>" + table(["logged", "report", "groups"], rows, "diffs"))
    return layout(title, origin, "".join(parts))
