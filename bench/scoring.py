"""Scoring: prediction-store rows → metrics → :class:`~bench.results.ResultsFile`.

Rows are read sorted by (dataset, split, perturbation, sample id), so the numbers do not depend
on the order in which they were predicted. Label-space rules (each recorded as ``adapter``):

- probabilities in the protocol's label space: used as they are;
- ternary probabilities on binary data: :class:`~bench.adapters.TernaryToBinary`;
- binary probabilities on ternary data: the :class:`~bench.adapters.BinaryOnTernary` rule,
  through the metric's own mode (:data:`BINARY_ON_TERNARY_PARAMS`); a metric without that
  mode is skipped with the reason recorded.

Rows with an error are counted in ``n_errors`` and left out of every metric (never dropped
from the store). Localization metrics see the rows that have a predicted mask; a tampered row
without a ground-truth mask is left out and counted in ``n_no_gt_mask``.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench.adapters import TernaryToBinary
from bench.metrics.base import Metric
from bench.protocol import MetricSpec, Protocol
from bench.results import MetricResult, MetricValue, PerturbationInfo, ProtocolInfo, ResultEntry, ResultsFile
from bench.store import PredictionStore, decode_bool_mask, decode_prob_mask, iter_groups
from bench.types import TAMPERED, LabelSpace

BINARY_ON_TERNARY_PARAMS: dict[str, dict[str, Any]] = {"ternary_detection": {"mode": "binary_on_ternary"}}
"""Metrics that implement the BinaryOnTernary rule, and the parameters that switch it on."""

MASK_CHUNK = 32
MAX_ERRORS_LISTED = 20
PACKAGES = ("sida-bench", "torch", "torchvision", "timm", "open_clip_torch", "transformers", "peft",
            "numpy", "pandas", "pyarrow", "Pillow", "scikit-learn", "scikit-image", "pydantic")


def score_store(
    store: PredictionStore,
    protocol: Protocol,
    model_info: dict[str, Any],
    run_info: dict[str, Any],
    *,
    conditions: Sequence[Any] | None = None,
    requested: dict[tuple[str, str], int] | None = None,
    dataset_info: dict[tuple[str, str], dict[str, Any]] | None = None,
    device: str = "cpu",
    source: str = "",
) -> ResultsFile:
    """Score every (dataset, split, perturbation) group of ``store`` with the protocol's metrics."""
    table = store.read()
    groups = dict(iter_groups(table))
    perts = _perturbation_infos(protocol, conditions)
    entries: list[ResultEntry] = []
    for spec in protocol.datasets:
        for pert in perts:
            rows = groups.get((spec.name, spec.split, pert.key))
            if rows is None:
                continue
            entry = score_rows(rows, protocol, pert)
            entry.n_requested = (requested or {}).get((spec.name, spec.split))
            entry.dataset_info = (dataset_info or {}).get((spec.name, spec.split), {})
            entries.append(entry)
    run = {**run_info, "rows": table.num_rows}
    return ResultsFile(
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        protocol=ProtocolInfo(name=protocol.name, version=protocol.version, source=source,
                              sha256=protocol.sha256(), resolved=protocol.to_dict()),
        model=model_info,
        environment=environment(device),
        run=run,
        entries=entries,
    )


def _perturbation_infos(protocol: Protocol, conditions: Sequence[Any] | None) -> list[PerturbationInfo]:
    if conditions is not None:
        return [PerturbationInfo(key=c.key, name=c.name, params=c.params, label=c.label) for c in conditions]
    from bench.runner import build_conditions

    return _perturbation_infos(protocol, build_conditions(protocol))


