"""``sida-bench demo``: train small models on sid-mini, run the bundled protocols, write the
paper-style tables (Tables 2–5) and figures.

What it does, in order:

1. builds (or reuses) ``sid-mini`` and ``dmimage-mini`` in the cache (``--quick``: a smaller build);
2. trains each demo model on the sid-mini ``train`` split with model selection on
   ``validation`` (never test), through its own recipe (``Detector.fit``);
3. runs ``sid_mini_detection`` and ``dmimage_mini_cross`` (detectors), ``sid_mini_localization``
   (localizers) and ``sid_mini_robustness`` (the detectors that learn sid-mini well above chance) on
   the test splits with the trained weights (a model without a training recipe runs with its random
   ``tiny`` weights and is labelled ``(untrained)``); for SIDA also
   ``sid_mini_explanation`` twice: the official template answers (the floor) and the greedy text
   of a short description stage (stage 2) trained on sid-mini's description subset;
4. writes ``DIR/runs/<protocol>/<model>/`` (predictions, results.json), ``DIR/tables/`` (md,
   LaTeX, CSV), ``DIR/figures/`` (ROC curves, robustness curves, mask overlays, confusion
   matrices), ``DIR/leaderboard/`` (the static leaderboard site of the runs) and a short
   robustness audit of one model (``sid_mini_audit`` on :data:`AUDIT_LIMIT` test images) in
   ``DIR/audit/report.html``;
5. prints the Table 2 and Table 4 style tables.

Determinism: every seed is fixed, torch runs with a fixed thread count and deterministic
algorithms, and the data are byte-identical builds; two runs give identical tables.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.leaderboard.site import write_demo_leaderboard
from bench.progress import STDERR
from bench.reproducibility.claims import AucSummary, Claim, demo_claims, write_claims
from bench.reproducibility.tolerance import table_sizes, write_sizes

DEMO_THREADS = 2
AUDIT_MODEL = "npr"
AUDIT_LIMIT = 90
"""The demo audits one model on this many sid-mini test images (30 per class): about half a minute."""
QUICK_PER_CLASS = {"train": 60, "validation": 20, "test": 30}
EXPLANATION_LIMIT = 30
"""Test images of the demo's explanation runs (spread evenly through the test split; greedy text costs one
language-model pass per token, so this keeps the added time small)."""
PROTOCOLS = {
    "detection": "sid_mini_detection",
    "localization": "sid_mini_localization",
    "robustness": "sid_mini_robustness",
    "cross_dataset": "dmimage_mini_cross",
    "explanation": "sid_mini_explanation",
}


@dataclass(frozen=True)
class DemoModel:
    """One model of the demo: its spec, construction options and training budgets."""

    key: str
    spec: str
    options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    train_quick: dict[str, Any] = field(default_factory=dict)
    localizes: bool = False
    robustness: bool = True
    detects: bool = True
    """Run the detection and cross-dataset protocols (False: a localizer shown in Table 3 and the mask grid only)."""
    untrained: str | None = None
    """Why this model is not trained (no training recipe exists); it then runs with its random ``tiny``
    weights and its table rows say ``(untrained)``."""
    describe: dict[str, Any] | None = None
    describe_quick: dict[str, Any] | None = None
    """Description-stage (stage 2) budgets; set for a model that explains (scored by ``sid_mini_explanation``)."""


DEMO_MODELS: tuple[DemoModel, ...] = (
    # Full runs use each tiny configuration's own recipe (sized for sid-mini), except where an epoch
    # budget is given (to keep the demo under 10 minutes on 2 cores); --quick trains a few steps. The
    # robustness suite (7 conditions × 900 images) runs for the detectors that learn sid-mini well
    # above chance and for SIDA; for a detector near chance its curve says nothing.
    DemoModel("cnnspot", "cnnspot:tiny", {"num_classes": 3}, train={"epochs": 5}, train_quick={"epochs": 1},
              robustness=False),
    DemoModel("npr", "npr:tiny", {"num_classes": 3}, train_quick={"epochs": 1}),
    DemoModel("fredect", "fredect:tiny", {"num_classes": 3}, train_quick={"epochs": 1}),
    DemoModel("univfd", "univfd:tiny", {"num_classes": 3}, train={"epochs": 4}, train_quick={"epochs": 1},
              robustness=False),
    DemoModel("lgrad", "lgrad:tiny", {"num_classes": 3}, train={"epochs": 3}, train_quick={"epochs": 1}),
    DemoModel("lnp", "lnp:tiny", {"num_classes": 3}, train={"epochs": 3}, train_quick={"epochs": 1},
              robustness=False),
    DemoModel("gram_net", "gram_net:tiny", {"num_classes": 3}, train_quick={"epochs": 1}, robustness=False),
    DemoModel("fusing", "fusing:tiny", {"num_classes": 3}, train={"epochs": 1}, train_quick={"epochs": 1},
              robustness=False),
    DemoModel("antifakeprompt", "antifakeprompt:tiny", {}, train_quick={"epochs": 1, "max_steps": 12},
              robustness=False),
    DemoModel("pscc_net", "pscc_net:tiny", {}, train_quick={"epochs": 1, "max_steps": 12}, localizes=True,
              robustness=False),
    DemoModel("mvss_net", "mvss_net:tiny", {}, train_quick={"max_steps": 12}, localizes=True, detects=False,
              robustness=False),
    DemoModel("hifi_net", "hifi_net:tiny", {}, localizes=True, detects=False, robustness=False,
              untrained="no official training recipe"),
    DemoModel("trufor", "trufor:tiny", {}, localizes=True, detects=False, robustness=False),
    DemoModel("lisa", "lisa:tiny", {}, train={"epochs": 3}, train_quick={"max_steps": 20}, localizes=True,
              detects=False, robustness=False),
    DemoModel("sida", "sida:tiny", {}, train_quick={"max_steps": 20}, localizes=True,
              describe={"max_steps": 30}, describe_quick={"max_steps": 15}),
)


@dataclass
class DemoResult:
    out_dir: Path
    tables: list[Path]
    figures: list[Path]
    seconds: float
    training: dict[str, dict[str, Any]]
    claims: list[Claim]
    audit: Path | None = None


def run_demo(out_dir: Path, *, quick: bool = False, device: str = "cpu", seed: int = 0,
             models: Sequence[DemoModel] = DEMO_MODELS) -> DemoResult:
    """Run the whole demo into ``out_dir`` (see the module docstring)."""
    from bench.sidmini import ensure_sid_mini

    started = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(DEMO_THREADS)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        STDERR.print("[bold]1/4[/] sid-mini and dmimage-mini" + (" (quick build)" if quick else ""))
        data_root = ensure_sid_mini(per_class=QUICK_PER_CLASS if quick else None, seed=seed)
        roots = {"sid_mini": data_root, "dmimage_mini": data_root}
        STDERR.print(f"      data: {data_root}")
        training: dict[str, dict[str, Any]] = {}
        STDERR.print(f"[bold]2/4[/] training {len(models)} models on sid-mini (train split; selection on validation)")
        weights: dict[str, Path | None] = {}
        for m in models:
            if m.untrained is None:
                weights[m.key], training[m.key] = _train(m, data_root, out_dir, quick, device, seed)
            else:
                weights[m.key], training[m.key] = None, {"untrained": m.untrained}
                STDERR.print(f"      {m.key:<9} not trained ({m.untrained}): random tiny weights")
        STDERR.print("[bold]3/4[/] running the bundled protocols on the test splits")
        runs = _run_protocols(models, weights, roots, out_dir, device)
        runs["explanation"] = _run_explanations(models, weights, data_root, out_dir, quick, device, seed, training)
        audit = _audit(models, weights, roots, out_dir, device)
        STDERR.print("[bold]4/4[/] tables, figures and the leaderboard site")
        tables = _write_tables(runs, out_dir / "tables")
        clean = _clean_rows(runs)
        figures = _write_figures(runs, clean, out_dir / "figures")
        claims = demo_claims(out_dir / "tables", _aucs(clean, models))
        tables.append(write_claims(claims, out_dir / "tables"))
        write_demo_leaderboard(out_dir)
        (out_dir / "training.json").write_text(json.dumps(training, indent=2, sort_keys=True, default=str) + "\n")
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return DemoResult(out_dir, tables, figures, time.time() - started, training, claims, audit)


def _train(m: DemoModel, data_root: Path, out_dir: Path, quick: bool, device: str, seed: int,
           init: Path | None = None, extra: dict[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
    from bench.model import TrainOptions
    from bench.plugins import create_dataset, create_model

    torch.manual_seed(seed)
    t0 = time.time()
    model = create_model(m.spec, weights=init, device=device, **m.options)
    train = create_dataset("sid_mini", root=data_root, split="train")
    val = create_dataset("sid_mini", root=data_root, split="validation")
    budget = m.train_quick if quick else m.train
    report = model.fit(train, val, TrainOptions(out_dir=out_dir / "checkpoints" / m.key, seed=seed, extra=extra or {},
                                                **budget))
    seconds = time.time() - t0
    best = Path(report["best"])
    STDERR.print(f"      {m.key:<9} trained in {seconds:5.1f} s  →  {best}")
    summary = {k: v for k, v in report.items() if k in ("best", "steps", "epoch", "epochs", "best_val_acc",
                                                         "best_val_score", "best_val_giou", "stopped")}
    return best, {**summary, "seconds": round(seconds, 1), "budget": budget}


def _protocols_for(m: DemoModel) -> list[str]:
    kinds = ["detection", "cross_dataset"] if m.detects else []
    if m.localizes:
        kinds.append("localization")
    if m.robustness:
        kinds.append("robustness")
    return [k for k in PROTOCOLS if k in kinds]


def _run_protocols(models: Sequence[DemoModel], weights: dict[str, Path | None], roots: dict[str, Path],
                   out_dir: Path, device: str) -> dict[str, dict[str, Path]]:
    """Run every protocol for every model; returns {table kind: {model key: run dir}}."""
    from bench.evaluation.runner import run_protocol
    from bench.evaluation.scorer import score_run
    from bench.plugins import create_model

    runs: dict[str, dict[str, Path]] = {k: {} for k in PROTOCOLS}
    for m in models:
        model = create_model(m.spec, weights=weights[m.key], device=device, **m.options)
        for kind in _protocols_for(m):
            run_dir = out_dir / "runs" / PROTOCOLS[kind] / m.key
            if run_dir.exists():
                shutil.rmtree(run_dir)
            run_protocol(PROTOCOLS[kind], model, run_dir, data_roots=roots)
            results = score_run(run_dir)
            if m.untrained is not None:  # no table row passes random weights off as a trained model
                results.model["display_name"] = f"{m.spec} (untrained)"
            results.write(run_dir)
            runs[kind][m.key] = run_dir
    return runs


def _audit(models: Sequence[DemoModel], weights: dict[str, Path | None], roots: dict[str, Path], out_dir: Path,
           device: str) -> Path | None:
    """``sida-bench audit`` of :data:`AUDIT_MODEL` on ``sid_mini_audit`` (limited); the report's path."""
    from bench.audit.report import REPORT_HTML, build_report
    from bench.plugins import create_model
    from bench.evaluation.runner import run_protocol
    from bench.evaluation.scorer import score_run

    m = next((m for m in models if m.key == AUDIT_MODEL), None)
    if m is None:
        return None
    t0 = time.time()
    audit_dir = out_dir / "audit"
    if audit_dir.exists():
        shutil.rmtree(audit_dir)
    model = create_model(m.spec, weights=weights[m.key], device=device, **m.options)
    run_protocol("sid_mini_audit", model, audit_dir / "run", data_roots=roots, limit=AUDIT_LIMIT)
    score_run(audit_dir / "run").write(audit_dir / "run")
    build_report(audit_dir / "run", audit_dir, command=f"sida-bench audit --model {m.spec} --weights "
                 f"{weights[m.key]} --protocol sid_mini_audit --limit {AUDIT_LIMIT} (demo)")
    seconds = time.time() - t0
    STDERR.print(f"      audit of {m.key} ({AUDIT_LIMIT} images) in {seconds:5.1f} s  →  {audit_dir / REPORT_HTML}")
    return audit_dir / REPORT_HTML


