"""The dashboard's coverage page: how much of what was built the log reproduced, and why not.

Pure: :func:`render_coverage` turns a :class:`~logserver.dashboard.coverage.Coverage`, a page of
crates and the search query into HTML, with the helpers of :mod:`logserver.dashboard.pages`. The
chart is an inline SVG drawn here on the server (no script): per time bucket, a bar of the
verdicts logged in it stacked by outcome, and a line of the share of crates whose last verdict
reproduced.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from urllib.parse import quote

from logserver.dashboard.coverage import Bucket, Coverage, CrateVerdict
from logserver.dashboard.pages import PAGE_SIZE, badge, esc, fmt_time, layout, table
from logserver.protocol.entries import OUTCOMES

COLOURS = {"reproduced": "#16803c", "not-reproduced": "#b45309", "failed": "#b91c1c"}
LINE_COLOUR = "#1f2a44"
CHART_W, CHART_H = 760, 240
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 48, 48, 12, 36


def fmt_share(part: int, whole: int) -> str:
    return "—" if not whole else f"{100 * part / whole:.1f}%"


def _label(ms: int, bucket_ms: int) -> str:
    """A bucket's start, as precisely as its width needs."""
    pattern = "%Y-%m-%d" if bucket_ms >= 86_400_000 else "%m-%d %H:%M"
    return time.strftime(pattern, time.gmtime(ms // 1000))


def _width_text(bucket_ms: int) -> str:
    minutes = bucket_ms // 60_000
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 1440:
        return f"{minutes // 60} h"
    return f"{minutes // 1440} d"


def render_chart(buckets: Sequence[Bucket], bucket_ms: int) -> str:
    """An SVG of verdicts per bucket (stacked bars, left axis) and the share of crates
    reproduced at each bucket's end (a line, right axis, 0-100%)."""
    if not buckets:
        return '<p id="no-timeline">No verdict yet.</p>'
    plot_w = CHART_W - PAD_LEFT - PAD_RIGHT
    plot_h = CHART_H - PAD_TOP - PAD_BOTTOM
    bottom = PAD_TOP + plot_h
    slot = plot_w / len(buckets)
    tallest = max([1] + [sum(b.verdicts.values()) for b in buckets])
    parts = [
        f'<svg id="coverage-chart" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'viewBox="0 0 {CHART_W} {CHART_H}" width="{CHART_W}" height="{CHART_H}" '
        'aria-labelledby="chart-title" style="background:#fff;border:1px solid #d5d8de">',
        f'<title id="chart-title">Verdicts per {esc(_width_text(bucket_ms))} by outcome, and the '
        "share of crates reproduced</title>",
        f'<line x1="{PAD_LEFT}" y1="{bottom}" x2="{PAD_LEFT + plot_w}" y2="{bottom}" '
        'stroke="#889"/>',
        f'<text x="{PAD_LEFT - 6}" y="{PAD_TOP + 10}" text-anchor="end" font-size="11">'
        f"{tallest}</text>",
        f'<text x="{PAD_LEFT - 6}" y="{bottom}" text-anchor="end" font-size="11">0</text>',
        f'<text x="{PAD_LEFT + plot_w + 6}" y="{PAD_TOP + 10}" font-size="11">100%</text>',
        f'<text x="{PAD_LEFT + plot_w + 6}" y="{bottom}" font-size="11">0%</text>',
    ]
    points = []
    for i, bucket in enumerate(buckets):
        x = PAD_LEFT + i * slot
        y = float(bottom)
        for outcome in OUTCOMES:
            count = bucket.verdicts.get(outcome, 0)
            if not count:
                continue
            h = plot_h * count / tallest
            y -= h
            parts.append(
                f'<rect class="bar {outcome}" x="{x + slot * 0.1:.1f}" y="{y:.1f}" '
                f'width="{slot * 0.8:.1f}" height="{h:.1f}" fill="{COLOURS[outcome]}">'
                f"<title>{esc(_label(bucket.start_ms, bucket_ms))}: {count} {outcome}</title>"
                "</rect>"
            )
        if bucket.share is not None:
            points.append((x + slot / 2, bottom - plot_h * bucket.share, bucket))
    if points:
        line = " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in points)
        parts.append(
            f'<polyline id="share-line" points="{line}" fill="none" stroke="{LINE_COLOUR}" '
            'stroke-width="2"/>'
        )
        for px, py, bucket in points:
            parts.append(
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{LINE_COLOUR}"><title>'
                f"{esc(_label(bucket.end_ms, bucket_ms))}: "
                f"{fmt_share(bucket.reproduced, bucket.crates)} of {bucket.crates} crates "
                "reproduced</title></circle>"
            )
    for i in sorted({0, len(buckets) // 2, len(buckets) - 1}):
        x = PAD_LEFT + i * slot + slot / 2
        parts.append(
            f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" font-size="11">'
            f"{esc(_label(buckets[i].start_ms, bucket_ms))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _timeline_table(buckets: Sequence[Bucket], bucket_ms: int) -> str:
    rows = [
        [
            esc(_label(b.start_ms, bucket_ms)),
            *(str(b.verdicts.get(o, 0)) for o in OUTCOMES),
            str(b.crates),
            fmt_share(b.reproduced, b.crates),
        ]
        for b in reversed(buckets)
    ]
    headers = ["from (UTC)", *OUTCOMES, "crates so far", "share reproduced"]
    return table(headers, rows, "timeline")


def crates_table(crates: Sequence[CrateVerdict]) -> str:
    rows = [
        [
            f'<a href="/build/{esc(c.job)}">{esc(c.name) or "(unnamed)"}</a>',
            esc(c.version),
            badge(c.outcome),
            esc(c.reason) or "—",
            fmt_time(c.verdict_time),
            str(c.verdicts),
        ]
        for c in crates
    ]
    headers = ["crate", "version", "last verdict", "reason", "decided", "verdicts"]
    return table(headers, rows, "crates")


def _crate_links(page: int, has_next: bool, query: str) -> str:
    extra = f"&q={quote(query)}" if query else ""
    links = []
    if page > 1:
        links.append(f'<a rel="prev" href="/coverage?page={page - 1}{extra}">← previous</a>')
    if has_next:
        links.append(f'<a rel="next" href="/coverage?page={page + 1}{extra}">next →</a>')
    return f'<nav class="pages">{"".join(links)}</nav>' if links else ""


def render_coverage(
    origin: str,
    coverage: Coverage,
    crates: Sequence[CrateVerdict],
    total: int,
    page: int,
    query: str,
    notice: str,
) -> str:
    """The whole coverage page; ``crates`` is page ``page`` (of PAGE_SIZE) of the ``total``
    crates matching ``query``."""
    count = coverage.crate_count
    reproduced = coverage.crates.get("reproduced", 0)
    stats = [
        ("crates", str(count), "crates"),
        ("reproduced", f"{reproduced} ({fmt_share(reproduced, count)})", "reproduced"),
        ("not reproduced", str(coverage.crates.get("not-reproduced", 0)), "not-reproduced"),
        ("failed", str(coverage.crates.get("failed", 0)), "failed"),
        ("verdicts", str(sum(coverage.verdicts.values())), "verdicts"),
    ]
    body = [
        "<h1>Coverage</h1>",
        notice,
        "<p>Each crate (name and version) counts once, by its last verdict in the log.</p>",
        "<div>"
        + "".join(
            f'<span class="stat" id="cov-{i}"><b>{esc(v)}</b>{esc(k)}</span>' for k, v, i in stats
        )
        + "</div>",
        "<h2>Over time</h2>",
    ]
    if coverage.timeline:
        body.append(
            f"<p>Verdicts logged per {esc(_width_text(coverage.bucket_ms))} (bars: "
            '<span class="badge reproduced">reproduced</span> '
            '<span class="badge not-reproduced">not-reproduced</span> '
            '<span class="badge failed">failed</span>) and the share of crates reproduced so '
            "far (line), by the log's time (UTC).</p>"
        )
    body.append(render_chart(coverage.timeline, coverage.bucket_ms))
    if coverage.timeline:
        body.append(
            "<details><summary>The numbers</summary>"
            + _timeline_table(coverage.timeline, coverage.bucket_ms)
            + "</details>"
        )
    outcome_rows = [
        [
            badge(o),
            str(coverage.crates.get(o, 0)),
            fmt_share(coverage.crates.get(o, 0), count),
            str(coverage.verdicts.get(o, 0)),
        ]
        for o in OUTCOMES
    ]
    body.append(
        "<h2>Outcomes</h2>"
        + table(
            ["outcome", "crates (last verdict)", "share", "verdicts (all)"],
            outcome_rows,
            "outcomes",
        )
    )
    body.append(
        "<h2>Failure reasons</h2><p>Each builder that failed, did not reveal, or revealed what it "
        "had not committed to, in every verdict, grouped by reason (a builder's reason code, or "
        "the first words of its reason).</p>"
    )
    if coverage.reasons:
        reason_rows = [[esc(r.reason), str(r.builders), str(r.verdicts)] for r in coverage.reasons]
        body.append(table(["reason", "builders", "verdicts"], reason_rows, "reasons"))
    else:
        body.append('<p id="no-reasons">No builder has failed.</p>')
    first = (page - 1) * PAGE_SIZE + 1
    shown = f"{first}–{first + len(crates) - 1} of {total}" if crates else f"none of {total}"
    matching = f" matching “{esc(query)}”" if query else ""
    body += [
        f"<h2>Crates{matching}</h2>",
        '<form action="/coverage" method="get" role="search" id="coverage-search">'
        f'<input type="search" id="coverage-q" name="q" value="{esc(query)}" '
        'placeholder="crate name" aria-label="search crates by name"></form>',
        f'<p id="crates-shown">Showing {shown}, by name and version.</p>',
    ]
    if crates:
        body.append(crates_table(crates))
    body.append(_crate_links(page, first - 1 + len(crates) < total, query))
    return layout("Coverage", origin, "".join(body))
