"""Shortcut check of a dataset split: how well does each non-visual cue predict the label?

For every cue of :mod:`bench.audit.cues`, a shallow decision tree (depth ``MAX_DEPTH``, leaves
of at least ``MIN_LEAF`` of the samples: it can split on a format, a quality or a size, not
memorise files) is fitted with stratified ``FOLDS``-fold cross-validation; the out-of-fold
scores give an ROC-AUC (exact, ties counted half) and a seeded percentile bootstrap interval
over images (:func:`bench.evaluation.bootstrap.bootstrap_ci`). A cue is ``flagged`` when its real-vs-fake
AUC, or its real-vs-class AUC for any fake class, exceeds ``threshold`` (default 0.6).
A constant cue gives constant scores, hence AUC 0.5 exactly.

Labels: binary datasets 0 real / 1 fake; ternary datasets 0 real, 1 full_synthetic, 2 tampered,
with fake = label != 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold
from sklearn.tree import DecisionTreeClassifier

from bench.audit.cues import CUES, FileCues, categories_of, read_cues, summary
from bench.evaluation.bootstrap import bootstrap_ci, describe_bootstrap
from bench.errors import UserError
from bench.metrics.base import SampleMetric
from bench.metrics.functional import binary_curve, roc_auc
from bench.progress import track

FOLDS = 5
MAX_DEPTH = 3
MIN_LEAF = 0.05
DEFAULT_THRESHOLD = 0.6
N_RESAMPLES = 1000
CONFIDENCE = 0.95


class CueAuc(SampleMetric):
    """ROC-AUC of out-of-fold scores (labels 0/1), the one value the bootstrap resamples."""

    name = "cue_auc"

    def update(self, labels: np.ndarray, scores: np.ndarray) -> None:
        self._append({"label": np.asarray(labels, np.int8), "score": np.asarray(scores, np.float64)})

    def _row_spec(self) -> dict[str, tuple[tuple[int, ...], Any]]:
        return {"label": ((), np.int8), "score": ((), np.float64)}

    def _compute(self, table: dict[str, np.ndarray], w: np.ndarray) -> dict[str, float]:
        return {"auc": roc_auc(binary_curve(table["label"], table["score"], w))}


def out_of_fold_scores(x: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
    """P(class 1) for every row from a tree fitted on the other folds (binary ``y``)."""
    folds = min(FOLDS, int(np.bincount(y, minlength=2).min()))
    if folds < 2:
        raise UserError(f"shortcut check needs at least 2 images of each class, got counts {np.bincount(y).tolist()}")
    scores = np.zeros(len(y), dtype=np.float64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(x, y):
        leaf = max(1, int(np.ceil(MIN_LEAF * len(train))))
        tree = DecisionTreeClassifier(max_depth=MAX_DEPTH, min_samples_leaf=leaf, random_state=seed)
        tree.fit(x[train], y[train])
        scores[test] = tree.predict_proba(x[test])[:, list(tree.classes_).index(1)] if 1 in tree.classes_ else 0.0
    return scores


def cue_auc(x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Cross-validated AUC of one cue for binary labels ``y``, with its bootstrap interval."""
    scores = out_of_fold_scores(x, y, seed)
    if np.all(scores == scores[0]):  # a constant cue: every resample has AUC 0.5 (ties count half)
        return {"auc": 0.5, "ci": [0.5, 0.5], "n": int(len(y))}
    metric = CueAuc()
    metric.update(y, scores)
    auc = metric.compute()["auc"]
    lo, hi = bootstrap_ci(metric, n_resamples=N_RESAMPLES, confidence=CONFIDENCE, seed=seed, keys=["auc"])["auc"]
    return {"auc": float(auc), "ci": [float(lo), float(hi)], "n": int(len(y))}


def check_cues(cues: Sequence[FileCues], labels: Sequence[int], class_names: Sequence[str],
               threshold: float = DEFAULT_THRESHOLD, seed: int = 0) -> dict[str, Any]:
    """The shortcut report of files' cues and their labels (see the module docstring)."""
    if not 0.5 <= threshold < 1.0:
        raise UserError(f"Expected `threshold` to be in [0.5, 1), but got {threshold!r}")
    y_all = np.asarray(labels, dtype=np.int64)
    fake = (y_all != 0).astype(np.int64)
    categories = categories_of(list(cues))
    comparisons: list[tuple[str, np.ndarray]] = [("real_vs_fake", np.ones(len(y_all), bool))]
    if len(class_names) > 2:
        comparisons += [(f"real_vs_{name}", (y_all == 0) | (y_all == k))
                        for k, name in enumerate(class_names) if k and np.any(y_all == k)]
    report = []
    for cue in CUES:
        x = np.array([c.features(cue, categories) for c in cues], dtype=np.float64)
        results = {name: cue_auc(x[keep], fake[keep], seed) for name, keep in comparisons}
        head = results["real_vs_fake"]
        flagged_by = [name for name, r in results.items() if r["auc"] > threshold]
        per_class = {k: v for k, v in results.items() if k != "real_vs_fake"}
        report.append({"name": cue, "auc": head["auc"], "ci": head["ci"], "flagged": bool(flagged_by),
                       "flagged_by": flagged_by, "per_class": per_class})
    return {
        "threshold": threshold,
        "classifier": f"decision tree (max_depth={MAX_DEPTH}, min_samples_leaf={MIN_LEAF:.0%} of the training fold), "
                      f"stratified {FOLDS}-fold cross-validation (seed {seed}), out-of-fold ROC-AUC",
        "ci": describe_bootstrap(N_RESAMPLES, CONFIDENCE, seed),
        "n": int(len(y_all)),
        "n_unreadable": sum(c.error is not None for c in cues),
        "cues": report,
        "flagged": [r["name"] for r in report if r["flagged"]],
        "per_class_summary": summary(list(cues), [int(v) for v in y_all], tuple(class_names)),
    }


def audit_dataset(dataset: Any, threshold: float = DEFAULT_THRESHOLD, seed: int = 0) -> dict[str, Any]:
    """The shortcut report of a dataset split whose plugin lists its files (``entries``)."""
    entries = getattr(dataset, "entries", None)
    if not isinstance(entries, list):
        raise UserError(f"data audit reads files from a listing; dataset {dataset.name!r} does not list its files")
    cues, labels = [], []
    for e in track(entries, f"reading headers of {dataset.name}/{dataset.split}", total=len(entries)):
        name = e.meta.get("path") if isinstance(e.image, bytes) else None
        cues.append(read_cues(e.image, name))
        labels.append(int(e.label))
    report = check_cues(cues, labels, dataset.label_space.class_names, threshold, seed)
    return {"dataset": dataset.name, "root": str(dataset.root), "split": dataset.split,
            "label_space": dataset.label_space.value, **report}