def _run_explanations(models: Sequence[DemoModel], weights: dict[str, Path | None], data_root: Path, out_dir: Path,
                      quick: bool, device: str, seed: int, training: dict[str, dict[str, Any]]) -> dict[str, Path]:
    """For each explaining model: template answers (the floor), then a description stage and its text."""
    from bench.evaluation.runner import run_protocol
    from bench.evaluation.scorer import score_run
    from bench.plugins import create_model

    runs: dict[str, Path] = {}
    roots = {"sid_mini": data_root}
    for m in models:
        budget = m.describe_quick if quick else m.describe
        if budget is None:
            continue
        stage2 = DemoModel(f"{m.key}_description", m.spec, m.options, train=budget, train_quick=budget)
        weights[stage2.key], training[stage2.key] = _train(stage2, data_root, out_dir, quick, device, seed,
                                                           init=weights[m.key], extra={"stage": 2})
        for key, text in ((f"{m.key}_template", "template"), (stage2.key, "generated")):
            model = create_model(m.spec, weights=weights[m.key if text == "template" else stage2.key],
                                 device=device, explain=True, text=text, **m.options)
            run_dir = out_dir / "runs" / PROTOCOLS["explanation"] / key
            if run_dir.exists():
                shutil.rmtree(run_dir)
            run_protocol(PROTOCOLS["explanation"], model, run_dir, data_roots=roots, limit=EXPLANATION_LIMIT)
            score_run(run_dir).write(run_dir)
            runs[key] = run_dir
    return runs


