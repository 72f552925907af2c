"""The page of one entry: identity and provenance, its ranks, ROC/PR curves, the confusion
matrix, the robustness table and curve (protocols with perturbations) and a grid of mask
overlays (entries with predicted masks). Figures come from the entry's clean predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.leaderboard.entries import Entry
from bench.leaderboard.pages import esc, page, pct, table
from bench.leaderboard.ranking import Board
from bench.evaluation.protocol import CLEAN
from bench.evaluation.store import decode_bool_mask, decode_prob_mask
from bench.tables import LAYOUTS

MASK_ROWS = 6


def protocol_file(entry: Entry) -> str:
    p = entry.results.protocol
    return f"protocols/{p.name}-v{p.version}-{p.sha256[:12]}.json"


def write_entry(entry: Entry, boards: list[Board], site: Path) -> list[str]:
    """Write ``entries/<slug>/``; the file names it wrote (relative to the entry folder)."""
    folder = site / "entries" / entry.slug
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_bytes(entry.results_bytes)
    figures = _figures(entry, folder)
    body = [_identity(entry), _ranks(entry, boards), _robustness_table(entry)]
    captions = {"roc_pr.png": "ROC and precision-recall, real vs fake (clean)",
                "confusion.png": "Confusion matrix (clean; rows = true class)",
                "robustness.png": "Accuracy under each perturbation",
                "masks.png": "Tampered images: ground truth vs predicted masks (p > 0.5 in red)"}
    for name in figures:
        body.append(f'<h2>{esc(captions[name])}</h2>\n<img src="{name}" alt="{esc(captions[name])}">')
    html = page(f"{entry.label} — {entry.protocol.name}", "\n".join(b for b in body if b), 2)
    (folder / "index.html").write_text(html, encoding="utf-8")
    return ["index.html", "results.json", *figures]


def _link(url: Any) -> str:
    if isinstance(url, str) and url.startswith(("https://", "http://")):
        return f'<a href="{esc(url)}" rel="nofollow noopener">{esc(url)}</a>'
    return "–"


def _identity(entry: Entry) -> str:
    m, r = entry.model, entry.results
    sub = m.get("submission") or {}
    method = sub.get("method") or {}
    rows = [("Method", esc(entry.label)), ("Model spec", esc(m.get("spec", m.get("name", "?")))),
            ("Weights sha256", f'<span class="mono">{esc(m.get("weights_sha256") or "–")}</span>'),
            ("Protocol", f'<a href="../../{protocol_file(entry)}">{esc(r.protocol.name)} v{r.protocol.version}</a>'),
            ("Protocol sha256", f'<span class="mono">{esc(r.protocol.sha256)}</span>'),
            ("Created", esc(r.created)),
            ("Code commit", f'<span class="mono">{esc(r.environment.get("git_commit"))}</span>'),
            ("Results", '<a href="results.json">results.json</a>')]
    if sub:
        rows += [("Authors", esc(", ".join(method.get("authors", [])))), ("Version", esc(method.get("version", ""))),
                 ("Paper", _link(method.get("paper"))), ("Code", _link(method.get("code"))),
                 ("Training data", esc(sub.get("training_data", ""))),
                 ("Used test data", "yes" if sub.get("used_test_data") else "no")]
    for e in r.entries:
        if e.perturbation.key == CLEAN:
            rows.append((f"{e.dataset}/{e.split}", f"{e.n} rows, {e.n_errors} errors, adapter: {esc(e.adapter)}"))
    trs = [f'<tr><th class="text">{k}</th><td class="text">{v}</td></tr>' for k, v in rows]
    return '<table class="plain">\n' + "\n".join(trs) + "\n</table>"


def _ranks(entry: Entry, boards: list[Board]) -> str:
    items = []
    for b in boards:
        for row in b.rows:
            if row.entry is entry:
                tie = " (tie)" if row.tied else ""
                items.append(f'<li><a href="../../boards/{b.slug}.html">{esc(b.title)}</a>: rank {row.rank}{tie} of '
                             f"{len(b.rows)}, {esc(b.columns[0].label)} {pct(row.main.value)}</li>")
        for e, reason in b.not_applicable:
            if e is entry:
                items.append(f'<li><a href="../../boards/{b.slug}.html">{esc(b.title)}</a>: not ranked, '
                             f"{esc(reason)}</li>")
    return "<h2>Ranks</h2>\n<ul>" + "".join(items) + "</ul>" if items else ""


def _robustness_table(entry: Entry) -> str:
    if len(entry.protocol.perturbations) < 2:
        return ""
    layout = LAYOUTS["robustness"]
    headers = [("Dataset", True), ("Condition", True)] + [(f"{g} {c}", False) for g, c, _ in layout.columns]
    rows = []
    for e in entry.results.entries:
        cells = "".join(f"<td>{pct(get(e))}</td>" for _, _, get in layout.columns)
        rows.append(f'<tr><td class="text">{esc(e.dataset)}/{esc(e.split)}</td>'
                    f'<td class="text">{esc(e.perturbation.label)}</td>{cells}</tr>')
    return "<h2>Robustness</h2>\n" + table(headers, rows, css="plain")


def _clean_rows(entry: Entry) -> list[dict[str, Any]]:
    spec = entry.protocol.datasets[0]
    rows = entry.rows(spec.name, spec.split, CLEAN)
    return [r for r in rows.to_pylist() if r["error"] is None] if rows is not None else []


def _figures(entry: Entry, folder: Path) -> list[str]:
    from bench import figures

    rows = _clean_rows(entry)
    done: list[str] = []
    if not rows:
        return done
    title = f"{entry.label} on {rows[0]['dataset']}/{rows[0]['split']}"
    if all(r["probs"] and np.all(np.isfinite(r["probs"])) for r in rows):
        y = np.array([int(r["label"] != 0) for r in rows])
        score = np.array([1.0 - r["probs"][0] for r in rows])
        figures.roc_pr_curves(y, score, folder / "roc_pr.png", title)
        space = entry.protocol.label_space
        width = len(rows[0]["probs"])
        cm = np.zeros((space.num_classes, width), dtype=np.int64)
        for r in rows:
            cm[r["label"], int(np.argmax(r["probs"]))] += 1
        pred_names = space.class_names if width == space.num_classes else ("real", "fake") if width == 2 else \
            ("real", "full_synthetic", "tampered")
        figures.confusion_matrix_plot(cm, space.class_names, pred_names, folder / "confusion.png",
                                      f"Confusion matrix, {title}")
        done += ["roc_pr.png", "confusion.png"]
    series = _robustness_series(entry)
    if series:
        figures.robustness_curves({entry.label: series}, folder / "robustness.png",
                                  f"Robustness, {entry.label}", "accuracy (%)")
        done.append("robustness.png")
    if _mask_grid(entry, rows, folder, figures):
        done.append("masks.png")
    return done


def _robustness_series(entry: Entry) -> list[tuple[str, float]]:
    if len(entry.protocol.perturbations) < 2:
        return []
    out = []
    for e in entry.results.entries:
        for name in ("ternary_detection", "binary_detection"):
            m = e.metrics.get(name)
            acc = m.values.get("accuracy") if m is not None and m.skipped is None else None
            if acc is not None and acc.value is not None:
                out.append((e.perturbation.label, 100 * acc.value))
                break
    return out


def _mask_grid(entry: Entry, rows: list[dict[str, Any]], folder: Path, figures: Any) -> bool:
    from bench.decode import decode_image

    ids = [r["sample_id"] for r in rows if r["pred_mask_h"] is not None and r["gt_mask_h"] is not None][:MASK_ROWS]
    if not ids:
        return False
    masks = entry.store.read_samples(rows[0]["dataset"], rows[0]["split"], ids,
                                     ["perturbation", "sample_id", "meta", "pred_mask", "pred_mask_h", "pred_mask_w",
                                      "gt_mask", "gt_mask_h", "gt_mask_w"]).to_pylist()
    chosen = [r for r in masks if r["perturbation"] == CLEAN and r["pred_mask"] is not None
              and r["gt_mask"] is not None]
    if not chosen:
        return False  # the protocol stored mask statistics only (store_masks: stats)
    grid = []
    for r in chosen:
        gt = decode_bool_mask(r["gt_mask"], r["gt_mask_h"], r["gt_mask_w"])
        pred = decode_prob_mask(r["pred_mask"], r["pred_mask_h"], r["pred_mask_w"])
        path = json.loads(r["meta"] or "{}").get("path")
        image = None
        if isinstance(path, str) and Path(path).is_file():
            try:
                image = decode_image(path)
            except (OSError, ValueError):
                image = None
        if image is None or image.shape[:2] != gt.shape:
            image = np.full((*gt.shape, 3), 200, dtype=np.uint8)
        grid.append((r["sample_id"], image, [("ground truth", gt), ("predicted", pred)]))
    figures.mask_grid(grid, folder / "masks.png", f"{entry.label}: masks on tampered images (p > 0.5 in red)")
    return True
