"""The dashboard's HTML, rendered from plain values: no I/O, no JavaScript, one inline stylesheet.

Every value that reaches the page goes through :func:`esc` (``html.escape`` with quotes), and
every value put in a URL through :func:`urllib.parse.quote`: crate names, versions, recipe fields
and failure reasons come from builders and, in an ``--open`` log, from anyone.
:mod:`logserver.dashboard` gathers the values and serves the pages.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from logserver.dashboard.index import JobSummary

PAGE_SIZE = 50

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2330;
background:#f5f6f8;font-size:15px}
header{background:#1f2a44;color:#fff;padding:.7em 1.5em;display:flex;gap:1.5em;
align-items:center;flex-wrap:wrap}
header a{color:#fff;text-decoration:none;font-weight:600}header .origin{opacity:.7}
header form{margin-left:auto}input{padding:.3em .5em;border:1px solid #889;border-radius:4px}
main{padding:1em 1.5em;max-width:1200px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;background:#fff;margin:.5em 0;min-width:50%}
th,td{border:1px solid #d5d8de;padding:.35em .6em;text-align:left;vertical-align:top}
th{background:#e9ecf1}.kv td:first-child{background:#eef0f4;font-weight:600}
code{font-size:.88em;word-break:break-all}
.badge{display:inline-block;padding:.1em .55em;border-radius:.8em;font-weight:600;color:#fff;
background:#6b7280}
.reproduced,.ok{background:#16803c}.not-reproduced,.behind{background:#b45309}
.failed,.silent{background:#b91c1c}.building,.revealing{background:#2563eb}
.stat{display:inline-block;background:#fff;border:1px solid #d5d8de;border-radius:6px;
padding:.6em 1em;margin:0 .6em .6em 0}.stat b{display:block;font-size:1.5em}
.warn{background:#fff4d6;border:1px solid #e0b84c;padding:.5em 1em}
nav.pages{margin:1em 0}nav.pages a{margin-right:1em}
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def fmt_time(ms: int | None) -> str:
    """Log milliseconds as UTC, e.g. ``2023-11-14 22:13:20.000Z``."""
    if ms is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def fmt_seconds(unix: float | None) -> str:
    return "—" if unix is None else fmt_time(int(unix * 1000))


def fmt_duration(ms: int | None) -> str:
    if ms is None:
        return "—"
    if ms < 60_000:
        return f"{ms / 1000:.3f} s"
    minutes, seconds = divmod(ms // 1000, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    return f"{minutes // 60} h {minutes % 60} min"


def badge(status: str) -> str:
    return f'<span class="badge {esc(status)}">{esc(status)}</span>'


def short(digest: str | None, length: int = 16) -> str:
    if not digest:
        return "—"
    return f'<code title="{esc(digest)}">{esc(digest[:length])}…</code>'


def code(value: object) -> str:
    return f"<code>{esc(value)}</code>"


def layout(title: str, origin: str, body: str, query: str = "", *, builds: bool = True) -> str:
    """A whole page; ``builds`` adds the link to the builds and the search box (only a log
    that runs the build protocol has builds)."""
    build_nav = (
        '<a href="/builds" id="nav-builds">Builds</a>'
        '<a href="/coverage" id="nav-coverage">Coverage</a>'
        '<a href="/checkpoints" id="nav-checkpoints">Checkpoints</a>'
        '<form action="/builds" method="get" role="search">'
        f'<input type="search" name="q" value="{esc(query)}" placeholder="crate name"'
        ' aria-label="search builds by crate name"></form>'
        if builds
        else '<a href="/checkpoints" id="nav-checkpoints">Checkpoints</a>'
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · Synchronicity</title><style>{STYLE}</style></head><body>"
        '<header><a href="/" id="nav-overview">Synchronicity</a>'
        f'<span class="origin">{esc(origin)}</span>{build_nav}</header>'
        f"<main>{body}</main></body></html>\n"
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], table_id: str = "") -> str:
    """A table whose cells are already HTML (callers escape their values)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    ident = f' id="{esc(table_id)}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kv_table(rows: Iterable[Sequence[str]], table_id: str) -> str:
    """A two-column table of labels (escaped here) and HTML values, without a header row."""
    body = "".join(f"<tr><td>{esc(label)}</td><td>{value}</td></tr>" for label, value in rows)
    return f'<table class="kv" id="{esc(table_id)}"><tbody>{body}</tbody></table>'


def job_link(job: JobSummary) -> str:
    label = f"{job.name} {job.version}".strip() or "(unnamed)"
    return f'<a href="/build/{esc(job.job)}">{esc(label)}</a>'


