"""Pixel localization metrics against scikit-learn and hand-computed cases; SIDA legacy metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score, roc_auc_score

from bench.errors import UserError
from bench.plugins import create_metric

TAMPERED, REAL, SYNTH = 2, 0, 1


def masks(n: int, seed: int, size: tuple[int, int] = (24, 32)) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Random rectangles and noisy probabilities correlated with them."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for _ in range(n):
        h, w = size
        gt = np.zeros(size, dtype=bool)
        t, l = rng.integers(0, h // 2), rng.integers(0, w // 2)
        gt[t : t + rng.integers(2, h // 2), l : l + rng.integers(2, w // 2)] = True
        pred = np.clip(0.35 * gt + 0.65 * rng.random(size), 0, 1)
        preds.append(pred.astype(np.float32))
        gts.append(gt)
    return gts, preds


def test_per_image_fixed_threshold_matches_sklearn() -> None:
    gts, preds = masks(6, 0)
    m = create_metric("localization")
    m.update(gts, preds, [TAMPERED] * 6)
    r = m.compute()
    f1 = [f1_score(g.ravel(), p.ravel() > 0.5) for g, p in zip(gts, preds)]
    iou = [jaccard_score(g.ravel(), p.ravel() > 0.5) for g, p in zip(gts, preds)]
    auc = [roc_auc_score(g.ravel(), p.ravel()) for g, p in zip(gts, preds)]
    assert r["pixel_f1"] == pytest.approx(np.mean(f1))
    assert r["pixel_iou"] == pytest.approx(np.mean(iou))
    assert r["pixel_auc"] == pytest.approx(np.mean(auc), abs=2e-3)  # binned (1000 bins) vs exact
    assert r["n_images"] == 6 and r["n_auc_excluded"] == 0


def test_global_matches_sklearn_on_all_pixels() -> None:
    gts, preds = masks(5, 1)
    g = np.concatenate([x.ravel() for x in gts])
    p = np.concatenate([x.ravel() for x in preds])
    m = create_metric("localization", aggregation="global", bins=4096)
    m.update(gts, preds, [TAMPERED] * 5)
    r = m.compute()
    assert r["pixel_f1"] == pytest.approx(f1_score(g, p > 0.5))
    assert r["pixel_iou"] == pytest.approx(jaccard_score(g, p > 0.5))
    assert r["pixel_auc"] == pytest.approx(roc_auc_score(g, p), abs=5e-4)


def test_binned_auc_is_exact_when_scores_fall_in_distinct_bins_with_ties() -> None:
    gt = np.array([[True, True, False, False, True, False]])
    pred = np.array([[0.95, 0.55, 0.55, 0.15, 0.35, 0.95]])  # ties at 0.55 and 0.95
    m = create_metric("localization", bins=10)
    m.update([gt], [pred], [TAMPERED])
    assert m.compute()["pixel_auc"] == pytest.approx(roc_auc_score(gt.ravel(), pred.ravel()))


def test_best_threshold_is_the_brute_force_optimum_and_not_below_fixed() -> None:
    gts, preds = masks(4, 2)
    bins = 20
    m = create_metric("localization", threshold="best", bins=bins)
    m.update(gts, preds, [TAMPERED] * 4)
    best = []
    for g, p in zip(gts, preds):
        idx = np.minimum((p * bins).astype(int), bins - 1)
        best.append(max(f1_score(g.ravel(), (idx >= k).ravel(), zero_division=1.0) for k in range(bins + 1)))
    r = m.compute()
    assert r["pixel_f1"] == pytest.approx(np.mean(best))
    fixed = create_metric("localization", bins=bins)
    fixed.update(gts, preds, [TAMPERED] * 4)
    assert r["pixel_f1"] >= fixed.compute()["pixel_f1"]
    assert "optimistic" in m.convention()["threshold"]


def test_empty_and_all_positive_masks() -> None:
    empty = np.zeros((4, 4), dtype=bool)
    full = np.ones((4, 4), dtype=bool)
    quiet = np.full((4, 4), 0.1)
    loud = np.full((4, 4), 0.9)
    m = create_metric("localization", images="tampered_and_real")
    # real with a clean prediction (1), real with a false alarm (0), real without a mask (1),
    # tampered with an all-positive mask found by half the pixels (F1 = 2/3, IoU = 1/2)
    half = np.where(np.arange(16).reshape(4, 4) < 8, 0.9, 0.1)
    m.update([empty, empty, None, full], [quiet, loud, quiet, half], [REAL, REAL, REAL, TAMPERED])
    r = m.compute()
    assert r["pixel_f1"] == pytest.approx((1 + 0 + 1 + 2 / 3) / 4)
    assert r["pixel_iou"] == pytest.approx((1 + 0 + 1 + 1 / 2) / 4)
    assert math.isnan(r["pixel_auc"]) and r["n_auc_excluded"] == 4  # single-class images
    glob = create_metric("localization", aggregation="global", images="tampered_and_real")
    glob.update([empty, full], [loud, half], [REAL, TAMPERED])
    tp, fp, fn = 8, 16, 8
    assert glob.compute()["pixel_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert glob.compute()["pixel_auc"] == pytest.approx(roc_auc_score(np.r_[empty.ravel(), full.ravel()],
                                                                     np.r_[loud.ravel(), half.ravel()]))


def test_image_selection_policy() -> None:
    gts, preds = masks(3, 3)
    labels = [TAMPERED, REAL, SYNTH]
    only = create_metric("localization")
    only.update(gts, preds, labels)
    both = create_metric("localization", images="tampered_and_real")
    both.update(gts, preds, labels)
    assert (only.compute()["n_images"], only.compute()["n_skipped"]) == (1, 2)
    assert (both.compute()["n_images"], both.compute()["n_skipped"]) == (2, 1)
    assert only.compute()["pixel_f1"] == pytest.approx(f1_score(gts[0].ravel(), preds[0].ravel() > 0.5))


def test_polarity() -> None:
    gts, preds = masks(4, 4)
    flipped = [1 - p for p in preds]
    r = {}
    for pol in ("origin", "reverse", "double"):
        m = create_metric("localization", polarity=pol)
        m.update(gts, flipped, [TAMPERED] * 4)
        r[pol] = m.compute()
    direct = create_metric("localization")
    direct.update(gts, preds, [TAMPERED] * 4)
    # reverse of the flipped prediction: scored as 1 - (1 - p) = p, threshold rule aside
    assert r["reverse"]["pixel_iou"] == pytest.approx(direct.compute()["pixel_iou"], abs=1e-6)
    assert r["reverse"]["pixel_auc"] == pytest.approx(direct.compute()["pixel_auc"], abs=2e-3)
    assert r["double"]["pixel_f1"] >= max(r["origin"]["pixel_f1"], r["reverse"]["pixel_f1"]) - 1e-12
    with pytest.raises(UserError, match="per image"):
        create_metric("localization", polarity="double", aggregation="global")


@pytest.mark.parametrize("aggregation", ["per_image", "global"])
@pytest.mark.parametrize("threshold", [0.5, "best"])
def test_streaming_and_merge_equal_one_pass(aggregation: str, threshold: float | str) -> None:
    gts, preds = masks(7, 5)
    labels = [TAMPERED, REAL, TAMPERED, TAMPERED, SYNTH, TAMPERED, REAL]
    kw = {"aggregation": aggregation, "threshold": threshold, "images": "tampered_and_real", "bins": 64}
    whole = create_metric("localization", **kw)
    whole.update(gts, preds, labels)
    a, b = create_metric("localization", **kw), create_metric("localization", **kw)
    a.update(gts[:2], preds[:2], labels[:2])
    a.update(gts[2:4], preds[2:4], labels[2:4])
    b.update(gts[4:], preds[4:], labels[4:])
    a.merge(b)
    assert a.compute() == pytest.approx(whole.compute(), nan_ok=True)


@pytest.mark.parametrize(
    ("kwargs", "gt", "pred", "match"),
    [
        ({}, np.zeros((3, 3), bool), np.zeros((3, 4)), "shape"),
        ({}, np.zeros((3, 3), bool), None, "no predicted mask"),
        ({}, None, np.zeros((3, 3)), "no ground-truth"),
        ({}, np.zeros((3, 3), bool), np.full((3, 3), 2.0), r"\[0, 1\]"),
        ({"aggregation": "pixel"}, None, None, "aggregation"),
        ({"threshold": "oracle"}, None, None, "threshold"),
    ],
)
def test_localization_errors(kwargs: dict, gt: np.ndarray | None, pred: np.ndarray | None, match: str) -> None:
    with pytest.raises(UserError, match=match):
        create_metric("localization", **kwargs).update([gt], [pred], [TAMPERED])


def test_sida_legacy_by_hand() -> None:
    """Official formulas (test.py): cIoU global, gIoU mean with empty union = 1, F1 and AUC as printed."""
    gt1 = np.zeros((4, 4), bool)
    gt1[:2] = True  # 8 px
    p1 = np.zeros((4, 4))
    p1[1:3] = 0.8  # 8 px, 4 overlap -> I=4, U=12
    gt2 = np.zeros((4, 4), bool)
    p2 = np.full((4, 4), 0.5)  # not > 0.5: empty prediction on an empty mask -> U=0 -> gIoU 1
    labels = np.array([2, 2, 0, 1, 0])
    probs = np.array([[0.1, 0.1, 0.8], [0.6, 0.2, 0.2], [0.7, 0.2, 0.1], [0.1, 0.2, 0.7], [0.2, 0.5, 0.3]])
    m = create_metric("sida_legacy")
    m.update(labels, probs, [gt1, gt2, None, None, None], [p1, p2, None, None, None])
    r = m.compute()
    acc = 2 / 5  # correct: #0 (tampered), #2 (real)
    ciou = 4 / (12 + 1e-10)
    giou = (4 / (12 + 1e-5) + 1.0) / 2
    assert r["legacy_accuracy"] == pytest.approx(acc)
    assert r["legacy_ciou"] == pytest.approx(ciou) == r["legacy_pixel_accuracy"]
    assert r["legacy_giou"] == pytest.approx(giou)
    assert r["legacy_f1"] == pytest.approx(2 * ciou * acc / (ciou + acc + 1e-10))
    # confusion: true 0 -> {0, 1}, true 1 -> {2}, true 2 -> {2, 0}
    precision = [1 / 2, 0 / 1, 1 / 2]
    recall = [1 / 2, 0 / 1, 1 / 2]
    assert r["legacy_auc_approx"] == pytest.approx(np.mean(precision) * np.mean(recall))
    assert r["n_tampered"] == 2


def _f1(tp: float, fp: float, fn: float) -> float:
    return 2 * tp / max(2 * tp + fp + fn, 1e-32)


def test_best_of_matches_max_of_mask_and_inverse_per_image_and_global() -> None:
    gts, preds = masks(5, 6)
    preds[1] = 1.0 - preds[1]  # one inverted prediction: best_of must pick its inverse
    m = create_metric("localization", polarity="best_of")
    m.update(gts, preds, [TAMPERED] * 5)
    r = m.compute()
    f1 = [max(f1_score(g.ravel(), p.ravel() > 0.5), f1_score(g.ravel(), ~(p.ravel() > 0.5))) for g, p in zip(gts, preds)]
    auc = [max(a, 1 - a) for a in (roc_auc_score(g.ravel(), p.ravel()) for g, p in zip(gts, preds))]
    assert r["pixel_f1"] == pytest.approx(np.mean(f1))
    assert r["pixel_auc"] == pytest.approx(np.mean(auc), abs=2e-3)
    origin = create_metric("localization")
    origin.update(gts, preds, [TAMPERED] * 5)
    assert r["pixel_f1"] > origin.compute()["pixel_f1"]
    assert "optimistic" in m.convention()["polarity"]
    g = np.concatenate([x.ravel() for x in gts])
    p = np.concatenate([1.0 - x.ravel() for x in preds])
    glob = create_metric("localization", polarity="best_of", aggregation="global", bins=4096)
    glob.update(gts, [1.0 - x for x in preds], [TAMPERED] * 5)
    rg = glob.compute()
    assert rg["pixel_f1"] == pytest.approx(max(f1_score(g, p > 0.5), f1_score(g, ~(p > 0.5))))
    assert rg["pixel_auc"] == pytest.approx(max(roc_auc_score(g, p), 1 - roc_auc_score(g, p)), abs=5e-4)


def test_best_of_with_best_threshold_searches_both_directions() -> None:
    gts, preds = masks(3, 7)
    bins = 16
    m = create_metric("localization", polarity="best_of", threshold="best", bins=bins)
    m.update(gts, [1.0 - p for p in preds], [TAMPERED] * 3)
    expect = []
    for g, p in zip(gts, preds):
        idx = np.minimum(((1.0 - p) * bins).astype(int), bins - 1)
        cands = [idx >= k for k in range(bins + 1)]
        expect.append(max(f1_score(g.ravel(), c.ravel(), zero_division=1.0) for c in cands + [~c for c in cands]))
    assert m.compute()["pixel_f1"] == pytest.approx(np.mean(expect))


def _trufor_style_kept(gt: np.ndarray, erode: int, dilate: int) -> np.ndarray:
    """Brute force: a positive is kept iff its whole erode×erode window is positive, a negative
    iff its dilate×dilate window holds no positive (image borders mirrored, edge pixel repeated)."""
    h, w = gt.shape
    keep = np.zeros_like(gt)
    pe, pd = np.pad(gt, erode // 2, mode="symmetric"), np.pad(gt, dilate // 2, mode="symmetric")
    for y in range(h):
        for x in range(w):
            keep[y, x] = pe[y:y + erode, x:x + erode].all() or not pd[y:y + dilate, x:x + dilate].any()
    return keep


def test_border_exclusion_reproduces_trufor_f1_at_threshold() -> None:
    """TruFor's metrics: gt1 = erode 15×15, gt0 = not dilate 11×11, F1 = max(F1, F1 inverted) at p > 0.5."""
    rng = np.random.default_rng(8)
    gt = np.zeros((41, 37), bool)
    gt[6:30, 9:33] = True
    gt[0:4, 0:5] = True  # a region touching the image border
    pred = np.clip(0.3 * gt + 0.7 * rng.random(gt.shape), 0, 1)
    keep = _trufor_style_kept(gt, 15, 11)
    assert 0 < keep.sum() < keep.size
    g, p = gt[keep], pred[keep] > 0.5
    tp, fp, fn, tn = (int(np.sum(a)) for a in (p & g, p & ~g, ~p & g, ~p & ~g))
    expect = max(_f1(tp, fp, fn), _f1(fn, tn, tp))
    m = create_metric("localization", polarity="best_of", border_exclusion=[7, 5])
    m.update([gt], [pred], [TAMPERED])
    r = m.compute()
    assert r["pixel_f1"] == pytest.approx(expect)
    assert r["pixel_auc"] == pytest.approx(max(roc_auc_score(g, pred[keep]), 1 - roc_auc_score(g, pred[keep])), abs=2e-3)
    sym = create_metric("localization", border_exclusion=3)
    sym.update([gt], [pred], [TAMPERED])
    k3 = _trufor_style_kept(gt, 7, 7)
    assert sym.compute()["pixel_f1"] == pytest.approx(f1_score(gt[k3], pred[k3] > 0.5))
    assert "3 px inside / 3 px outside" in sym.convention()["border_exclusion"]
    assert create_metric("localization").convention()["border_exclusion"] == 0


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_pred_resize_matches_torch_interpolate(mode: str) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    small = rng.random((7, 5))
    gt = np.zeros((23, 18), bool)
    gt[3:15, 4:11] = True
    ref = torch.nn.functional.interpolate(torch.from_numpy(small)[None, None], size=gt.shape, mode=mode,
                                          **({"align_corners": False} if mode == "bilinear" else {}))[0, 0].numpy()
    m = create_metric("localization", pred_resize=mode)
    m.update([gt], [small], [TAMPERED])
    assert m.compute()["pixel_f1"] == pytest.approx(f1_score(gt.ravel(), ref.ravel() > 0.5))
    from bench.metrics.localization import resize_prob
    assert np.abs(resize_prob(small, gt.shape, mode) - ref).max() < 1e-12
    assert mode in m.convention()["pred_resize"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"border_exclusion": -1}, "border_exclusion"), ({"border_exclusion": [1, 2, 3]}, "border_exclusion"),
     ({"border_exclusion": 1.5}, "border_exclusion"), ({"pred_resize": "bicubic"}, "pred_resize"),
     ({"polarity": "inverse"}, "polarity")],
)
def test_new_convention_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        create_metric("localization", **kwargs)