def _write_tables(runs: dict[str, dict[str, Path]], out: Path) -> list[Path]:
    from bench.evaluation.results import load_results
    from bench.tables import write_tables

    paths: list[Path] = []
    entries = {}
    for kind, by_model in runs.items():
        if by_model:
            results = [load_results(d) for d in by_model.values()]
            paths += write_tables(results, out, kinds=[kind], names=list(by_model))
            entries[kind] = [e for r in results for e in r.entries]
    paths.append(write_sizes(table_sizes(entries), out))
    return paths


def _store_rows(run_dir: Path, columns: list[str] | None = None) -> list[dict[str, Any]]:
    from bench.evaluation.store import PredictionStore

    return PredictionStore(run_dir / "predictions").read(columns).to_pylist()


CleanRows = dict[tuple[str, str], list[dict[str, Any]]]


def _clean_rows(runs: dict[str, dict[str, Path]]) -> CleanRows:
    """Clean-condition, error-free store rows of the detection and cross-dataset runs, read once."""
    light = ["sample_id", "label", "probs", "perturbation", "error"]
    return {(kind, key): [r for r in _store_rows(run_dir, light) if r["perturbation"] == "none" and r["error"] is None]
            for kind in ("detection", "cross_dataset") for key, run_dir in runs[kind].items()}