def score_rows(rows: pa.Table, protocol: Protocol, pert: PerturbationInfo) -> ResultEntry:
    """Metrics of one group of rows (already sorted by sample id)."""
    from bench.plugins import METRICS, create_metric

    errors = rows.column("error").to_pylist()
    ids = rows.column("sample_id").to_pylist()
    ok = np.array([e is None for e in errors], dtype=bool)
    error_list = {ids[i]: errors[i] for i in np.flatnonzero(~ok)[:MAX_ERRORS_LISTED]}
    good = rows.filter(pa.array(ok))
    spaces = set(good.column("probs_space").to_pylist())
    probs_space = spaces.pop() if len(spaces) == 1 else protocol.label_space.value
    adapter = _adapter_name(LabelSpace(probs_space), protocol.label_space)
    metrics: dict[str, MetricResult] = {}
    for spec in protocol.metrics:
        cls = METRICS.get(spec.name)
        if cls.task == "localization":
            metrics[spec.name] = _score_localization(create_metric(spec.name, **spec.params), good, protocol)
        elif cls.task == "explanation":
            metrics[spec.name] = _score_explanation(create_metric(spec.name, **spec.params), good, protocol)
        elif cls.task == "detection+localization":
            metrics[spec.name] = _score_legacy(create_metric(spec.name, **spec.params), good, probs_space, protocol)
        else:
            metrics[spec.name] = _score_detection(spec, good, probs_space, protocol, create_metric)
    return ResultEntry(dataset=rows.column("dataset")[0].as_py(), split=rows.column("split")[0].as_py(),
                       perturbation=pert, n=rows.num_rows, n_errors=int((~ok).sum()), errors=error_list,
                       adapter=adapter, metrics=metrics)


def _adapter_name(probs: LabelSpace, data: LabelSpace) -> str:
    if probs == data:
        return "none"
    if probs == LabelSpace.TERNARY:
        return "TernaryToBinary (p_fake = p_full_synthetic + p_tampered)"
    return "BinaryOnTernary (real correct iff predicted real; full_synthetic/tampered correct iff predicted fake)"


def _score_detection(spec: MetricSpec, rows: pa.Table, probs_space: str, protocol: Protocol, factory: Any) -> MetricResult:
    params = dict(spec.params)
    if probs_space == LabelSpace.BINARY.value and protocol.label_space == LabelSpace.TERNARY:
        if spec.name not in BINARY_ON_TERNARY_PARAMS:
            return MetricResult(skipped="binary predictions on ternary data: this metric has no BinaryOnTernary mode")
        params.update(BINARY_ON_TERNARY_PARAMS[spec.name])
    metric = factory(spec.name, **params)
    labels = np.asarray(rows.column("label").to_pylist(), dtype=np.int64)
    probs = np.asarray(rows.column("probs").to_pylist(), dtype=np.float64).reshape(len(labels), -1)
    if probs_space == LabelSpace.TERNARY.value and protocol.label_space == LabelSpace.BINARY:
        probs = TernaryToBinary.apply(probs) if len(probs) else np.zeros((0, 2))
    metric.update(labels, probs, groups=rows.column("group").to_pylist(), sample_ids=rows.column("sample_id").to_pylist())
    return _result(metric, protocol)


def _score_localization(metric: Metric, rows: pa.Table, protocol: Protocol) -> MetricResult:
    has_pred = np.array([m is not None for m in rows.column("pred_mask").to_pylist()], dtype=bool)
    if not has_pred.any():
        return MetricResult(convention=metric.convention(), skipped="the model produced no predicted masks")
    labels_all = np.asarray(rows.column("label").to_pylist(), dtype=np.int64)
    has_gt = np.array([m is not None for m in rows.column("gt_mask").to_pylist()], dtype=bool)
    tampered = getattr(metric, "tampered_label", 2)
    usable = has_pred & (has_gt | (labels_all != tampered))
    sub = rows.filter(pa.array(usable))
    for start in range(0, sub.num_rows, MASK_CHUNK):
        chunk = sub.slice(start, MASK_CHUNK).to_pylist()
        gts = [decode_bool_mask(r["gt_mask"], r["gt_mask_h"], r["gt_mask_w"]) if r["gt_mask"] is not None else None
               for r in chunk]
        preds = [decode_prob_mask(r["pred_mask"], r["pred_mask_h"], r["pred_mask_w"]) for r in chunk]
        metric.update(gts, preds, [r["label"] for r in chunk], sample_ids=[r["sample_id"] for r in chunk])
    result = _result(metric, protocol)
    result.values["n_no_gt_mask"] = MetricValue(value=float((has_pred & ~has_gt & (labels_all == tampered)).sum()))
    result.values["n_no_pred_mask"] = MetricValue(value=float((~has_pred).sum()))
    return result


def _score_explanation(metric: Metric, rows: pa.Table, protocol: Protocol) -> MetricResult:
    """Explanation scores (:mod:`bench.metrics.explanation`); "not applicable" for a model without text."""
    from bench.explanation.store_rows import feed_explanation

    skipped = feed_explanation(metric, rows)
    if skipped is not None:
        return MetricResult(convention=metric.convention(), skipped=skipped)
    return _result(metric, protocol)


