"""HTML of the leaderboard site: plain HTML and one local stylesheet; a few lines of inline
JavaScript sort the tables (the order in the HTML is the ranking, so the site reads the same
without JavaScript). Every text that comes from a submission is escaped."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from typing import Any

from bench.leaderboard.entries import Entry
from bench.leaderboard.ranking import ALPHA, TEST_NAME, Board, Row, Stat

CSS = """\
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:80rem;padding:0 1rem;
color:#1d2330;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem}a{color:#1f5fbf}
table{border-collapse:collapse;margin:0.8rem 0;font-size:0.9rem}
th,td{border:1px solid #d5d9e0;padding:0.3rem 0.55rem;text-align:right;vertical-align:top}
th{background:#eef1f6}th.sortable{cursor:pointer}th.sortable:after{content:" \\2195";color:#8a93a3}
td.text,th.text{text-align:left}.ci{color:#5d6675;font-size:0.8rem;white-space:nowrap}
.tie{color:#a35d00;font-weight:600}.note{background:#f6f7fa;border-left:4px solid #8a93a3;padding:0.5rem 0.8rem}
.apart{border-left-color:#a35d00}.mono{font-family:ui-monospace,monospace;font-size:0.8rem}
tbody.na td{color:#5d6675;background:#f6f7fa}
img{max-width:100%;border:1px solid #d5d9e0;margin:0.4rem 0}nav{margin-bottom:1rem}
"""

SORT_JS = """\
document.querySelectorAll("table.sortable").forEach(function(t){
 t.querySelectorAll("th.sortable").forEach(function(th,i){th.addEventListener("click",function(){
  var idx=Array.prototype.indexOf.call(th.parentNode.children,th),body=t.tBodies[0];
  var up=th.getAttribute("data-dir")!=="desc";th.setAttribute("data-dir",up?"desc":"asc");
  var rows=Array.prototype.slice.call(body.rows);rows.sort(function(a,b){
   var x=a.cells[idx].getAttribute("data-v"),y=b.cells[idx].getAttribute("data-v");
   var nx=parseFloat(x),ny=parseFloat(y);var c=(isNaN(nx)||isNaN(ny))?String(x).localeCompare(String(y)):nx-ny;
   return up?-c:c;});rows.forEach(function(r){body.appendChild(r);});});});});
"""


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


NOT_APPLICABLE_CELL = "n/a"
"""What a board shows for an entry whose ranking metric does not apply (never a zero)."""


def pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def stat_cell(s: Stat, count: bool = False) -> str:
    """A value (a percentage, or an integer ``count``) with its interval below it, if any."""
    ci = f'<br><span class="ci">[{pct(s.ci[0])}, {pct(s.ci[1])}]</span>' if s.ci else ""
    value = "" if s.value is None else repr(round(s.value, 10))
    shown = ("–" if s.value is None else f"{s.value:.0f}") if count else pct(s.value)
    return f'<td data-v="{value}">{shown}{ci}</td>'


def page(title: str, body: str, depth: int) -> str:
    up = "../" * depth
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{esc(title)}</title>\n'
            f'<link rel="stylesheet" href="{up}style.css">\n</head>\n<body>\n'
            f'<nav><a href="{up}index.html">SIDA-Bench leaderboard</a> · <a href="{up}leaderboard.json">'
            f'leaderboard.json</a> · <a href="{up}leaderboard.csv">leaderboard.csv</a></nav>\n'
            f"<h1>{esc(title)}</h1>\n{body}\n<script>\n{SORT_JS}</script>\n</body>\n</html>\n")


def table(headers: Sequence[tuple[str, bool]], rows: Sequence[str], css: str = "sortable",
          tail: Sequence[str] = ()) -> str:
    """``headers``: (label, is text column); ``rows``: ready ``<tr>`` strings; ``tail``: rows of a
    second body (``tbody.na``) that sorting leaves below the first."""
    head = "".join(f'<th class="sortable{" text" if text else ""}">{esc(h)}</th>' for h, text in headers)
    extra = '\n<tbody class="na">\n' + "\n".join(tail) + "\n</tbody>" if tail else ""
    return (f'<table class="{css}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n' + "\n".join(rows)
            + f"\n</tbody>{extra}</table>")


def method_cell(row: Row | Entry, depth: int) -> str:
    up = "../" * depth
    e = row.entry if isinstance(row, Row) else row
    return (f'<td class="text" data-v="{esc(e.label)}"><a href="{up}entries/{e.slug}/index.html">{esc(e.label)}</a>'
            f'{used_test_badge(e.model)}</td>')


def used_test_badge(model: dict[str, Any]) -> str:
    sub = model.get("submission") or {}
    return ' <span class="tie">(used test data)</span>' if sub.get("used_test_data") else ""


def links_cell(row: Row | Entry, depth: int) -> str:
    """results.json, the code link of a submission, and the weights sha256 (first 12 digits)."""
    up = "../" * depth
    e = row.entry if isinstance(row, Row) else row
    parts = [f'<a href="{up}entries/{e.slug}/results.json">results.json</a>']
    code = ((e.model.get("submission") or {}).get("method") or {}).get("code")
    if isinstance(code, str) and code.startswith(("https://", "http://")):
        parts.append(f'<a href="{esc(code)}" rel="nofollow noopener">code</a>')
    weights = e.model.get("weights_sha256")
    if weights:
        parts.append(f'weights <span class="mono" title="{esc(weights)}">{esc(str(weights)[:12])}</span>')
    return f'<td class="text" data-v="{esc(e.slug)}">{" · ".join(parts)}</td>'


def rank_cell(row: Row) -> str:
    tie = ' <span class="tie">tie</span>' if row.tied else ""
    return f'<td data-v="{row.rank}">{row.rank}{tie}</td>'


def method_note() -> str:
    return (f'<p class="note">Values are percentages; brackets give the 95 % percentile bootstrap interval over '
            f'samples. Rank: 1 + the number of entries significantly better by a {esc(TEST_NAME)} of the ranking '
            f'metric at α = {ALPHA} (no multiple-comparison correction; ranks are non-decreasing down the table). '
            f'Entries with the same rank are tied: their difference is not significant.</p>')


def board_section(board: Board, depth: int, link: bool) -> str:
    """A board's ranking table, under a linked heading (``link``) or none (on its own page)."""
    up = "../" * depth
    heading = f'<h2><a href="{up}boards/{board.slug}.html">{esc(board.title)}</a></h2>\n' if link else ""
    apart = (f'<p class="note apart">Shown apart from the main {esc(board.protocol)} board: {esc(board.apart)}. '
             f'Entries here are never ranked against those.</p>') if board.apart else ""
    headers = [("Rank", False), ("Method", True)] + [(c.label, False) for c in board.columns]
    if board.kind == "robustness" and board.rows:
        headers += [(label, False) for label, _ in board.rows[0].conditions]
    headers.append(("Details", True))
    rows = []
    for r in board.rows:
        cells = [rank_cell(r), method_cell(r, depth)]
        cells += [stat_cell(s, c.count) for c, s in zip(board.columns, r.columns)]
        cells += [stat_cell(s) for _, s in r.conditions]
        cells.append(links_cell(r, depth))
        rows.append(f'<tr data-slug="{r.entry.slug}">' + "".join(cells) + "</tr>")
    na = [f'<tr data-slug="{e.slug}" title="{esc(reason)}"><td data-v="">{NOT_APPLICABLE_CELL}</td>'
          f'{method_cell(e, depth)}' + f'<td data-v="">{NOT_APPLICABLE_CELL}</td>' * (len(headers) - 3)
          + f"{links_cell(e, depth)}</tr>" for e, reason in board.not_applicable]
    note = (f'<p class="note">{NOT_APPLICABLE_CELL} = not applicable, not ranked: '
            f'{esc("; ".join(sorted({reason for _, reason in board.not_applicable})))}.</p>\n'
            if board.not_applicable else "")
    return (f"{heading}{apart}<p>Ranking metric: <b>{esc(board.columns[0].label)}</b> — "
            f"{esc(board.main_description)}. {board.n_samples} samples; protocol sha256 "
            f'<span class="mono">{esc(board.sha256)}</span>.</p>\n'
            + table(headers, rows, tail=na).replace('<table class="sortable">', '<table class="sortable ranking">', 1)
            + note)


def board_page(board: Board) -> str:
    body = [method_note(), board_section(board, 1, link=False)]
    groups = sorted({g for r in board.rows for g in r.breakdown})
    if groups:
        rows = [f'<tr>{method_cell(r, 1)}' + "".join(stat_cell(r.breakdown.get(g, Stat(None, None))) for g in groups)
                + "</tr>" for r in board.rows]
        body.append(f"<h2>Per generator / source</h2>\n<p>{esc(board.columns[0].label)} on the images of each "
                    "source (the dataset's generator or source field), with 95 % intervals from the same "
                    "resamples.</p>\n" + table([("Method", True)] + [(g, False) for g in groups], rows))
    if len(board.rows) > 1:
        slugs = [r.entry.slug for r in board.rows]
        rows = []
        for r in board.rows:
            cells = []
            for other in slugs:
                p = board.p_values.get((r.entry.slug, other), board.p_values.get((other, r.entry.slug)))
                defined = p is not None and math.isfinite(p)
                cells.append(f'<td data-v="{p!r}">{p:.3f}</td>' if defined else "<td>–</td>")
            rows.append(f"<tr>{method_cell(r, 1)}{''.join(cells)}</tr>")
        body.append(f"<h2>Paired test p-values</h2>\n<p>{esc(TEST_NAME)} of the ranking metric, "
                    f"{board.bootstrap['n_resamples']} resamples (seed {board.bootstrap['seed']}); "
                    f"significant when p &lt; {ALPHA}.</p>\n"
                    + table([("Method", True)] + [(r.entry.label, False) for r in board.rows], rows, css="plain"))
    conventions = esc(json.dumps(board.convention, indent=2, sort_keys=True))
    body.append(f'<h2>Conventions</h2>\n<pre class="mono">{conventions}</pre>')
    return page(board.title, "\n".join(body), 1)


def index_page(boards: list[Board], unranked: list[tuple[str, str, str]]) -> str:
    body = [method_note()]
    by_protocol: dict[str, list[Board]] = {}
    for b in boards:
        by_protocol.setdefault(b.protocol, []).append(b)
    body.append("<h2>Protocols</h2>\n<ul>" + "".join(
        f'<li><a href="#{esc(p)}">{esc(p)}</a>: {len(bs)} board(s), {sum(len(b.rows) for b in bs)} entries'
        + (f", {na} not applicable" if (na := sum(len(b.not_applicable) for b in bs)) else "") + "</li>"
        for p, bs in sorted(by_protocol.items())) + "</ul>")
    for p, bs in sorted(by_protocol.items()):
        body.append(f'<section id="{esc(p)}">' + "\n".join(board_section(b, 0, link=True) for b in bs) + "</section>")
    if unranked:
        items = "".join(f'<li><a href="entries/{slug}/index.html">{esc(label)}</a>: {esc(reason)}</li>'
                        for slug, label, reason in unranked)
        body.append(f"<h2>Not ranked</h2>\n<ul>{items}</ul>")
    return page("SIDA-Bench leaderboard", "\n".join(body), 0)
