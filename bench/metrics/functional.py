"""Weighted, exact classification curves shared by the detection metrics.

Every function takes per-sample ``weights`` (non-negative integer multiplicities), so that a
bootstrap resample is just another weight vector. With all weights 1 the results equal
scikit-learn's ``roc_curve`` / ``roc_auc_score`` / ``average_precision_score`` (ties included:
tied scores form one threshold, i.e. count half in the AUC).
Undefined values (a single class present) are ``nan``, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NAN = float("nan")


@dataclass(frozen=True)
class Curve:
    """Cumulative weighted true/false positives at each distinct score, highest first."""

    tps: np.ndarray
    fps: np.ndarray

    @property
    def n_pos(self) -> float:
        return float(self.tps[-1]) if self.tps.size else 0.0

    @property
    def n_neg(self) -> float:
        return float(self.fps[-1]) if self.fps.size else 0.0


def binary_curve(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> Curve:
    """Weighted counts of positives/negatives scoring >= each distinct score (labels 0/1)."""
    keep = weights > 0
    y, s, w = labels[keep], scores[keep], weights[keep].astype(np.float64)
    order = np.argsort(-s, kind="mergesort")
    y, s, w = y[order], s[order], w[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), y.size - 1] if y.size else np.zeros(0, np.int64)
    tps = np.cumsum(w * (y == 1))[last_of_run]
    fps = np.cumsum(w * (y != 1))[last_of_run]
    return Curve(tps=tps, fps=fps)


def roc_points(curve: Curve) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) starting at (0, 0), as ``sklearn.metrics.roc_curve(drop_intermediate=False)``."""
    fpr = np.r_[0.0, curve.fps] / curve.n_neg
    tpr = np.r_[0.0, curve.tps] / curve.n_pos
    return fpr, tpr


def roc_auc(curve: Curve) -> float:
    """Area under the ROC (trapezoidal over distinct thresholds; ties count half)."""
    if curve.n_pos == 0 or curve.n_neg == 0:
        return NAN
    fpr, tpr = roc_points(curve)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def average_precision(curve: Curve) -> float:
    """AP = sum_n (R_n - R_{n-1}) P_n over distinct thresholds (scikit-learn's definition)."""
    if curve.n_pos == 0:
        return NAN
    precision = curve.tps / (curve.tps + curve.fps)
    recall = np.r_[0.0, curve.tps / curve.n_pos]
    return float(np.sum(np.diff(recall) * precision))


def equal_error_rate(curve: Curve) -> float:
    """The rate where FNR = FPR, linearly interpolated along the ROC polyline.

    Equals ``brentq(lambda x: 1 - x - interp1d(fpr, tpr)(x), 0, 1)`` (the usual EER code).
    """
    if curve.n_pos == 0 or curve.n_neg == 0:
        return NAN
    fpr, tpr = roc_points(curve)
    gap = 1.0 - tpr - fpr  # FNR - FPR: +1 at (0, 0), -1 at (1, 1)
    i = int(np.argmax(gap <= 0))
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def tpr_at_fpr(curve: Curve, max_fpr: float) -> float:
    """The highest TPR among ROC operating points with FPR <= ``max_fpr`` (no interpolation)."""
    if curve.n_pos == 0 or curve.n_neg == 0:
        return NAN
    fpr, tpr = roc_points(curve)
    return float(np.max(tpr[fpr <= max_fpr + 1e-12]))


def safe_div(num: float, den: float, undefined: float = NAN) -> float:
    return float(num) / float(den) if den else undefined


def f1_from_counts(tp: float, fp: float, fn: float, zero_division: float = 0.0) -> float:
    """F1 = 2TP / (2TP + FP + FN); ``zero_division`` when the denominator is 0."""
    return safe_div(2 * tp, 2 * tp + fp + fn, zero_division)


def confusion(true: np.ndarray, pred: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """(k, k) weighted confusion matrix, rows = true class, columns = predicted class."""
    flat = np.bincount(true.astype(np.int64) * k + pred.astype(np.int64), weights=weights, minlength=k * k)
    return flat.reshape(k, k)


def per_class_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """One-vs-rest recall (= per-class accuracy, as SIDA), precision and F1 per class.

    Recall is ``nan`` for a class with no samples; precision and F1 use 0 on a zero
    denominator (scikit-learn's ``zero_division=0``).
    """
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / np.where(support > 0, support, 1), np.nan)
        precision = np.where(predicted > 0, tp / np.where(predicted > 0, predicted, 1), 0.0)
    denom = 2 * tp + (predicted - tp) + (support - tp)
    f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
    return {"recall": recall, "precision": precision, "f1": f1, "support": support}
