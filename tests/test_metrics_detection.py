"""Detection metrics against scikit-learn: ternary (Table 2) and binary (Table 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from bench.errors import UserError
from bench.plugins import create_metric

NAMES = ("real", "full_synthetic", "tampered")


def ternary_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    probs = rng.dirichlet([1, 1, 1], n)
    probs[: n // 5] = 1 / 3  # exact ties: argmax takes the first class
    probs[n // 5 : n // 3, y[n // 5 : n // 3]] += 2.0
    return y, probs / probs.sum(1, keepdims=True)


def binary_data(n: int, seed: int, decimals: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
    if decimals is not None:
        p = np.round(p, decimals)  # many ties
    groups = np.where(y == 1, rng.choice(["glide", "ldm", "sd"], n), "coco")
    return y, p, groups


@pytest.mark.parametrize("seed", [0, 1])
def test_ternary_matches_sklearn(seed: int) -> None:
    y, probs = ternary_data(300, seed)
    pred = probs.argmax(1)
    m = create_metric("ternary_detection")
    m.update(y, probs)
    r = m.compute()
    labels = [0, 1, 2]
    recall = recall_score(y, pred, labels=labels, average=None, zero_division=0)
    precision = precision_score(y, pred, labels=labels, average=None, zero_division=0)
    f1 = f1_score(y, pred, labels=labels, average=None, zero_division=0)
    for i, c in enumerate(NAMES):
        assert r[f"acc_{c}"] == pytest.approx(recall[i])
        assert r[f"precision_{c}"] == pytest.approx(precision[i])
        assert r[f"f1_{c}"] == pytest.approx(f1[i])
    assert r["accuracy"] == pytest.approx(np.mean(pred == y))
    assert r["macro_f1"] == pytest.approx(f1_score(y, pred, labels=labels, average="macro", zero_division=0))
    assert r["weighted_f1"] == pytest.approx(f1_score(y, pred, labels=labels, average="weighted", zero_division=0))
    cm = confusion_matrix(y, pred, labels=labels)
    np.testing.assert_array_equal(m.confusion_matrix(), cm)
    assert r["cm_tampered_as_real"] == cm[2, 0]
    assert r["n"] == 300


def test_ternary_single_class() -> None:
    y = np.zeros(10, dtype=int)
    probs = np.tile([0.2, 0.7, 0.1], (10, 1))
    probs[:4] = [0.8, 0.1, 0.1]
    m = create_metric("ternary_detection")
    m.update(y, probs)
    r = m.compute()
    pred = probs.argmax(1)
    assert r["acc_real"] == pytest.approx(0.4)
    assert math.isnan(r["acc_tampered"]) and math.isnan(r["acc_full_synthetic"])  # no support: undefined
    assert r["f1_real"] == pytest.approx(f1_score(y, pred, labels=[0], average=None)[0])
    assert r["macro_f1"] == pytest.approx(f1_score(y, pred, labels=[0, 1, 2], average="macro", zero_division=0))


def test_binary_on_ternary_rule_by_hand() -> None:
    # labels: real, real, synthetic, synthetic, tampered, tampered; p_fake (ties at 0.5 count as fake)
    y = np.array([0, 0, 1, 1, 2, 2])
    p_fake = np.array([0.1, 0.5, 0.9, 0.2, 0.6, 0.4])
    m = create_metric("ternary_detection", mode="binary_on_ternary")
    m.update(y, np.c_[1 - p_fake, p_fake])
    r = m.compute()
    assert (r["acc_real"], r["acc_full_synthetic"], r["acc_tampered"]) == (0.5, 0.5, 0.5)
    assert r["accuracy"] == pytest.approx(0.5)
    yb, pb = (y != 0).astype(int), (p_fake >= 0.5).astype(int)
    assert r["f1_fake_binary"] == pytest.approx(f1_score(yb, pb))
    assert r["f1_real_binary"] == pytest.approx(f1_score(yb, pb, pos_label=0))
    assert m.confusion_matrix().shape == (3, 2)
    m2 = create_metric("ternary_detection", mode="binary_on_ternary")
    m2.update(y, p_fake)  # (N,) P(fake) works too
    assert m2.compute() == r


def test_ternary_streaming_and_merge_equal_one_pass() -> None:
    y, probs = ternary_data(200, 3)
    whole = create_metric("ternary_detection")
    whole.update(y, probs)
    streamed = create_metric("ternary_detection")
    for s in range(0, 200, 37):
        streamed.update(y[s : s + 37], probs[s : s + 37])
    a, b = create_metric("ternary_detection"), create_metric("ternary_detection")
    a.update(y[:90], probs[:90])
    b.update(y[90:], probs[90:])
    a.merge(b)
    assert streamed.compute() == whole.compute() == a.compute()
    assert len(b) == 110  # the merged-in shard is untouched


@pytest.mark.parametrize("decimals", [None, 1])
def test_binary_matches_sklearn(decimals: int | None) -> None:
    y, p, groups = binary_data(400, 5, decimals)
    m = create_metric("binary_detection")
    m.update(y, np.c_[1 - p, p], groups=groups)
    r = m.compute()
    pred = (p >= 0.5).astype(int)
    assert r["accuracy"] == pytest.approx(np.mean(pred == y))
    assert r["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert r["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert r["ap"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert r["f1_fake"] == pytest.approx(f1_score(y, pred))
    assert r["f1_real"] == pytest.approx(f1_score(y, pred, pos_label=0))
    assert r["acc_real"] == pytest.approx(np.mean(pred[y == 0] == 0))
    assert r["acc_fake"] == pytest.approx(np.mean(pred[y == 1] == 1))
    fpr, tpr, _ = roc_curve(y, p)
    eer = brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)
    assert r["eer"] == pytest.approx(eer, abs=1e-6)
    for target, key in ((0.01, "tpr_at_fpr_1pct"), (0.05, "tpr_at_fpr_5pct")):
        assert r[key] == pytest.approx(np.max(tpr[fpr <= target]))
    for g in ("glide", "ldm", "sd"):  # each generator against ALL reals
        keep = (y == 0) | (groups == g)
        assert r[f"{g}/auc"] == pytest.approx(roc_auc_score(y[keep], p[keep]))
        assert r[f"{g}/ap"] == pytest.approx(average_precision_score(y[keep], p[keep]))
        assert r[f"{g}/accuracy"] == pytest.approx(np.mean(pred[keep] == y[keep]))
        assert r[f"{g}/n_fake"] == np.sum(groups == g)
    assert "coco/auc" not in r  # real groups are pooled


def test_binary_single_class_is_undefined_not_an_error() -> None:
    m = create_metric("binary_detection")
    m.update(np.ones(5, dtype=int), np.array([0.1, 0.6, 0.7, 0.9, 0.9]))
    r = m.compute()
    assert math.isnan(r["auc"]) and math.isnan(r["eer"]) and math.isnan(r["acc_real"])
    assert r["ap"] == pytest.approx(1.0)  # all positives: precision 1 everywhere
    assert r["balanced_accuracy"] == pytest.approx(0.8) == r["acc_fake"]


def test_binary_streaming_merge_and_purity() -> None:
    y, p, groups = binary_data(300, 8, 2)
    p_in = p.copy()
    whole = create_metric("binary_detection", threshold=0.4)
    whole.update(y, p, groups)
    first = whole.compute()
    assert whole.compute() == first  # pure
    np.testing.assert_array_equal(p, p_in)  # inputs untouched
    a, b = create_metric("binary_detection", threshold=0.4), create_metric("binary_detection", threshold=0.4)
    for s in range(0, 300, 50):
        (a if s < 150 else b).update(y[s : s + 50], p[s : s + 50], groups[s : s + 50])
    a.merge(b)
    assert a.compute() == pytest.approx(first, nan_ok=True)
    with pytest.raises(UserError, match="conventions must match"):
        a.merge(create_metric("binary_detection"))


@pytest.mark.parametrize(
    ("kwargs", "labels", "probs", "match"),
    [
        ({}, [0, 2], [0.1, 0.9], "0..1"),
        ({}, [0, 1], [0.1, 1.5], r"\[0, 1\]"),
        ({}, [0, 1], [[0.1, 0.2, 0.7]] * 2, r"got \(2, 3\)"),
        ({"threshold": 2}, None, None, "threshold"),
    ],
)
def test_binary_bad_input(kwargs: dict, labels: list | None, probs: list | None, match: str) -> None:
    with pytest.raises(UserError, match=match):
        m = create_metric("binary_detection", **kwargs)
        m.update(np.array(labels), np.array(probs))


def test_ternary_bad_mode_and_shape() -> None:
    with pytest.raises(UserError, match="mode"):
        create_metric("ternary_detection", mode="binary")
    with pytest.raises(UserError, match=r"\(N, 3\)"):
        create_metric("ternary_detection").update(np.array([0, 1]), np.array([0.2, 0.3]))