def _real_vs_fake(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Labels (1 = fake) and p_fake = 1 − p_real of clean rows (ternary and binary models alike)."""
    return np.array([int(r["label"] != 0) for r in rows]), np.array([1.0 - r["probs"][0] for r in rows])


def _aucs(clean: CleanRows, models: Sequence[DemoModel]) -> dict[str, dict[str, AucSummary]]:
    """Real-vs-fake AUC per table row label: in domain on fully synthetic vs real sid-mini test
    images (like dmimage-mini's fakes), and held out on dmimage-mini."""
    from sklearn.metrics import roc_auc_score

    labels = {m.key: m.spec for m in models}
    out: dict[str, dict[str, AucSummary]] = {"in_domain": {}, "held_out": {}}
    for (kind, key), rows in clean.items():
        if kind == "detection":
            rows = [r for r in rows if r["label"] != 2]
        y, score = _real_vs_fake(rows)
        if 0 < y.sum() < len(y):
            name = "in_domain" if kind == "detection" else "held_out"
            out[name][labels[key]] = AucSummary(float(roc_auc_score(y, score)), int((y == 0).sum()), int(y.sum()))
    return out


def _write_figures(runs: dict[str, dict[str, Path]], clean: CleanRows, out: Path) -> list[Path]:
    from bench import figures
    from bench.evaluation.results import load_results
    from bench.types import LabelSpace

    paths: list[Path] = []
    for kind, title in (("detection", "sid-mini test: real vs fake"), ("cross_dataset", "dmimage-mini: real vs fake")):
        curves = {key: _real_vs_fake(clean[(kind, key)]) for key in runs[kind]}
        paths.append(figures.roc_curves(curves, out / f"roc_{PROTOCOLS[kind]}.png", f"ROC, {title}"))
    for key in runs["detection"]:
        rows = clean[("detection", key)]
        n_pred = len(rows[0]["probs"]) if rows else 3
        cm = np.zeros((3, n_pred), dtype=np.int64)
        for r in rows:
            cm[r["label"], int(np.argmax(r["probs"]))] += 1
        names = LabelSpace.TERNARY.class_names if n_pred == 3 else LabelSpace.BINARY.class_names
        paths.append(figures.confusion_matrix_plot(cm, LabelSpace.TERNARY.class_names, names,
                                                   out / f"confusion_{key}.png",
                                                   f"Confusion matrix, {key} (sid-mini test, clean)"))
    series_det: dict[str, list[tuple[str, float]]] = {}
    series_loc: dict[str, list[tuple[str, float]]] = {}
    for key, run_dir in runs["robustness"].items():
        for entry in load_results(run_dir).entries:
            det = entry.metrics.get("ternary_detection")
            acc = det.values.get("accuracy") if det is not None and det.skipped is None else None
            if acc is not None and acc.value is not None:
                series_det.setdefault(key, []).append((entry.perturbation.label, 100 * acc.value))
            loc = entry.metrics.get("localization")
            f1 = loc.values.get("pixel_f1") if loc is not None and loc.skipped is None else None
            if f1 is not None and f1.value is not None:
                series_loc.setdefault(key, []).append((entry.perturbation.label, 100 * f1.value))
    if series_det:
        paths.append(figures.robustness_curves(series_det, out / "robustness_detection.png",
                                               "Robustness on sid-mini: 3-class detection", "accuracy (%)"))
    if series_loc:
        paths.append(figures.robustness_curves(series_loc, out / "robustness_localization.png",
                                               "Robustness on sid-mini: localization", "pixel F1 (%)"))
    else:
        STDERR.print("      robustness_localization.png not drawn: no model has a localization score in the "
                     "robustness runs (e.g. no image predicted tampered)")
    paths += _mask_grid(figures, runs["localization"], out)
    return paths


def _mask_grid(figures: Any, loc_runs: dict[str, Path], out: Path, n_rows: int = 6) -> list[Path]:
    from bench.decode import decode_image
    from bench.evaluation.results import load_results
    from bench.evaluation.store import decode_bool_mask, decode_prob_mask

    if not loc_runs:
        return []
    by_model = {}
    for key, run_dir in loc_runs.items():
        rows = _store_rows(run_dir)
        by_model[key] = {r["sample_id"]: r for r in rows if r["perturbation"] == "none" and r["label"] == 2}
    labels = {key: load_results(run_dir).model_label for key, run_dir in loc_runs.items()}  # as the tables name them
    ids = sorted(set.intersection(*(set(v) for v in by_model.values())))[:n_rows]
    grid = []
    for sid in ids:
        first = next(iter(by_model.values()))[sid]
        image = decode_image(json.loads(first["meta"])["path"])
        cols: list[tuple[str, np.ndarray | None]] = []
        if first["gt_mask"] is not None:
            cols.append(("ground truth", decode_bool_mask(first["gt_mask"], first["gt_mask_h"], first["gt_mask_w"])))
        for key, rows in by_model.items():
            r = rows[sid]
            mask = decode_prob_mask(r["pred_mask"], r["pred_mask_h"], r["pred_mask_w"]) if r["pred_mask"] else None
            cols.append((labels[key], mask))
        grid.append((sid, image, cols))
    if not grid:
        return []
    return [figures.mask_grid(grid, out / "masks_tampered.png",
                              "Tampered sid-mini test images: ground truth vs predicted masks (p > 0.5 in red)",
                              missing="no mask\n(not predicted tampered;\nhonest mode)")]
