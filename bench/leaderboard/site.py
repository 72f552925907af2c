"""``sida-bench leaderboard build RESULTS... --out SITE``: the static site and its data files.

Layout::

    SITE/index.html                 protocols and their boards (ranking tables)
    SITE/boards/<board>.html        one board: ranking, per-generator breakdown, p-values, conventions
    SITE/entries/<slug>/            index.html, results.json (copied), roc_pr.png, confusion.png,
                                    robustness.png, masks.png
    SITE/protocols/<name>-v<version>-<sha12>.json   the resolved protocol of the entries
    SITE/leaderboard.json, SITE/leaderboard.csv      the same numbers for machines
    SITE/style.css

Rebuilding from the same inputs gives byte-identical files: entries and boards are sorted,
JSON keys are sorted, figures carry no timestamp, and the only dates are each result's own
``created``. Files of an earlier build that the new one does not write are removed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.leaderboard.entries import SITE_MARKER, Entry, load_entries
from bench.leaderboard.entry_page import protocol_file, write_entry
from bench.leaderboard.pages import CSS, NOT_APPLICABLE_CELL, board_page, index_page
from bench.leaderboard.ranking import ALPHA, TEST_NAME, Board, Stat, build_boards
from bench.progress import track

SITE_SCHEMA_VERSION = 1


def build_site(inputs: list[Path], out: str | Path) -> dict[str, Any]:
    """Build the site into ``out`` from results folders under ``inputs``; the leaderboard data."""
    site = Path(out)
    if site.exists() and any(site.iterdir()) and not (site / SITE_MARKER).is_file():
        raise UserError(f"{site} exists and is not a leaderboard site; choose an empty or new --out")
    entries = load_entries([Path(p) for p in inputs])
    boards, skipped = build_boards(entries)
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    (site / SITE_MARKER).write_text("built by sida-bench leaderboard build\n", encoding="utf-8")
    (site / "style.css").write_text(CSS, encoding="utf-8")
    (site / "boards").mkdir()
    for board in boards:
        (site / "boards" / f"{board.slug}.html").write_text(board_page(board), encoding="utf-8")
    for entry in track(entries, "leaderboard entry pages"):
        write_entry(entry, boards, site)
        target = site / protocol_file(entry)
        target.parent.mkdir(parents=True, exist_ok=True)
        resolved = json.dumps(entry.results.protocol.resolved, indent=2, sort_keys=True)
        target.write_text(resolved + "\n", encoding="utf-8")
    unranked = [(e.slug, e.label, reason) for e, reason in skipped]
    (site / "index.html").write_text(index_page(boards, unranked), encoding="utf-8")
    data = leaderboard_data(boards, entries, unranked)
    (site / "leaderboard.json").write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n",
                                           encoding="utf-8")
    (site / "leaderboard.csv").write_text(leaderboard_csv(boards), encoding="utf-8")
    return data


def write_demo_leaderboard(demo_dir: str | Path) -> Path:
    """The demo's leaderboard: ``DEMO_DIR/leaderboard/`` from the runs in ``DEMO_DIR/runs/``."""
    site = Path(demo_dir) / "leaderboard"
    build_site([Path(demo_dir) / "runs"], site)
    return site / "index.html"


def _stat(s: Stat) -> dict[str, Any]:
    return {"value": s.value, "ci": list(s.ci) if s.ci else None}


def leaderboard_data(boards: list[Board], entries: list[Entry], unranked: list[tuple[str, str, str]]) -> dict[str, Any]:
    """The numbers of every board, for machines (``leaderboard.json``)."""
    out_boards = []
    for b in boards:
        rows = []
        for r in b.rows:
            e = r.entry
            rows.append({"rank": r.rank, "tied": r.tied, "slug": e.slug, "method": e.label,
                         "model": e.model.get("spec", e.model.get("name")),
                         "weights_sha256": e.model.get("weights_sha256"), "created": e.results.created,
                         "results": f"entries/{e.slug}/results.json", "page": f"entries/{e.slug}/index.html",
                         "columns": {c.label: _stat(s) for c, s in zip(b.columns, r.columns)},
                         "conditions": {label: _stat(s) for label, s in r.conditions},
                         "breakdown": {g: _stat(s) for g, s in r.breakdown.items()},
                         "significantly_behind": r.behind})
        out_boards.append({"slug": b.slug, "title": b.title, "kind": b.kind,
                           "protocol": {"name": b.protocol, "version": b.version, "sha256": b.sha256},
                           "dataset": b.dataset, "split": b.split, "n_samples": b.n_samples,
                           "sample_set_sha256": b.sample_hash, "ranking_metric": b.columns[0].label,
                           "ranking_metric_description": b.main_description, "convention": b.convention,
                           "bootstrap": b.bootstrap, "apart": b.apart, "entries": rows,
                           "columns": [{"label": c.label, "metric": c.metric, "keys": list(c.keys), "count": c.count}
                                       for c in b.columns],
                           "not_applicable": [{"slug": e.slug, "method": e.label, "reason": reason,
                                               "results": f"entries/{e.slug}/results.json",
                                               "page": f"entries/{e.slug}/index.html"}
                                              for e, reason in b.not_applicable],
                           "p_values": [{"a": a, "b": c, "p": p if math.isfinite(p) else None}
                                        for (a, c), p in sorted(b.p_values.items())]})
    return {"schema_version": SITE_SCHEMA_VERSION, "test": TEST_NAME, "alpha": ALPHA,
            "rank_rule": "1 + number of entries significantly better (p < alpha), non-decreasing down the table",
            "boards": out_boards, "entries": sorted(e.slug for e in entries),
            "unranked": [{"slug": s, "method": label, "reason": reason} for s, label, reason in unranked]}


def leaderboard_csv(boards: list[Board]) -> str:
    """One line per board × entry × column (long format); an entry that is not applicable has
    rank ``n/a`` and empty values."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["board", "protocol", "protocol_version", "dataset", "split", "rank", "tied", "method", "slug",
                "column", "value", "ci_low", "ci_high"])
    for b in boards:
        for r in b.rows:
            cells = list(zip([c.label for c in b.columns], r.columns)) + list(r.conditions)
            for label, s in cells:
                lo, hi = s.ci if s.ci else ("", "")
                w.writerow([b.slug, b.protocol, b.version, b.dataset, b.split, r.rank, r.tied, r.entry.label,
                            r.entry.slug, label, "" if s.value is None else repr(s.value), repr(lo) if lo != "" else "",
                            repr(hi) if hi != "" else ""])
        for e, _ in b.not_applicable:
            for c in b.columns:
                w.writerow([b.slug, b.protocol, b.version, b.dataset, b.split, NOT_APPLICABLE_CELL, "", e.label,
                            e.slug, c.label, "", "", ""])
    return buf.getvalue()
