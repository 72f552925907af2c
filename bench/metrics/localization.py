"""Pixel-level localization metrics (SID-Set Table 3): ROC-AUC, F1 and IoU of forged pixels.

Every convention that changes the numbers is a named constructor parameter (and is returned by
``convention()``):

- ``aggregation``: ``"per_image"`` (the metric per image, then the mean over images) or
  ``"global"`` (one confusion count / histogram over all pixels of all images).
- ``threshold``: a float (pixel positive iff ``p > threshold``; 0.5 by default) or ``"best"``:
  the F1-maximising threshold among the bin edges ``k / bins`` (pixel positive iff its bin
  index >= k), chosen on the ground truth (per image, or once for the whole set with
  ``global``). ``best`` is **optimistic** (an oracle threshold) and labelled so.
- ``images``: ``"tampered"`` (only images whose label is ``tampered_label``) or
  ``"tampered_and_real"`` (also images labelled ``real_label``, with an empty mask when none is
  given). Other labels (e.g. fully synthetic) are skipped and counted in ``n_skipped``.
- ``polarity``: ``"origin"`` (score ``p``), ``"reverse"`` (score ``1 - p``), ``"double"``
  (per image, the better of the two for each metric, as IMDLBenCo; ``per_image`` only) or
  ``"best_of"`` (HiFi-Net's and TruFor's evaluation: ``max(F1, F1 of the inverted binary mask)``,
  the IoU of the same choice, and ``max(AUC, 1 - AUC)``; per image, or on the pooled counts with
  ``global``). ``best_of`` is **optimistic** (the polarity is chosen on the ground truth) and
  labelled so.
- ``border_exclusion``: ``0`` (every pixel counts), an int ``K`` or a pair ``[K_in, K_out]``:
  pixels within ``K_in`` pixels inside / ``K_out`` outside the ground-truth boundary are left out
  of every metric. Kept pixels are those of ``erode(gt, (2K_in+1)²)`` (positives) and of
  ``not dilate(gt, (2K_out+1)²)`` (negatives), square structuring elements, image borders
  reflected (TruFor's ``metrics.py``: ``minimum_filter(gt, 15)`` / ``maximum_filter(gt, 11)`` =
  ``[7, 5]``).
- ``pred_resize``: ``"none"`` (a prediction must already be at the ground truth's resolution;
  the harness's detectors resize theirs bilinearly) or ``"bilinear"`` / ``"nearest"``: a
  prediction of another size is resized to the ground truth's (H, W) first, with PyTorch's
  ``interpolate`` rules (half-pixel centres, ``align_corners=False``, no antialiasing; ``nearest``
  picks source index ``floor(i * in / out)``).
- ``confidence_weighting``: ``false`` (default: every pixel counts 1) or ``true``: each pixel counts
  with weight ``c`` in [0, 1], the model's confidence map of that pixel (TruFor's; stored with the
  mask, :attr:`bench.types.Prediction.confidence`), resized and border-excluded exactly as the
  prediction. Confusion counts and AUC histograms are sums of ``c`` instead of pixel counts, so F1,
  IoU and AUC are those of the confidence-weighted pixel population: a pixel the model declares
  unreliable matters less. Not comparable with unweighted scores (and a model can raise them by
  lowering its confidence where it errs); never a default, recorded in ``convention()``. An image
  whose weights sum to 0 has no F1/IoU/AUC (left out of the means, counted in ``n_zero_confidence``).
  Needs the pixels (fed with :meth:`Localization.update`, ``confidences=``).
- ``bins``: the pixel-AUC histogram resolution (uniform bins on [0, 1]). Memory is O(bins) per
  image (kept so the bootstrap can resample images), never O(pixels).

Outcomes on degenerate masks: when the ground truth *and* the prediction have no positive pixel,
F1 = IoU = 1 (nothing to find, nothing claimed); a prediction with positives on an empty ground
truth gives 0. The AUC of an image whose ground truth is empty or all-positive is undefined:
it is left out of the per-image AUC mean and counted in ``n_auc_excluded``.

Keys: ``pixel_auc``, ``pixel_f1``, ``pixel_iou``, ``n_images``, ``n_auc_excluded``, ``n_skipped``
(and ``n_zero_confidence`` with ``confidence_weighting``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bench.errors import UserError
from bench.metrics.base import SampleMetric
from bench.types import REAL, TAMPERED

AGGREGATIONS = ("per_image", "global")
IMAGE_SETS = ("tampered", "tampered_and_real")
POLARITIES = ("origin", "reverse", "double", "best_of")
PRED_RESIZE = ("none", "bilinear", "nearest")


def border_radii(value: Any) -> tuple[int, int]:
    """``border_exclusion`` → (K_in, K_out): an int K means (K, K); a pair is kept as given."""
    pair = value if isinstance(value, (list, tuple)) else (value, value)
    if len(pair) != 2 or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in pair):
        raise UserError(
            f"localization: border_exclusion must be an integer K >= 0 or a pair [K_in, K_out], got {value!r}"
        )
    return int(pair[0]), int(pair[1])


def border_keep(gt: np.ndarray, k_in: int, k_out: int) -> np.ndarray:
    """Boolean (H, W): pixels farther than ``k_in`` (inside) / ``k_out`` (outside) from the boundary."""
    from scipy.ndimage import maximum_filter, minimum_filter

    inside = minimum_filter(gt, size=2 * k_in + 1) if k_in else gt
    outside = ~maximum_filter(gt, size=2 * k_out + 1) if k_out else ~gt
    return inside | outside


def _resize_axis(n_in: int, n_out: int, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (i0, i1) and weight of i1 for one axis, as ``torch.nn.functional.interpolate``."""
    scale = n_in / n_out
    i = np.arange(n_out, dtype=np.float64)
    if mode == "nearest":
        i0 = np.minimum(np.floor(i * scale).astype(np.int64), n_in - 1)
        return i0, i0, np.zeros(n_out)
    src = np.maximum((i + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0


def resize_prob(p: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """Resize a float (h, w) map to ``size`` = (H, W) (``bilinear`` or ``nearest``, see the module docstring)."""
    if p.shape == tuple(size):
        return p
    r0, r1, wr = _resize_axis(p.shape[0], size[0], mode)
    c0, c1, wc = _resize_axis(p.shape[1], size[1], mode)
    rows = p[r0] * (1.0 - wr)[:, None] + p[r1] * wr[:, None]
    return rows[:, c0] * (1.0 - wc)[None, :] + rows[:, c1] * wc[None, :]


def pixel_histograms(gt: np.ndarray, prob: np.ndarray, bins: int, weights: np.ndarray | None = None) -> np.ndarray:
    """(2, bins) int counts of [negative, positive] pixels per probability bin [k/B, (k+1)/B);
    with per-pixel ``weights``, float64 sums of the weights instead of counts."""
    idx = np.minimum((prob.ravel() * bins).astype(np.int64), bins - 1)
    g = gt.ravel()
    if weights is not None:
        wt = np.asarray(weights, dtype=np.float64).ravel()
        return np.stack([np.bincount(idx[~g], weights=wt[~g], minlength=bins),
                         np.bincount(idx[g], weights=wt[g], minlength=bins)])
    return np.stack([np.bincount(idx[~g], minlength=bins), np.bincount(idx[g], minlength=bins)]).astype(np.int64)


def binned_auc(hist: np.ndarray) -> float:
    """ROC-AUC from (2, bins) histograms; pixels in the same bin count as ties (half)."""
    neg, pos = hist[0].astype(np.float64), hist[1].astype(np.float64)
    n_neg, n_pos = neg.sum(), pos.sum()
    if n_neg == 0 or n_pos == 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float(np.sum(pos * (neg_below + 0.5 * neg)) / (n_pos * n_neg))


def f1_iou(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F1 and IoU with the 0/0 case (empty ground truth, empty prediction) scored 1."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    den_f1, den_iou = 2 * tp + fp + fn, tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(den_f1 > 0, 2 * tp / np.where(den_f1 > 0, den_f1, 1), 1.0)
        iou = np.where(den_iou > 0, tp / np.where(den_iou > 0, den_iou, 1), 1.0)
    return f1, iou


def best_f1_iou(hist: np.ndarray) -> tuple[float, float]:
    """The best F1 over thresholds k/bins (k = 0..bins) and the IoU at that threshold."""
    neg, pos = hist[0], hist[1]
    tp = np.r_[np.cumsum(pos[::-1])[::-1], 0]  # positives with bin >= k
    fp = np.r_[np.cumsum(neg[::-1])[::-1], 0]
    f1, iou = f1_iou(tp, fp, pos.sum() - tp)
    k = int(np.argmax(f1))
    return float(f1[k]), float(iou[k])


def stats_histograms(stats: np.ndarray, values: np.ndarray, bins: int) -> np.ndarray:
    """:func:`pixel_histograms` from a (2, L) table of pixel counts by (ground truth, level),
    level ``l`` standing for probability ``values[l]`` (same binning as for a mask of those values)."""
    idx = np.minimum((values * bins).astype(np.int64), bins - 1)
    return np.stack([np.bincount(idx, weights=stats[0], minlength=bins),
                     np.bincount(idx, weights=stats[1], minlength=bins)]).astype(np.int64)


def stats_counts(stats: np.ndarray, values: np.ndarray, threshold: float) -> np.ndarray:
    """:func:`threshold_counts` from a (2, L) table of pixel counts by (ground truth, level)."""
    pos = values > threshold
    tp, fn = int(stats[1][pos].sum()), int(stats[1][~pos].sum())
    fp, tn = int(stats[0][pos].sum()), int(stats[0][~pos].sum())
    return np.array([tp, fp, fn, tn], dtype=np.int64)


def threshold_counts(gt: np.ndarray, prob: np.ndarray, threshold: float,
                     weights: np.ndarray | None = None) -> np.ndarray:
    """[tp, fp, fn, tn] with a pixel predicted positive iff ``prob > threshold``; with per-pixel
    ``weights``, float64 sums of the weights of each cell."""
    pred = prob > threshold
    if weights is not None:
        wt = np.asarray(weights, dtype=np.float64)
        return np.array([wt[pred & gt].sum(), wt[pred & ~gt].sum(), wt[~pred & gt].sum(), wt[~pred & ~gt].sum()])
    tp = int(np.count_nonzero(pred & gt))
    fp = int(np.count_nonzero(pred & ~gt))
    fn = int(np.count_nonzero(~pred & gt))
    return np.array([tp, fp, fn, gt.size - tp - fp - fn], dtype=np.int64)


class Localization(SampleMetric):
    """Pixel ROC-AUC, F1 and IoU with explicit conventions (see the module docstring).

    ``update(gt_masks, pred_masks, labels, sample_ids=None, confidences=None)``: lists of boolean
    (H, W) ground truths (``None`` allowed for real images) and float (H, W) probabilities in
    [0, 1] of the same shape, and (N,) labels in the dataset's label space; ``confidences``: the
    float (H, W) confidence map of each prediction (its shape), needed with ``confidence_weighting``.

    ``update_stats(stats, values, labels, sample_ids=None)``: the same from per-image sufficient
    statistics of quantised masks (what the prediction store keeps): (2, L) int pixel counts by
    (ground truth 0/1, level), level ``l`` standing for probability ``values[l]``. A mask of
    those values through ``update`` gives identical rows (same binning, same comparisons).
    """

    name = "localization"
    task = "localization"

    def __init__(
        self,
        aggregation: str = "per_image",
        threshold: float | str = 0.5,
        images: str = "tampered",
        polarity: str = "origin",
        border_exclusion: int | tuple[int, int] | list[int] = 0,
        pred_resize: str = "none",
        bins: int = 1000,
        tampered_label: int = TAMPERED,
        real_label: int = REAL,
        confidence_weighting: bool = False,
    ) -> None:
        super().__init__()
        for value, allowed, what in ((aggregation, AGGREGATIONS, "aggregation"), (images, IMAGE_SETS, "images"),
                                     (polarity, POLARITIES, "polarity"), (pred_resize, PRED_RESIZE, "pred_resize")):
            if value not in allowed:
                raise UserError(f"localization: {what} must be one of {allowed}, got {value!r}")
        if threshold != "best" and (isinstance(threshold, str) or not 0.0 <= float(threshold) < 1.0):
            raise UserError(f"localization: threshold must be 'best' or a number in [0, 1), got {threshold!r}")
        if not isinstance(bins, int) or bins < 2:
            raise UserError(f"localization: bins must be an integer >= 2, got {bins!r}")
        if polarity == "double" and aggregation == "global":
            raise UserError("localization: polarity 'double' is defined per image; use aggregation 'per_image'")
        if not isinstance(confidence_weighting, bool):
            raise UserError(f"localization: confidence_weighting must be true or false, got {confidence_weighting!r}")
        self.confidence_weighting = confidence_weighting
        self.aggregation, self.images, self.polarity, self.bins = aggregation, images, polarity, bins
        self.border = border_radii(border_exclusion)
        self.pred_resize = pred_resize
        self.threshold: float | str = threshold if threshold == "best" else float(threshold)
        self.tampered_label, self.real_label = int(tampered_label), int(real_label)
        self._n_skipped = 0

    def convention(self) -> dict[str, Any]:
        if self.threshold == "best":
            where = "per image" if self.aggregation == "per_image" else "once for the whole set"
            thr: Any = f"best (optimistic: F1-maximising bin edge chosen on the ground truth, {where})"
        else:
            thr = self.threshold
        polarity = self.polarity
        if polarity == "best_of":
            polarity = ("best_of (optimistic: the better of the mask and its inverse, chosen on the ground truth: "
                        "max(F1, F1 of the inverted mask), IoU of that choice, max(AUC, 1 - AUC))")
        k_in, k_out = self.border
        border: Any = 0 if self.border == (0, 0) else (
            f"[{k_in}, {k_out}]: pixels within {k_in} px inside / {k_out} px outside the ground-truth boundary ignored")
        resize = ("none (prediction must be at the ground truth's resolution)" if self.pred_resize == "none" else
                  f"{self.pred_resize} (torch interpolate rules, align_corners=False) to the ground truth's size")
        out: dict[str, Any] = {
            "aggregation": self.aggregation, "threshold": thr, "positive_if": "p > threshold",
            "images": self.images, "polarity": polarity, "border_exclusion": border, "pred_resize": resize,
            "auc": f"binned, {self.bins} bins",
            "tampered_label": self.tampered_label, "real_label": self.real_label,
            "empty_gt_and_pred": "F1 = IoU = 1", "auc_single_class_image": "excluded"}
        if self.confidence_weighting:  # only when on: unweighted results keep their conventions
            out["confidence_weighting"] = (
                "each pixel weighs its stored confidence c in [0, 1] (8-bit, c/255), resized and border-excluded "
                "as the prediction; counts and AUC histograms are sums of c; an image whose weights sum to 0 is "
                "left out (n_zero_confidence); not comparable with unweighted scores")
        return out

    def _row_spec(self) -> dict[str, tuple[tuple[int, ...], Any]]:
        if self.aggregation == "per_image":
            return {"auc": ((), np.float64), "f1": ((), np.float64), "iou": ((), np.float64)}
        if self.confidence_weighting:
            return {"counts": ((4,), np.float64), "hist": ((2, self.bins), np.float64)}
        return {"counts": ((4,), np.int64), "hist": ((2, self.bins), np.int32)}

    @property
    def needs_pixels(self) -> bool:
        """True when a convention (border exclusion, prediction resizing, confidence weighting)
        needs the masks' pixels: such a metric is fed with :meth:`update`, never with
        :meth:`update_stats`."""
        return self.border != (0, 0) or self.pred_resize != "none" or self.confidence_weighting

    def _merge_extra(self, other: SampleMetric) -> None:
        self._n_skipped += getattr(other, "_n_skipped", 0)

    def update(self, gt_masks: Any, pred_masks: Any, labels: Any, sample_ids: Any = None,
               confidences: Any = None) -> None:
        labels = np.asarray(labels).ravel()
        if not len(gt_masks) == len(pred_masks) == len(labels):
            raise UserError(
                f"localization: got {len(gt_masks)} masks, {len(pred_masks)} predictions, {len(labels)} labels"
            )
        if self.confidence_weighting and (confidences is None or len(confidences) != len(labels)):
            raise UserError("localization: confidence_weighting needs one confidence map per prediction "
                            f"(got {'none' if confidences is None else len(confidences)} for {len(labels)})")
        ids = None if sample_ids is None else list(sample_ids)
        counted = {"tampered": (self.tampered_label,), "tampered_and_real": (self.tampered_label, self.real_label)}
        rows: list[dict[str, np.ndarray]] = []
        kept_ids: list[str] = []
        for i, (gt, pred, label) in enumerate(zip(gt_masks, pred_masks, labels)):
            if int(label) not in counted[self.images]:
                self._n_skipped += 1
                continue
            conf = confidences[i] if self.confidence_weighting else None
            rows.append(self._image_row(i, gt, pred, int(label), conf))
            if ids is not None:
                kept_ids.append(ids[i])
        if rows:
            batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
            self._append(batch, kept_ids if ids is not None else None)

    def update_stats(self, stats: Any, values: Any, labels: Any, sample_ids: Any = None) -> None:
        labels = np.asarray(labels).ravel()
        v = np.asarray(values, dtype=np.float64)
        if len(stats) != len(labels):
            raise UserError(f"localization: got {len(stats)} mask statistics for {len(labels)} labels")
        if self.needs_pixels:
            raise UserError("localization: border_exclusion, pred_resize and confidence_weighting need the pixel "
                            "masks, not the per-image statistics (score from a store with store_masks: full)")
        ids = None if sample_ids is None else list(sample_ids)
        counted = {"tampered": (self.tampered_label,), "tampered_and_real": (self.tampered_label, self.real_label)}
        rows: list[dict[str, np.ndarray]] = []
        kept_ids: list[str] = []
        for i, (st, label) in enumerate(zip(stats, labels)):
            if int(label) not in counted[self.images]:
                self._n_skipped += 1
                continue
            h = np.asarray(st, dtype=np.int64)
            if h.shape != (2, len(v)):
                raise UserError(f"localization: image {i}: statistics of shape {h.shape}, expected (2, {len(v)})")
            rows.append(self._row_from(lambda q, h=h: stats_histograms(h, q, self.bins),
                                       lambda q, t, h=h: stats_counts(h, q, t), v))
            if ids is not None:
                kept_ids.append(ids[i])
        if rows:
            batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
            self._append(batch, kept_ids if ids is not None else None)

    def _image_row(self, i: int, gt: Any, pred: Any, label: int, conf: Any = None) -> dict[str, np.ndarray]:
        if pred is None:
            raise UserError(f"localization: image {i} has no predicted mask")
        p = np.asarray(pred, dtype=np.float64)
        c = None
        if self.confidence_weighting:
            c = None if conf is None else np.asarray(conf, dtype=np.float64)
            if c is None or c.shape != p.shape:
                raise UserError(f"localization: image {i}: confidence_weighting needs a confidence map of the "
                                f"prediction's shape {p.shape}, got {None if c is None else c.shape}")
            if not np.all(np.isfinite(c)) or c.size and (c.min() < 0 or c.max() > 1):
                raise UserError(f"localization: image {i}: the confidence map must be finite values in [0, 1]")
        if gt is None:
            if label != self.real_label:
                raise UserError(f"localization: tampered image {i} has no ground-truth mask")
            gt = np.zeros(p.shape, dtype=bool)
        g = np.asarray(gt).astype(bool)
        if self.pred_resize != "none" and g.ndim == 2 and p.ndim == 2 and min(p.shape) > 0:
            p = resize_prob(p, g.shape, self.pred_resize)
            c = resize_prob(c, g.shape, self.pred_resize) if c is not None else None
        if g.shape != p.shape or g.ndim != 2:
            raise UserError(f"localization: image {i}: mask shape {g.shape} != prediction shape {p.shape} (H, W); "
                            "set the metric parameter pred_resize: bilinear or nearest to resize predictions")
        if not np.all(np.isfinite(p)) or p.size and (p.min() < 0 or p.max() > 1):
            raise UserError(f"localization: image {i}: predicted mask must be finite probabilities in [0, 1]")
        if self.border != (0, 0):
            keep = border_keep(g, *self.border)
            g, p = g[keep], p[keep]
            c = c[keep] if c is not None else None
        row = self._row_from(lambda q: pixel_histograms(g, q, self.bins, c),
                             lambda q, t: threshold_counts(g, q, t, c), p)
        if c is not None and not c.sum() and self.aggregation == "per_image":
            row = {k: np.float64(np.nan) for k in row}  # no weight: nothing to score (n_zero_confidence)
        return row

    def _row_from(self, hist_of: Callable[[np.ndarray], np.ndarray],
                  counts_of: Callable[[np.ndarray, float], np.ndarray], p: np.ndarray) -> dict[str, np.ndarray]:
        """One image's row from its scores ``p`` (pixels, or quantisation levels):
        ``hist_of(p)`` → (2, bins) histograms, ``counts_of(p, t)`` → [tp, fp, fn, tn] at ``t``."""
        if self.polarity == "reverse":
            p = 1.0 - p
        if self.aggregation == "global":
            dtype = np.float64 if self.confidence_weighting else np.int32
            return {"counts": counts_of(p, float(self.threshold)) if self.threshold != "best"
                    else np.zeros(4, np.int64), "hist": hist_of(p).astype(dtype)}
        scores = [self._image_scores(hist_of, counts_of, p)]
        if self.polarity == "double":
            scores.append(self._image_scores(hist_of, counts_of, 1.0 - p))
        best = np.fmax.reduce(np.array(scores), axis=0)
        return {"auc": best[0], "f1": best[1], "iou": best[2]}

    def _image_scores(self, hist_of: Callable[[np.ndarray], np.ndarray],
                      counts_of: Callable[[np.ndarray, float], np.ndarray], p: np.ndarray) -> np.ndarray:
        counts = None if self.threshold == "best" else counts_of(p, float(self.threshold))
        return np.array(self._scores(hist_of(p), counts))

    def _scores(self, hist: np.ndarray, counts: np.ndarray | None) -> tuple[float, float, float]:
        """(AUC, F1, IoU) from a (2, bins) histogram and, at a fixed threshold, [tp, fp, fn, tn]."""
        auc = binned_auc(hist)
        if counts is None:
            f1, iou = best_f1_iou(hist)
            if self.polarity == "best_of":  # bins <= k predicted positive: the inverse of each bin >= k + 1 mask
                f1_i, iou_i = best_f1_iou(hist[:, ::-1])
                f1, iou = (f1_i, iou_i) if f1_i > f1 else (f1, iou)
        else:
            tp, fp, fn, tn = counts
            f1_a, iou_a = f1_iou(tp, fp, fn)
            f1, iou = float(f1_a), float(iou_a)
            if self.polarity == "best_of":  # inverted mask: tp' = fn, fp' = tn, fn' = tp
                f1_i, iou_i = (float(v) for v in f1_iou(fn, tn, tp))
                f1, iou = (f1_i, iou_i) if f1_i > f1 else (f1, iou)
        if self.polarity == "best_of" and np.isfinite(auc):
            auc = max(auc, 1.0 - auc)
        return auc, f1, iou

    def _prepare(self, table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "hist" not in table:
            return table
        # float64 sums of integer counts are exact (< 2**53) and use BLAS in the bootstrap
        return {**table, "hist": table["hist"].reshape(len(table["hist"]), -1).astype(np.float64)}

    def _compute(self, table: dict[str, np.ndarray], w: np.ndarray) -> dict[str, float]:
        return self._compute_block(table, w[None, :])[0]

    def _compute_block(self, table: dict[str, np.ndarray], weights: np.ndarray) -> list[dict[str, float]]:
        if self.aggregation == "per_image":
            return [self._per_image(table, w) for w in weights]
        hists = (weights.astype(np.float64) @ table["hist"]).reshape(len(weights), 2, self.bins)
        counts = weights @ table["counts"]
        out = [self._global(h, c, float(w.sum())) for h, c, w in zip(hists, counts, weights)]
        if self.confidence_weighting:
            empty = table["hist"].sum(axis=1) == 0
            for o, h, w in zip(out, hists, weights):
                o["n_zero_confidence"] = float(w[empty].sum())
                if not h.sum():
                    o.update(pixel_auc=float("nan"), pixel_f1=float("nan"), pixel_iou=float("nan"))
        return out

    def _per_image(self, table: dict[str, np.ndarray], w: np.ndarray) -> dict[str, float]:
        n = float(w.sum())
        nan = float("nan")
        auc_ok = np.isfinite(table["auc"]) & (w > 0)
        w_auc = w[auc_ok]
        scored = np.isfinite(table["f1"])  # always, unless confidence_weighting left an image out
        w_f1 = w * scored
        out = {
            "pixel_auc": float(np.average(table["auc"][auc_ok], weights=w_auc)) if w_auc.sum() else nan,
            "pixel_f1": float(np.average(table["f1"][scored], weights=w_f1[scored])) if w_f1.sum() else nan,
            "pixel_iou": float(np.average(table["iou"][scored], weights=w_f1[scored])) if w_f1.sum() else nan,
            "n_auc_excluded": float(w[~np.isfinite(table["auc"]) & scored].sum()),
            "n_images": n,
            "n_skipped": float(self._n_skipped),
        }
        if self.confidence_weighting:
            out["n_zero_confidence"] = float(w[~scored].sum())
        return out

    def _global(self, hist: np.ndarray, counts: np.ndarray, n: float) -> dict[str, float]:
        nan = float("nan")
        auc, f1, iou = self._scores(hist, None if self.threshold == "best" else counts)
        if not n:
            f1, iou = nan, nan
        return {"pixel_auc": auc, "pixel_f1": f1, "pixel_iou": iou, "n_auc_excluded": 0.0,
                "n_images": n, "n_skipped": float(self._n_skipped)}