def _score_legacy(metric: Metric, rows: pa.Table, probs_space: str, protocol: Protocol) -> MetricResult:
    """SIDA's legacy numbers need ternary probabilities and, for tampered images, both masks.

    A tampered image for which the model made no mask (honest mode, predicted another class)
    counts as an all-empty prediction; the count is reported as ``n_tampered_without_pred_mask``.
    """
    if probs_space != LabelSpace.TERNARY.value:
        return MetricResult(skipped="SIDA legacy metrics need ternary probabilities")
    no_pred = 0
    for start in range(0, rows.num_rows, MASK_CHUNK):
        chunk = rows.slice(start, MASK_CHUNK).to_pylist()
        gts, preds = [], []
        for r in chunk:
            gt = decode_bool_mask(r["gt_mask"], r["gt_mask_h"], r["gt_mask_w"]) if r["gt_mask"] is not None else None
            if r["pred_mask"] is not None:
                pred = decode_prob_mask(r["pred_mask"], r["pred_mask_h"], r["pred_mask_w"])
            elif r["label"] == TAMPERED and gt is not None:
                pred, no_pred = np.zeros(gt.shape, dtype=np.float32), no_pred + 1
            else:
                pred = None
            gts.append(gt)
            preds.append(pred)
        probs = np.asarray([r["probs"] for r in chunk], dtype=np.float64).reshape(len(chunk), -1)
        metric.update([r["label"] for r in chunk], probs, gts, preds, sample_ids=[r["sample_id"] for r in chunk])
    result = _result(metric, protocol)
    result.convention["missing_pred_mask"] = "empty prediction (no forged pixels)"
    result.values["n_tampered_without_pred_mask"] = MetricValue(value=float(no_pred))
    return result


def _result(metric: Metric, protocol: Protocol | None) -> MetricResult:
    from bench.bootstrap import bootstrap_ci, describe_bootstrap

    values = metric.compute()
    cis: dict[str, tuple[float, float]] = {}
    boot = protocol.bootstrap if protocol is not None else None
    if boot is not None and boot.n > 0 and hasattr(metric, "headline_keys"):
        cis = bootstrap_ci(metric, n_resamples=boot.n, confidence=boot.confidence, seed=boot.seed)
    out = {k: MetricValue(value=_finite(v), ci=_ci(cis.get(k))) for k, v in values.items()}
    convention = dict(metric.convention())
    if cis:
        convention["ci"] = describe_bootstrap(boot.n, boot.confidence, boot.seed)  # type: ignore[union-attr]
    return MetricResult(convention=convention, values=out)


def _finite(v: Any) -> float | None:
    f = float(v)
    return f if np.isfinite(f) else None


def _ci(pair: Any) -> tuple[float, float] | None:
    if pair is None:
        return None
    lo, hi = float(pair[0]), float(pair[1])
    return (lo, hi) if np.isfinite(lo) and np.isfinite(hi) else None


def environment(device: str) -> dict[str, Any]:
    """Git commit (None outside a repository), package versions, Python, platform, device."""
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    import torch

    return {"git_commit": git_commit(), "packages": packages, "python": sys.version.split()[0],
            "platform": platform.platform(), "device": device, "torch_threads": torch.get_num_threads(),
            "cuda": torch.version.cuda}


def git_commit() -> str | None:
    """The commit of the checkout holding this package, with ``+dirty`` when it has changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def score_file(predictions: str | Path, protocol: Protocol | str | Path, out_dir: str | Path, *,
               data_roots: dict[str, Path] | None = None, name: str | None = None) -> ResultsFile:
    """Score a predictions file (see :mod:`bench.predictions_import`); write results and tables to ``out_dir``."""
    from bench.predictions_import import import_predictions
    from bench.protocol import load_protocol
    from bench.tables import write_tables

    proto = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    out = Path(out_dir)
    store, info = import_predictions(Path(predictions), proto, out, data_roots, name)
    run_info = {"seed": proto.seed, "limit": None, "predictions": "predictions", "source": str(predictions)}
    results = score_store(store, proto, {**info, "spec": info["name"]}, run_info, device="none")
    results.write(out)
    write_tables([results], out / "tables", kinds=[t.kind for t in proto.tables] or None)
    return results