def test_sida_legacy_records_unscorable_tampered_images() -> None:
    """A tampered image without a ground-truth mask (or with a prediction of another shape) is left out
    of cIoU/gIoU and counted; one without a predicted mask scores as an empty prediction. Never raises."""
    gt = np.zeros((4, 4), bool)
    gt[:2] = True  # 8 px
    pred = np.zeros((4, 4))
    pred[:1] = 0.9  # 4 px inside the gt -> I=4, U=8
    labels = np.array([2, 2, 2, 2, 0])
    probs = np.tile([0.1, 0.1, 0.8], (5, 1))
    m = create_metric("sida_legacy")
    m.update(labels, probs, [gt, None, gt, gt, None], [pred, pred, None, np.zeros((3, 3)), None])
    r = m.compute()
    # scored: #0 (I=4, U=8) and #2 (empty prediction: I=0, U=8); #1 no gt; #3 shape mismatch
    assert r["legacy_ciou"] == pytest.approx(4 / (16 + 1e-10))
    assert r["legacy_giou"] == pytest.approx((4 / (8 + 1e-5) + 0.0) / 2)
    assert r["legacy_accuracy"] == pytest.approx(4 / 5)
    assert (r["n_tampered"], r["n_tampered_without_gt_mask"], r["n_tampered_mask_shape_mismatch"],
            r["n_tampered_without_pred_mask"]) == (2, 1, 1, 1)
    empty = create_metric("sida_legacy")
    empty.update(np.array([2]), probs[:1], [None], [None])
    assert np.isnan(empty.compute()["legacy_ciou"]) and empty.compute()["n_tampered_without_gt_mask"] == 1


