"""Image-level detection metrics: SID-Set's ternary Table 2 and DMImage's binary Table 5.

Values are fractions in [0, 1] (tables multiply by 100). Label orders: ternary 0 real,
1 full_synthetic, 2 tampered; binary 0 real, 1 fake.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.adapters import BinaryOnTernary
from bench.errors import UserError
from bench.metrics.base import SampleMetric
from bench.metrics.functional import (
    average_precision,
    binary_curve,
    confusion,
    equal_error_rate,
    f1_from_counts,
    per_class_from_confusion,
    roc_auc,
    safe_div,
    tpr_at_fpr,
)
from bench.types import LABEL_NAMES, LabelSpace

TERNARY_NAMES = LABEL_NAMES[LabelSpace.TERNARY]


def check_labels(name: str, labels: Any, num_classes: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) and y.size:
        raise UserError(f"{name}: expected labels as a 1-D integer array, got {y.dtype} {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise UserError(f"{name}: labels must lie in 0..{num_classes - 1}, got values {sorted(set(y.tolist()))}")
    return y.astype(np.int8)


def check_probs(name: str, probs: Any, n: int, widths: Sequence[int]) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.shape[:1] != (n,) or (p.ndim == 2 and p.shape[1] not in widths) or p.ndim not in (1, 2):
        raise UserError(f"{name}: expected probs of shape ({n},) or ({n}, {'|'.join(map(str, widths))}), got {p.shape}")
    if not np.all(np.isfinite(p)) or p.size and (p.min() < 0 or p.max() > 1):
        raise UserError(f"{name}: probabilities must be finite and in [0, 1]")
    return p


def fake_score(name: str, probs: np.ndarray) -> np.ndarray:
    """P(fake): column 1 of (N, 2) probabilities, or the (N,) vector itself."""
    if probs.ndim == 2 and probs.shape[1] != 2:
        raise UserError(f"{name}: binary probabilities need 2 columns [real, fake], got {probs.shape[1]}")
    return probs[:, 1] if probs.ndim == 2 else probs


class TernaryDetection(SampleMetric):
    """SID-Set Table 2: per-class accuracy (= recall, as SIDA's ``test.py``) and one-vs-rest F1.

    ``mode="ternary"``: ``update(labels (N,), probs (N, 3))``; the prediction is the argmax
    (first index on ties). Keys: ``acc_<class>``, ``precision_<class>``, ``f1_<class>`` for
    real / full_synthetic / tampered, ``accuracy`` (overall), ``macro_f1`` (unweighted mean of the
    three F1), ``weighted_f1`` (support-weighted), counts ``n``, ``n_<class>`` and the confusion
    matrix as ``cm_<true>_as_<pred>`` (also :meth:`confusion_matrix`).

    ``mode="binary_on_ternary"``: a binary detector on ternary data, ``probs`` (N, 2) or (N,)
    P(fake), rule :class:`bench.adapters.BinaryOnTernary` (real correct iff predicted real,
    synthetic/tampered correct iff predicted fake, fake iff ``p_fake >= threshold``). Keys:
    ``acc_<class>``, ``accuracy``, ``f1_real_binary`` / ``f1_fake_binary`` (real vs fake F1),
    counts. No per-ternary-class F1: no documented rule defines it for a binary detector.
    """

    name = "ternary_detection"
    task = "detection"
    MODES = ("ternary", "binary_on_ternary")

    def __init__(self, mode: str = "ternary", threshold: float = 0.5) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise UserError(f"ternary_detection: mode must be one of {self.MODES}, got {mode!r}")
        if not 0.0 <= float(threshold) <= 1.0:
            raise UserError(f"ternary_detection: threshold must be in [0, 1], got {threshold!r}")
        self.mode = mode
        self.threshold = float(threshold)

    def convention(self) -> dict[str, Any]:
        if self.mode == "ternary":
            return {"mode": "ternary", "prediction": "argmax", "class_accuracy": "recall", "f1": "one-vs-rest"}
        return {"mode": "binary_on_ternary", "threshold": self.threshold, "fake_if": "p_fake >= threshold",
                "rule": "real correct iff predicted real; full_synthetic/tampered correct iff predicted fake"}

    def _row_spec(self) -> dict[str, tuple[tuple[int, ...], Any]]:
        return {"label": ((), np.int8), "pred": ((), np.int8)}

    def update(self, labels: Any, probs: Any, groups: Any = None, sample_ids: Any = None) -> None:
        """Add a batch. ``groups`` is accepted for a uniform call and ignored."""
        y = check_labels(self.name, labels, 3)
        if self.mode == "ternary":
            p = check_probs(self.name, probs, len(y), (3,))
            if p.ndim != 2:
                raise UserError(f"{self.name}: mode 'ternary' needs (N, 3) probabilities, got {p.shape}")
            pred = np.argmax(p, axis=1)
        else:
            p = check_probs(self.name, probs, len(y), (2,))
            p_fake = fake_score(self.name, p)
            pred = BinaryOnTernary(self.threshold).predicted_fake(np.c_[1 - p_fake, p_fake])
        self._append({"label": y, "pred": pred.astype(np.int8)}, sample_ids)

    def confusion_matrix(self) -> np.ndarray:
        """Rows = true ternary class; columns = predicted class (3 columns, or 2 = real/fake)."""
        t = self.table()
        cm = confusion(t["label"], t["pred"], np.ones(len(t["label"])), 3).astype(np.int64)
        return cm if self.mode == "ternary" else cm[:, :2]

    def _compute(self, table: dict[str, np.ndarray], w: np.ndarray) -> dict[str, float]:
        cm = confusion(table["label"], table["pred"], w, 3)
        if self.mode == "binary_on_ternary":
            return self._binary_on_ternary(cm)
        stats = per_class_from_confusion(cm)
        total = cm.sum()
        out: dict[str, float] = {}
        for i, c in enumerate(TERNARY_NAMES):
            out[f"acc_{c}"] = float(stats["recall"][i])
            out[f"precision_{c}"] = float(stats["precision"][i])
            out[f"f1_{c}"] = float(stats["f1"][i])
        out["accuracy"] = safe_div(np.trace(cm), total)
        out["macro_f1"] = float(np.mean(stats["f1"]))
        out["weighted_f1"] = safe_div(float(np.sum(stats["f1"] * stats["support"])), total)
        out["n"] = float(total)
        out.update({f"n_{c}": float(stats["support"][i]) for i, c in enumerate(TERNARY_NAMES)})
        out.update({f"cm_{t}_as_{p}": float(cm[i, j]) for i, t in enumerate(TERNARY_NAMES)
                    for j, p in enumerate(TERNARY_NAMES)})
        return out

    @staticmethod
    def _binary_on_ternary(cm: np.ndarray) -> dict[str, float]:
        # columns 0 = predicted real, 1 = predicted fake
        correct = np.array([cm[0, 0], cm[1, 1], cm[2, 1]])
        support = cm.sum(axis=1)
        out = {f"acc_{c}": safe_div(correct[i], support[i]) for i, c in enumerate(TERNARY_NAMES)}
        out["accuracy"] = safe_div(correct.sum(), support.sum())
        tp, fn = cm[1:, 1].sum(), cm[1:, 0].sum()  # fake as positive
        tn, fp = cm[0, 0], cm[0, 1]
        out["f1_real_binary"] = f1_from_counts(tn, fn, fp)
        out["f1_fake_binary"] = f1_from_counts(tp, fp, fn)
        out["n"] = float(support.sum())
        out.update({f"n_{c}": float(support[i]) for i, c in enumerate(TERNARY_NAMES)})
        return out


class BinaryDetection(SampleMetric):
    """DMImage Table 5: real-vs-fake metrics, overall and per generator group.

    ``update(labels (N,) in {0 real, 1 fake}, probs (N, 2) [real, fake] or (N,) P(fake),
    groups=None | sequence of N generator names, sample_ids=None)``.
    Keys: ``accuracy`` (fake iff ``p_fake >= threshold``), ``balanced_accuracy``, ``acc_real``
    (TNR), ``acc_fake`` (TPR), ``f1_real``, ``f1_fake``, ``auc`` (exact ROC-AUC), ``ap``
    (average precision, fake = positive), ``eer``, ``tpr_at_fpr_<x>pct`` for each target, ``n``,
    ``n_real``, ``n_fake``; and for every group ``g`` of fake images, scored against **all** real
    images (as DMImage's scripts): ``g/auc``, ``g/ap``, ``g/accuracy``, ``g/balanced_accuracy``,
    ``g/acc_fake``, ``g/n_fake``. State: one score per image.
    """

    name = "binary_detection"
    task = "detection"

    def __init__(
        self, threshold: float = 0.5, fpr_targets: Sequence[float] = (0.01, 0.05), per_group: bool = True
    ) -> None:
        super().__init__()
        if not 0.0 <= float(threshold) <= 1.0:
            raise UserError(f"binary_detection: threshold must be in [0, 1], got {threshold!r}")
        if not all(0.0 < float(f) < 1.0 for f in fpr_targets):
            raise UserError(f"binary_detection: fpr_targets must lie in (0, 1), got {list(fpr_targets)!r}")
        self.threshold = float(threshold)
        self.fpr_targets = tuple(float(f) for f in fpr_targets)
        self.per_group = bool(per_group)

    def convention(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "fake_if": "p_fake >= threshold", "auc": "exact",
                "ap": "sklearn (step, no interpolation)", "eer": "linear interpolation on ROC",
                "tpr_at_fpr": "max TPR at FPR <= target", "fpr_targets": list(self.fpr_targets),
                "groups": "each fake group vs all reals" if self.per_group else "off"}

    def _row_spec(self) -> dict[str, tuple[tuple[int, ...], Any]]:
        return {"label": ((), np.int8), "score": ((), np.float64), "group": ((), object)}

    def update(self, labels: Any, probs: Any, groups: Any = None, sample_ids: Any = None) -> None:
        y = check_labels(self.name, labels, 2)
        score = fake_score(self.name, check_probs(self.name, probs, len(y), (2,)))
        g = np.full(len(y), None, dtype=object) if groups is None else np.asarray(list(groups), dtype=object)
        if g.shape != (len(y),):
            raise UserError(f"{self.name}: got {len(g)} groups for {len(y)} samples")
        self._append({"label": y, "score": score, "group": g}, sample_ids)

    def _compute(self, table: dict[str, np.ndarray], w: np.ndarray) -> dict[str, float]:
        y, s = table["label"], table["score"]
        out = self._scores(y, s, w)
        if self.per_group:
            fake_groups = table["group"][(y == 1) & np.not_equal(table["group"], None)]
            for g in sorted(set(fake_groups.tolist()), key=str):
                keep = (y == 0) | (table["group"] == g)
                sub = self._scores(y, s, np.where(keep, w, 0))
                for k in ("auc", "ap", "accuracy", "balanced_accuracy", "acc_fake", "n_fake"):
                    out[f"{g}/{k}"] = sub[k]
        return out

    def _scores(self, y: np.ndarray, s: np.ndarray, w: np.ndarray) -> dict[str, float]:
        pred = (s >= self.threshold).astype(np.int8)
        cm = confusion(y, pred, w, 2)
        tn, fp, fn, tp = cm.ravel()
        acc_real, acc_fake = safe_div(tn, tn + fp), safe_div(tp, tp + fn)
        curve = binary_curve(y, s, w)
        out = {
            "accuracy": safe_div(tn + tp, cm.sum()),
            "balanced_accuracy": float(np.nanmean([acc_real, acc_fake])) if cm.sum() else float("nan"),
            "acc_real": acc_real,
            "acc_fake": acc_fake,
            "f1_real": f1_from_counts(tn, fn, fp),
            "f1_fake": f1_from_counts(tp, fp, fn),
            "auc": roc_auc(curve),
            "ap": average_precision(curve),
            "eer": equal_error_rate(curve),
        }
        for f in self.fpr_targets:
            out[f"tpr_at_fpr_{f * 100:g}pct"] = tpr_at_fpr(curve, f)
        out.update({"n": float(cm.sum()), "n_real": float(tn + fp), "n_fake": float(tp + fn)})
        return out
