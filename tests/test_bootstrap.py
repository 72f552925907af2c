"""Bootstrap intervals and the paired test: weighted recomputation equals resampled data."""

from __future__ import annotations

import numpy as np
import pytest

from bench.evaluation.bootstrap import bootstrap_ci, paired_bootstrap, resample_weights
from bench.errors import UserError
from bench.metrics.base import SampleMetric
from bench.plugins import create_metric


def binary(n: int, seed: int, strength: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(strength * y + (1 - strength) * rng.random(n), 0, 1)


def loc_data(n: int, seed: int) -> tuple[list, list, np.ndarray]:
    rng = np.random.default_rng(seed)
    gts = [rng.random((8, 8)) < 0.3 for _ in range(n)]
    preds = [np.clip(0.4 * g + 0.6 * rng.random((8, 8)), 0, 1) for g in gts]
    return gts, preds, rng.choice([0, 2], n)


def build(kind: str, idx: np.ndarray | None = None) -> SampleMetric:
    """The metric fed with the rows ``idx`` (all rows when None), as a resample would see them."""
    rng = np.random.default_rng(11)
    n = 40
    sel = np.arange(n) if idx is None else idx
    if kind == "binary":
        y, p = binary(n, 0, 0.3)
        groups = np.where(y == 1, rng.choice(["a", "b"], n), "real")
        m = create_metric("binary_detection")
        m.update(y[sel], p[sel], groups[sel])
    elif kind == "ternary":
        y, probs = rng.integers(0, 3, n), rng.dirichlet([1, 1, 1], n)
        m = create_metric("ternary_detection")
        m.update(y[sel], probs[sel])
    elif kind == "legacy":
        y, probs = rng.integers(0, 3, n), rng.dirichlet([1, 1, 1], n)
        gts, preds, _ = loc_data(n, 1)
        m = create_metric("sida_legacy")
        m.update(y[sel], probs[sel], [gts[i] for i in sel], [preds[i] for i in sel])
    else:
        aggregation, threshold = kind.split(":")
        gts, preds, labels = loc_data(n, 2)
        m = create_metric("localization", aggregation=aggregation, images="tampered_and_real", bins=32,
                          threshold=threshold if threshold == "best" else float(threshold))
        m.update([gts[i] for i in sel], [preds[i] for i in sel], labels[sel])
    assert isinstance(m, SampleMetric)
    return m


@pytest.mark.parametrize("kind", ["binary", "ternary", "legacy", "per_image:0.5", "global:0.5", "global:best"])
def test_weighted_compute_equals_resampled_rows(kind: str) -> None:
    idx = np.random.default_rng(3).integers(0, 40, 40)
    whole = build(kind)
    rows = np.arange(40) if not kind.startswith(("per_image", "global")) else None
    if rows is None:  # localization keeps only counted images: map image indices to row indices
        labels = loc_data(40, 2)[2]
        counted = np.flatnonzero(np.isin(labels, [0, 2]))
        idx = idx[np.isin(idx, counted)]
        w = np.bincount(np.searchsorted(counted, idx), minlength=len(counted))
    else:
        w = np.bincount(idx, minlength=40)
    expected = build(kind, np.sort(idx)).compute()
    got = whole.compute_weighted(w)
    got.pop("n_skipped", None), expected.pop("n_skipped", None)
    assert got == pytest.approx(expected, nan_ok=True)


def test_ci_is_seeded_and_sensible() -> None:
    y, p = binary(500, 1, 0.3)
    m = create_metric("binary_detection")
    m.update(y, p)
    ci = bootstrap_ci(m, n_resamples=300, seed=7)
    assert ci == bootstrap_ci(m, n_resamples=300, seed=7)
    assert ci != bootstrap_ci(m, n_resamples=300, seed=8)
    assert set(ci) == set(m.headline_keys()) and "n" not in ci
    r = m.compute()
    lo, hi = ci["accuracy"]
    assert lo < r["accuracy"] < hi
    se = np.sqrt(r["accuracy"] * (1 - r["accuracy"]) / 500)  # normal approximation of the interval
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.2)
    narrow = bootstrap_ci(m, n_resamples=300, seed=7, confidence=0.5, keys=["auc"])
    assert narrow["auc"][1] - narrow["auc"][0] < ci["auc"][1] - ci["auc"][0]


def test_resample_weights_are_multinomial_draws() -> None:
    ws = list(resample_weights(10, 5, 0))
    assert all(w.sum() == 10 and w.shape == (10,) for w in ws)
    assert [w.tolist() for w in ws] == [w.tolist() for w in resample_weights(10, 5, 0)]


def test_paired_bootstrap() -> None:
    ids = [f"img{i}" for i in range(300)]
    y, good = binary(300, 2, 0.5)
    _, bad = binary(300, 3, 0.05)
    a, b = create_metric("binary_detection"), create_metric("binary_detection")
    a.update(y, good, sample_ids=ids)
    b.update(y, bad, sample_ids=ids)
    res = paired_bootstrap(a, b, "auc", n_resamples=300, seed=0)
    assert res["diff"] == pytest.approx(a.compute()["auc"] - b.compute()["auc"])
    assert res["ci"][0] > 0 and res["p_value"] < 0.01
    same = paired_bootstrap(a, a, "auc", n_resamples=100, seed=0)
    assert same["diff"] == 0 and same["ci"] == (0.0, 0.0) and same["p_value"] == 1.0
    # the same samples in another order (ids given) pair up identically
    order = np.random.default_rng(0).permutation(300)
    shuffled = create_metric("binary_detection")
    shuffled.update(y[order], bad[order], sample_ids=[ids[i] for i in order])
    assert paired_bootstrap(a, shuffled, "auc", n_resamples=300, seed=0) == res


def test_paired_bootstrap_errors() -> None:
    y, p = binary(20, 0, 0.3)
    a, b = create_metric("binary_detection"), create_metric("binary_detection")
    a.update(y, p, sample_ids=[str(i) for i in range(20)])
    b.update(y, p, sample_ids=[str(i + 1) for i in range(20)])
    with pytest.raises(UserError, match="different samples"):
        paired_bootstrap(a, b, "auc")
    with pytest.raises(UserError, match="unknown key"):
        paired_bootstrap(a, a, "accuracy_at_best")
    c = create_metric("binary_detection")
    c.update(y[:10], p[:10])
    with pytest.raises(UserError, match="no sample ids"):
        paired_bootstrap(c, a, "auc")
    with pytest.raises(UserError, match="confidence"):
        bootstrap_ci(a, confidence=95)