def test_sida_legacy_from_stored_statistics_follows_the_same_rules() -> None:
    """The streaming path (per-image statistics as the store keeps them: no statistic where the two
    masks differ in shape, every pixel at code 0 without a prediction) gives what ``update`` gives."""
    from bench.evaluation.store import level_values, mask_stats, quantise_mask

    gt = np.zeros((4, 4), bool)
    gt[:2] = True
    pred = np.zeros((4, 4))
    pred[:1] = 0.9
    labels = np.array([2, 2, 2, 2, 0])
    probs = np.tile([0.1, 0.1, 0.8], (5, 1))
    gts, preds = [gt, None, gt, gt, None], [pred, pred, None, np.zeros((3, 3)), None]
    direct = create_metric("sida_legacy")
    direct.update(labels, probs, gts, preds)
    stats = [mask_stats(quantise_mask(pred), gt), mask_stats(quantise_mask(pred), None), mask_stats(None, gt),
             None, None]
    streamed = create_metric("sida_legacy")
    streamed.update_stats(labels, probs, stats, level_values(), has_gt=[g is not None for g in gts],
                          has_pred=[p is not None for p in preds])
    assert streamed.compute() == pytest.approx(direct.compute(), nan_ok=True)
    assert streamed.compute()["n_tampered_without_pred_mask"] == 1