def jobs_table(jobs: Sequence[JobSummary], table_id: str = "builds") -> str:
    rows = [
        [
            job_link(job),
            badge(job.status),
            fmt_time(job.request_time),
            fmt_time(job.verdict_time),
            short(job.job),
        ]
        for job in jobs
    ]
    return table(["crate", "verdict", "requested", "decided", "job"], rows, table_id)


def error_page(origin: str, title: str, message: str, *, builds: bool = True) -> str:
    return layout(title, origin, f"<h1>{esc(title)}</h1><p>{esc(message)}</p>", builds=builds)


NO_PROTOCOL = (
    "This log has no build protocol: its entries are not checked by any build rules, so it "
    "shows no builds or verdicts, only its size, checkpoints and witnesses."
)


# -------------------------------------------------------------------------------- overview


@dataclass(frozen=True)
class SignatureRow:
    """One signature line of the published checkpoint."""

    name: str
    key_id: int
    role: str  # "log", "witness" or "unknown"
    timestamp: int | None  # cosignature/v1 time in seconds, for witnesses


@dataclass(frozen=True)
class WitnessRow:
    """One witness on the overview page: the last size it co-signed, when, and how far behind."""

    name: str
    url: str
    last_size: int  # 0: never cosigned since start-up
    last_time: float | None  # unix seconds
    lag: int  # entries the witness has not cosigned yet
    status: str  # "ok", "behind" or "silent"


@dataclass(frozen=True)
class Overview:
    """What the overview page shows: sizes, the published checkpoint, witnesses and builds.

    ``builds`` is False for a log whose leaves no build protocol checked: then the page shows
    no build counts or verdicts (``counts`` and ``latest`` are empty).
    """

    origin: str
    tree_size: int
    indexed_size: int
    index_failure: str | None
    published_size: int
    published_root: str  # base64, "" when nothing is published
    signatures: tuple[SignatureRow, ...]
    quorum: int  # 0: a log without witnesses
    witnesses: tuple[WitnessRow, ...]
    counts: Mapping[str, int]
    latest: tuple[JobSummary, ...]
    builds: bool = True


def witness_status(last_size: int, last_time: float | None, tree_size: int, now: float) -> str:
    """``ok`` when the witness cosigned the whole tree or did so in the last 30 s."""
    if last_time is None:
        return "silent"
    if last_size >= tree_size or now - last_time <= 30:
        return "ok"
    return "behind"


def index_notice(tree_size: int, indexed_size: int, failure: str | None) -> str:
    if failure is not None:
        return f'<p class="warn">The build index stopped: {esc(failure)}</p>'
    if indexed_size < tree_size:
        return (
            f'<p class="warn">Indexing the log: {indexed_size} of {tree_size} entries; '
            "the build lists are not complete yet.</p>"
        )
    return ""


def render_overview(o: Overview) -> str:
    stats = [
        ("tree size", o.tree_size, "tree-size"),
        ("published size", o.published_size, "published-size"),
    ]
    if o.builds:
        stats += [
            ("builds", o.counts.get("jobs", 0), "builds"),
            ("reproduced", o.counts.get("reproduced", 0), "reproduced"),
            ("not reproduced", o.counts.get("not-reproduced", 0), "not-reproduced"),
            ("failed", o.counts.get("failed", 0), "failed"),
        ]
    parts = [
        f"<h1>Log <code>{esc(o.origin)}</code></h1>",
        f'<meta name="indexed-size" content="{o.indexed_size}">'
        + index_notice(o.tree_size, o.indexed_size, o.index_failure)
        if o.builds
        else f'<p id="no-protocol">{esc(NO_PROTOCOL)}</p>',
        "<div>"
        + "".join(
            f'<span class="stat" id="stat-{i}"><b>{v}</b>{esc(k)}</span>' for k, v, i in stats
        )
        + "</div>",
        "<h2>Latest published checkpoint</h2>",
    ]
    if not o.published_size:
        parts.append("<p>No checkpoint is published yet.</p>")
    else:
        parts.append(
            f'<p>Size <b id="published-size">{o.published_size}</b>, root hash'
            f' {code(o.published_root)} — <a href="/checkpoint">/checkpoint</a></p>'
        )
        rows = [
            [esc(s.name), code(f"{s.key_id:08x}"), esc(s.role), fmt_seconds(s.timestamp)]
            for s in o.signatures
        ]
        parts.append(table(["signer", "key ID", "role", "cosigned at"], rows, "signers"))
    parts.append("<h2>Witnesses</h2>")
    if not o.quorum:
        parts.append("<p>This log has no witnesses: it publishes its own checkpoints.</p>")
    else:
        parts.append(f"<p>A checkpoint is published once {o.quorum} witnesses cosigned it.</p>")
        rows = [
            [
                esc(w.name),
                esc(w.url),
                badge(w.status),
                str(w.last_size) if w.last_size else "—",
                fmt_seconds(w.last_time),
                str(w.lag),
            ]
            for w in o.witnesses
        ]
        parts.append(
            table(["witness", "URL", "health", "last cosigned size", "at", "lag"], rows, "wits")
        )
    if o.builds:
        parts.append("<h2>Latest verdicts</h2>")
        parts.append(jobs_table(o.latest, "latest") if o.latest else "<p>No verdict yet.</p>")
    parts.append(
        "<p>"
        + (
            '<a href="/builds">All builds</a> · '
            '<a href="/coverage" id="coverage-link">Coverage</a> · '
            if o.builds
            else ""
        )
        + '<a href="/checkpoints">Checkpoint history</a> · '
        '<a href="/witnesses">witnesses (JSON)</a> · <a href="/metrics">metrics</a></p>'
    )
    return layout("Overview", o.origin, "".join(parts), builds=o.builds)


