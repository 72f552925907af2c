"""Seeded bootstrap confidence intervals and a paired bootstrap test, over samples.

Both work on any :class:`bench.metrics.base.SampleMetric`: a resample is a vector of integer
multiplicities (a multinomial draw of N out of N rows), so the metric is recomputed from its
per-sample rows without copying them (detection: one label and score per image; localization:
per-image counts or histograms, never pixels).

- Intervals are percentile intervals of the resampled values; resamples where a value is
  undefined (``nan``, e.g. an AUC with one class drawn) are left out of that value's interval.
- The paired test draws the *same* samples for both models (matched by sample id when both
  metrics were given ids, else by position) and reports the observed difference ``a - b``, its
  percentile interval, and a two-sided p-value
  ``min(1, 2 * min((#{d* <= 0} + 1) / (B + 1), (#{d* >= 0} + 1) / (B + 1)))`` over the B
  defined resampled differences d*.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypedDict

import numpy as np

from bench.errors import UserError
from bench.metrics.base import Metric, SampleMetric, resampled


class PairedResult(TypedDict):
    key: str
    a: float
    b: float
    diff: float
    ci: tuple[float, float]
    p_value: float
    n: int
    n_resamples: int


def _check(metric: Metric) -> SampleMetric:
    if not isinstance(metric, SampleMetric):
        raise UserError(f"bootstrap needs a metric with per-sample state, got {type(metric).__name__}")
    return metric


def _check_args(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise UserError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise UserError(f"confidence must be in (0, 1), got {confidence}")


def resample_weights(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Multiplicities of N rows drawn with replacement, ``n_resamples`` times (seeded)."""
    rng = np.random.default_rng(seed)
    for _ in range(n_resamples):
        yield np.bincount(rng.integers(0, n, size=n), minlength=n) if n else np.zeros(0, np.int64)


def percentile_interval(values: Sequence[float] | np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` interval of the finite values (nan, nan) if there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return (float("nan"), float("nan"))
    alpha = (1.0 - confidence) / 2
    lo, hi = np.quantile(v, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def bootstrap_ci(
    metric: Metric,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    keys: Sequence[str] | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals, ``{key: (lo, hi)}``, for ``keys`` (default: the metric's
    headline keys, i.e. every key that is not a count)."""
    m = _check(metric)
    _check_args(n_resamples, confidence)
    wanted = list(keys) if keys is not None else m.headline_keys()
    draws: dict[str, list[float]] = {k: [] for k in wanted}
    for values in resampled(m, resample_weights(len(m), n_resamples, seed)):
        for k in wanted:
            draws[k].append(values.get(k, float("nan")))
    return {k: percentile_interval(v, confidence) for k, v in draws.items()}


def _pairing(a: SampleMetric, b: SampleMetric) -> np.ndarray:
    """Positions in ``b`` of ``a``'s rows, by sample id if both have ids, else by position."""
    ids_a, ids_b = a.sample_ids(), b.sample_ids()
    if ids_a is None or ids_b is None:
        if len(a) != len(b):
            raise UserError(f"paired bootstrap: {len(a)} vs {len(b)} samples and no sample ids to match them")
        return np.arange(len(a))
    pos_b = {s: i for i, s in enumerate(ids_b)}
    if len(pos_b) != len(ids_b) or len(set(ids_a)) != len(ids_a):
        raise UserError("paired bootstrap: duplicate sample ids")
    missing = [s for s in ids_a if s not in pos_b]
    extra = len(ids_b) - (len(ids_a) - len(missing))
    if missing or extra:
        raise UserError(f"paired bootstrap: the two metrics saw different samples ({len(missing)} only in a, "
                        f"{extra} only in b; e.g. {missing[:3]})")
    return np.array([pos_b[s] for s in ids_a], dtype=np.int64)


def paired_bootstrap(
    metric_a: Metric,
    metric_b: Metric,
    key: str,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedResult:
    """Paired bootstrap of ``metric_a[key] - metric_b[key]`` on the same resampled samples."""
    a, b = _check(metric_a), _check(metric_b)
    _check_args(n_resamples, confidence)
    full_a, full_b = a.compute(), b.compute()
    if key not in full_a or key not in full_b:
        raise UserError(f"paired bootstrap: unknown key {key!r}; available: {sorted(full_a)}")
    to_b = _pairing(a, b)

    def weights_b(weights: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for w in weights:
            wb = np.zeros(len(b), dtype=np.int64)
            wb[to_b] = w
            yield wb

    draws_a = resampled(a, resample_weights(len(a), n_resamples, seed))
    draws_b = resampled(b, weights_b(resample_weights(len(a), n_resamples, seed)))
    d = np.array([va.get(key, np.nan) - vb.get(key, np.nan) for va, vb in zip(draws_a, draws_b)])
    d = d[np.isfinite(d)]
    if d.size:
        tail = min(np.sum(d <= 0) + 1, np.sum(d >= 0) + 1) / (d.size + 1)
        p_value = float(min(1.0, 2 * tail))
    else:
        p_value = float("nan")
    return PairedResult(key=key, a=full_a[key], b=full_b[key], diff=full_a[key] - full_b[key],
                        ci=percentile_interval(d, confidence), p_value=p_value, n=len(a), n_resamples=n_resamples)


def describe_bootstrap(n_resamples: int, confidence: float, seed: int) -> dict[str, Any]:
    """The settings to record beside the intervals in a results file."""
    return {"method": "percentile bootstrap over samples", "n_resamples": n_resamples,
            "confidence": confidence, "seed": seed}