# ------------------------------------------------------------------ confidence weighting
GT_W = np.array([[1, 1, 0], [0, 0, 0]], dtype=bool)
PRED_W = np.array([[0.9, 0.2, 0.8], [0.1, 0.7, 0.3]])
CONF_W = np.array([[1.0, 0.5, 0.25], [1.0, 0.0, 0.5]])
# by hand at p > 0.5: tp = 1 (0.9, c 1), fn = 0.5 (0.2, c 0.5), fp = 0.25 + 0 (0.8, c 0.25; 0.7, c 0)
F1_W, IOU_W = 2 * 1 / (2 * 1 + 0.25 + 0.5), 1 / (1 + 0.25 + 0.5)
# weighted AUC: positives 0.9 (1) beats every negative (1.75), 0.2 (0.5) beats 0.1 (1); / (1.5 * 1.75)
AUC_W = (1 * 1.75 + 0.5 * 1.0) / (1.5 * 1.75)


@pytest.mark.parametrize("aggregation", ["per_image", "global"])
def test_confidence_weighting_by_hand(aggregation: str) -> None:
    plain = create_metric("localization", aggregation=aggregation)
    plain.update([GT_W], [PRED_W], [TAMPERED])
    assert plain.compute()["pixel_f1"] == pytest.approx(2 / 5)  # tp 1, fp 2, fn 1
    m = create_metric("localization", aggregation=aggregation, confidence_weighting=True)
    zero = np.zeros_like(CONF_W)  # an image with no weight is left out, never scored
    m.update([GT_W, GT_W], [PRED_W, 1 - PRED_W], [TAMPERED, TAMPERED], confidences=[CONF_W, zero])
    v = m.compute()
    assert v["pixel_f1"] == pytest.approx(F1_W) and v["pixel_iou"] == pytest.approx(IOU_W)
    assert v["pixel_auc"] == pytest.approx(AUC_W) and v["n_zero_confidence"] == 1 and v["n_images"] == 2
    assert "confidence_weighting" in m.convention() and "confidence_weighting" not in plain.convention()
    assert "n_zero_confidence" not in plain.compute()