# -------------------------------------------------------------------------------- builds


def page_links(base: str, page: int, has_next: bool, extra: str = "") -> str:
    links = []
    if page > 1:
        links.append(f'<a rel="prev" href="{base}?page={page - 1}{extra}">← newer</a>')
    if has_next:
        links.append(f'<a rel="next" href="{base}?page={page + 1}{extra}">older →</a>')
    return f'<nav class="pages">{"".join(links)}</nav>' if links else ""


def render_builds(
    origin: str, jobs: Sequence[JobSummary], total: int, page: int, query: str, notice: str
) -> str:
    first = (page - 1) * PAGE_SIZE + 1
    extra = f"&q={quote(query)}" if query else ""
    title = f"Builds matching “{esc(query)}”" if query else "Builds"
    shown = f"{first}–{first + len(jobs) - 1} of {total}" if jobs else f"none of {total}"
    body = [f"<h1>{title}</h1>", notice, f'<p id="shown">Showing {shown}, newest first.</p>']
    if jobs:
        body.append(jobs_table(jobs))
    body.append(page_links("/builds", page, first - 1 + len(jobs) < total, extra))
    return layout("Builds", origin, "".join(body), query)


# -------------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class CheckpointRow:
    """One signed checkpoint in the history page, with the cosignatures the log holds for it."""

    size: int
    root: str  # base64
    cosigners: tuple[str, ...]
    first_cosigned: int | None  # earliest cosignature time, unix seconds
    published: bool | None  # None: a log without witnesses publishes every checkpoint


def render_checkpoints(
    origin: str,
    rows: Sequence[CheckpointRow],
    before: int | None,
    next_before: int | None,
    *,
    builds: bool = True,
) -> str:
    cells = [
        [
            str(r.size),
            code(r.root),
            esc(", ".join(r.cosigners)) or "—",
            fmt_seconds(r.first_cosigned),
            "—" if r.published is None else "yes" if r.published else "no",
        ]
        for r in rows
    ]
    body = ["<h1>Checkpoints</h1>", "<p>Every checkpoint the log signed, newest first.</p>"]
    body.append(
        table(["size", "root hash", "cosigned by", "first cosignature", "quorum"], cells, "cps")
    )
    links = []
    if before is not None:
        links.append('<a href="/checkpoints">newest</a>')
    if next_before is not None:
        links.append(f'<a rel="next" href="/checkpoints?before={next_before}">older →</a>')
    body.append(f'<nav class="pages">{"".join(links)}</nav>')
    return layout("Checkpoints", origin, "".join(body), builds=builds)


def recipe_rows(recipe: Mapping[str, Any]) -> list[list[str]]:
    """The recipe's fields a reader checks first, tolerant of any JSON shape."""

    def field(*path: str) -> object:
        value: object = recipe
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def text(value: object) -> str:
        if value is None:
            return "—"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, list):
            return esc(", ".join(str(v) for v in value)) or "(none)"
        return code(value) if isinstance(value, str) and len(value) >= 40 else esc(value)

    return [
        ["crate", text(field("name"))],
        ["version", text(field("version"))],
        ["source", f"{text(field('ecosystem'))} / {text(field('source'))}"],
        [".crate SHA-256", text(field("crate_sha256"))],
        ["rustc", text(field("toolchain", "rustc_version"))],
        ["toolchain commit", text(field("toolchain", "commit_hash"))],
        ["toolchain files SHA-256", text(field("toolchain", "files_sha256"))],
        ["build image (rootfs SHA-256)", text(field("build_env", "rootfs_sha256"))],
        ["target / profile", f"{text(field('target'))} / {text(field('profile'))}"],
        ["features", text(field("features"))],
        ["default features", text(field("default_features"))],
        ["artifacts", text(field("artifacts"))],
    ]
