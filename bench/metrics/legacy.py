"""SIDA's own evaluation numbers (``test.py`` ``test()``), reproduced and labelled *legacy*.

They are kept so that the paper's printed values can be matched, not as recommended metrics:

- ``legacy_accuracy``: ternary argmax accuracy over all images.
- ``legacy_ciou``: cIoU = sum of intersections / (sum of unions + 1e-10) over the ground-truth
  tampered images (global over their pixels). ``legacy_pixel_accuracy`` is the same quantity
  (the official code prints it twice under two names).
- ``legacy_giou``: gIoU = mean over tampered images of I / (U + 1e-5), an empty union counting 1.
- ``legacy_f1``: the printed "F1 Score" = 2·cIoU·acc / (cIoU + acc + 1e-10): a harmonic mean of
  cIoU and *classification* accuracy, not a pixel or class F1.
- ``legacy_auc_approx``: the printed "Approximate AUC" = mean over the 3 classes of one-vs-rest
  precision × mean of recall (0 on a zero denominator): not a ROC-AUC.

Binarisation as the official code: ground truth boolean, prediction ``p > 0.5`` (logit > 0).
Masks are scored for every ground-truth tampered image whatever the predicted class. Samples the
official code cannot meet (its loader only lists tampered images that have a mask) follow recorded
rules, never an abort: a tampered image without a ground-truth mask, or whose predicted mask has
another shape, is left out of cIoU/gIoU (still counted in accuracy) and counted in
``n_tampered_without_gt_mask`` / ``n_tampered_mask_shape_mismatch``; a tampered image without a
predicted mask (the model predicted another class) counts as an all-empty prediction and is counted
in ``n_tampered_without_pred_mask``. The
official code scores at the resized resolution (long side 1024); here masks are scored at the
resolution they are given in. Values are fractions (the official code prints accuracy in %).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.errors import UserError
from bench.metrics.base import SampleMetric
from bench.metrics.detection import check_labels, check_probs
from bench.metrics.functional import confusion
from bench.types import TAMPERED

MASK_NOT_TAMPERED, MASK_SCORED, MASK_NO_PRED, MASK_NO_GT, MASK_SHAPE_MISMATCH = 0, 1, 2, 3, 4
"""Per-row mask status: not a tampered image; scored; scored as an empty prediction; left out (no
ground-truth mask); left out (prediction and ground truth differ in shape)."""


class SidaLegacy(SampleMetric):
    """``update(labels (N,), probs (N, 3), gt_masks, pred_masks, sample_ids=None)``.

    ``gt_masks`` / ``pred_masks``: length-N lists, read only for images labelled tampered (2);
    entries of other images may be ``None`` (for tampered ones too: see the module's rules).
    ``task = "detection+localization"``: it needs both the class probabilities and the masks.
    Keys: ``legacy_accuracy``, ``legacy_ciou``, ``legacy_giou``, ``legacy_pixel_accuracy``,
    ``legacy_f1``, ``legacy_auc_approx``, ``n``, ``n_tampered`` (tampered images whose masks were
    scored), ``n_tampered_without_gt_mask``, ``n_tampered_mask_shape_mismatch``,
    ``n_tampered_without_pred_mask``.
    """

    name = "sida_legacy"
    task = "detection+localization"
    MASK_THRESHOLD = 0.5

    def convention(self) -> dict[str, Any]:
        return {"legacy": "SIDA test.py", "mask_positive_if": "p > 0.5", "masks_scored": "ground-truth tampered",
                "giou_eps": 1e-5, "ciou_eps": 1e-10, "f1": "harmonic mean of cIoU and accuracy",
                "auc_approx": "mean precision x mean recall",
                "tampered_without_gt_mask": "left out of cIoU/gIoU, counted",
                "tampered_mask_shape_mismatch": "left out of cIoU/gIoU, counted",
                "missing_pred_mask": "empty prediction (no forged pixels), counted"}

    def _row_spec(self) -> dict[str, tuple[tuple[int, ...], Any]]:
        return {"label": ((), np.int8), "pred": ((), np.int8), "inter": ((), np.float64), "union": ((), np.float64),
                "mask": ((), np.int8)}

    def update(
        self, labels: Any, probs: Any, gt_masks: Any = None, pred_masks: Any = None, groups: Any = None,
        sample_ids: Any = None,
    ) -> None:
        """Add a batch; ``groups`` is accepted for a uniform detection call and ignored."""
        y = check_labels(self.name, labels, 3)
        p = check_probs(self.name, probs, len(y), (3,))
        if p.ndim != 2:
            raise UserError(f"{self.name}: needs (N, 3) probabilities, got {p.shape}")
        inter = np.zeros(len(y))
        union = np.zeros(len(y))
        status = np.full(len(y), MASK_NOT_TAMPERED, dtype=np.int8)
        for i in np.flatnonzero(y == TAMPERED):
            gt = None if gt_masks is None else gt_masks[i]
            pm = None if pred_masks is None else pred_masks[i]
            if gt is None:
                status[i] = MASK_NO_GT
                continue
            g = np.asarray(gt).astype(bool)
            if pm is None:
                pb, status[i] = np.zeros(g.shape, dtype=bool), MASK_NO_PRED
            else:
                pb, status[i] = np.asarray(pm, dtype=np.float64) > self.MASK_THRESHOLD, MASK_SCORED
            if g.shape != pb.shape:
                status[i] = MASK_SHAPE_MISMATCH
                continue
            inter[i] = np.count_nonzero(g & pb)
            union[i] = np.count_nonzero(g | pb)
        self._append({"label": y, "pred": np.argmax(p, axis=1).astype(np.int8), "inter": inter, "union": union,
                      "mask": status}, sample_ids)

    def update_stats(self, labels: Any, probs: Any, stats: Any, values: Any, sample_ids: Any = None,
                     has_gt: Any = None, has_pred: Any = None) -> None:
        """``update`` from per-image (2, L) pixel counts by (ground truth, level), level ``l``
        standing for probability ``values[l]`` (see :meth:`Localization.update_stats`).

        ``has_gt`` / ``has_pred``: (N,) bool, which rows have a ground-truth / a predicted mask
        (default: every row has both). A row without a predicted mask counts every pixel at level 0
        (the store's rule: an empty prediction); ``stats[i] = None`` on a tampered row with a ground
        truth means the two masks differ in shape. The module's rules apply as in :meth:`update`.
        """
        y = check_labels(self.name, labels, 3)
        p = check_probs(self.name, probs, len(y), (3,))
        if p.ndim != 2:
            raise UserError(f"{self.name}: needs (N, 3) probabilities, got {p.shape}")
        if len(stats) != len(y):
            raise UserError(f"{self.name}: got {len(stats)} mask statistics for {len(y)} labels")
        gt_in = np.ones(len(y), bool) if has_gt is None else np.asarray(has_gt, dtype=bool)
        pred_in = np.ones(len(y), bool) if has_pred is None else np.asarray(has_pred, dtype=bool)
        positive = np.asarray(values, dtype=np.float64) > self.MASK_THRESHOLD
        inter, union = np.zeros(len(y)), np.zeros(len(y))
        status = np.full(len(y), MASK_NOT_TAMPERED, dtype=np.int8)
        for i in np.flatnonzero(y == TAMPERED):
            if not gt_in[i]:
                status[i] = MASK_NO_GT
                continue
            if stats[i] is None:
                status[i] = MASK_SHAPE_MISMATCH
                continue
            status[i] = MASK_SCORED if pred_in[i] else MASK_NO_PRED
            h = np.asarray(stats[i], dtype=np.int64)
            inter[i] = h[1][positive].sum()
            union[i] = h[1].sum() + h[0][positive].sum()
        self._append({"label": y, "pred": np.argmax(p, axis=1).astype(np.int8), "inter": inter, "union": union,
                      "mask": status}, sample_ids)

    def _compute(self, table: dict[str, np.ndarray], w: np.ndarray) -> dict[str, float]:
        nan = float("nan")
        cm = confusion(table["label"], table["pred"], w, 3)
        total = cm.sum()
        acc = float(np.trace(cm) / total) if total else nan
        status = table["mask"]
        tamp = np.isin(status, (MASK_SCORED, MASK_NO_PRED)) & (w > 0)
        wt, inter, union = w[tamp], table["inter"][tamp], table["union"][tamp]
        n_t = float(wt.sum())
        ciou = float(np.sum(wt * inter) / (np.sum(wt * union) + 1e-10)) if n_t else nan
        per_image = inter / (union + 1e-5) + (union == 0)
        giou = float(np.sum(wt * per_image) / n_t) if n_t else nan
        f1 = nan if not n_t else (2 * ciou * acc / (ciou + acc + 1e-10) if (ciou + acc) > 0 else 0.0)
        tp = np.diag(cm)
        predicted, support = cm.sum(axis=0), cm.sum(axis=1)
        precision = np.divide(tp, predicted, out=np.zeros(3), where=predicted > 0)
        recall = np.divide(tp, support, out=np.zeros(3), where=support > 0)
        return {"legacy_accuracy": acc, "legacy_ciou": ciou, "legacy_giou": giou, "legacy_pixel_accuracy": ciou,
                "legacy_f1": float(f1), "legacy_auc_approx": float(precision.mean() * recall.mean()),
                "n": float(total), "n_tampered": n_t,
                "n_tampered_without_gt_mask": float(w[status == MASK_NO_GT].sum()),
                "n_tampered_mask_shape_mismatch": float(w[status == MASK_SHAPE_MISMATCH].sum()),
                "n_tampered_without_pred_mask": float(w[status == MASK_NO_PRED].sum())}