def test_confidence_is_resized_and_unit_confidence_changes_nothing() -> None:
    big = np.kron(GT_W, np.ones((2, 2), dtype=bool))  # each pixel of the 2x3 case becomes 2x2
    m = create_metric("localization", confidence_weighting=True, pred_resize="nearest")
    m.update([big], [PRED_W], [TAMPERED], confidences=[CONF_W])
    assert m.compute()["pixel_f1"] == pytest.approx(F1_W) and m.compute()["pixel_auc"] == pytest.approx(AUC_W)
    gts, preds = masks(5, seed=11)
    for aggregation, threshold in (("per_image", 0.5), ("global", 0.3), ("per_image", "best")):
        plain = create_metric("localization", aggregation=aggregation, threshold=threshold)
        ones = create_metric("localization", aggregation=aggregation, threshold=threshold, confidence_weighting=True)
        plain.update(gts, preds, [TAMPERED] * 5)
        ones.update(gts, preds, [TAMPERED] * 5, confidences=[np.ones_like(p) for p in preds])
        got = ones.compute()
        assert got.pop("n_zero_confidence") == 0 and got == pytest.approx(plain.compute())


def test_confidence_weighting_errors() -> None:
    with pytest.raises(UserError, match="confidence_weighting must be true or false"):
        create_metric("localization", confidence_weighting="yes")
    m = create_metric("localization", confidence_weighting=True)
    assert m.needs_pixels
    with pytest.raises(UserError, match="one confidence map per prediction"):
        m.update([GT_W], [PRED_W], [TAMPERED])
    with pytest.raises(UserError, match=r"confidence map of the prediction's shape \(2, 3\)"):
        m.update([GT_W], [PRED_W], [TAMPERED], confidences=[np.ones((3, 2))])
    with pytest.raises(UserError, match="finite values in"):
        m.update([GT_W], [PRED_W], [TAMPERED], confidences=[CONF_W * 2])
    with pytest.raises(UserError, match="need the pixel masks"):
        m.update_stats([np.zeros((2, 256), np.int64)], np.arange(256) / 255, [TAMPERED])
