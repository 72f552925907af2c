"""Base class of streaming metrics: ``update`` / ``merge`` / ``compute``.

State is bounded (counts, histograms, or per-sample score lists for exact AUC, which hold
one float per *image*, never per pixel). ``compute`` is pure: it never mutates the state or
the inputs, so calling it twice gives the same result, and merging two shards equals one pass.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, cast

import numpy as np

from bench.errors import UserError


class Metric(abc.ABC):
    """A metric over scored samples.

    Class attributes:
        name: registry name.
        task: ``"detection"`` (inputs: labels and class probabilities) or ``"localization"``
            (inputs: ground-truth and predicted masks).

    Detection metrics implement ``update(labels, probs, groups=None)`` with labels (N,) int,
    probs (N, K) float and optional per-sample group names (generator/source).
    Localization metrics implement ``update(gt_masks, pred_masks, labels)`` with lists of
    boolean (H, W) and float (H, W) arrays of matching shapes.
    """

    name: ClassVar[str]
    task: ClassVar[str] = "detection"

    @abc.abstractmethod
    def update(self, *args: Any, **kwargs: Any) -> None:
        """Accumulate a batch."""

    @abc.abstractmethod
    def merge(self, other: "Metric") -> None:
        """Add the state of ``other`` (same class and conventions) into this one."""

    @abc.abstractmethod
    def compute(self) -> dict[str, float]:
        """The metric values, named; pure."""

    def convention(self) -> dict[str, Any]:
        """The conventions that define the numbers (threshold, aggregation, ...)."""
        return {}

    def clone(self) -> "Metric":
        return copy.deepcopy(self)


def as_float_array(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


class SampleMetric(Metric):
    """A metric whose state is one row of summable contributions per sample.

    Each ``update`` appends per-sample arrays (a label and a score for detection; a few counts,
    or an O(bins) histogram, per image for localization: never per pixel). ``merge`` appends the
    other shard's rows. Every number is a function of *weighted sums* over rows, computed by
    :meth:`compute_weighted`; ``compute()`` uses weight 1 for every row, and the bootstrap
    (:mod:`bench.evaluation.bootstrap`) resamples by drawing integer multiplicities, so a resample costs no
    copy of the state.

    Optional ``sample_ids`` given to ``update`` are kept so that two models can be paired on the
    same samples (:func:`bench.evaluation.bootstrap.paired_bootstrap`).
    """

    def __init__(self) -> None:
        self._chunks: list[dict[str, np.ndarray]] = []
        self._ids: list[list[str] | None] = []

    # -- state ------------------------------------------------------------------------------
    def _append(self, rows: dict[str, np.ndarray], sample_ids: Any = None) -> None:
        """Store one batch of per-sample rows (all arrays share the leading length N)."""
        lengths = {len(v) for v in rows.values()}
        if len(lengths) != 1:
            raise ValueError(f"{self.name}: per-sample arrays differ in length: {sorted(lengths)}")
        (n,) = lengths
        if sample_ids is not None:
            ids = [str(s) for s in sample_ids]
            if len(ids) != n:
                raise UserError(f"{self.name}: got {len(ids)} sample ids for {n} samples")
        else:
            ids = None
        if n:
            self._chunks.append({k: np.array(v, copy=True) for k, v in rows.items()})
            self._ids.append(ids)

    def table(self) -> dict[str, np.ndarray]:
        """All rows, concatenated (a fresh copy; the state is not changed)."""
        if not self._chunks:
            return {k: np.zeros((0, *shape), dtype) for k, (shape, dtype) in self._row_spec().items()}
        return {k: np.concatenate([c[k] for c in self._chunks]) for k in self._chunks[0]}

    def sample_ids(self) -> list[str] | None:
        """The ids of all rows in order, or ``None`` if any batch came without ids."""
        if any(ids is None for ids in self._ids):
            return None
        return [s for ids in self._ids for s in ids]  # type: ignore[union-attr]

    def __bool__(self) -> bool:  # an empty metric is still a metric
        return True

    def __len__(self) -> int:
        """The number of stored rows (samples)."""
        return sum(len(next(iter(c.values()))) for c in self._chunks)

    def merge(self, other: Metric) -> None:
        if type(other) is not type(self) or other.convention() != self.convention():
            raise UserError(
                f"Cannot merge {type(other).__name__} {other.convention()} into "
                f"{type(self).__name__} {self.convention()}: metric and conventions must match"
            )
        other = cast(SampleMetric, other)
        self._merge_extra(other)
        self._chunks.extend({k: v.copy() for k, v in c.items()} for c in other._chunks)
        self._ids.extend(None if ids is None else list(ids) for ids in other._ids)

    def sort_by_sample_id(self) -> None:
        """Reorder the rows by sample id (one chunk), so the state, and the bootstrap's draws,
        do not depend on the order the rows were fed in. Needs ids on every batch."""
        ids = self.sample_ids()
        if ids is None:
            raise UserError(f"{self.name}: sorting by sample id needs sample_ids on every update")
        if not ids:
            return
        order = np.argsort(np.array(ids, dtype=object).astype(str), kind="stable")
        table = self.table()
        self._chunks = [{k: v[order] for k, v in table.items()}]
        self._ids = [[ids[i] for i in order]]

    def _merge_extra(self, other: "SampleMetric") -> None:
        """Hook for state that is not per-sample rows (e.g. group names)."""

    # -- results ----------------------------------------------------------------------------
    def compute(self) -> dict[str, float]:
        return self.compute_weighted(None)

    def compute_weighted(self, weights: np.ndarray | None) -> dict[str, float]:
        """The metric over rows repeated ``weights[i]`` times (non-negative ints; None = all 1)."""
        table = self._prepare(self.table())
        n = len(next(iter(table.values()))) if table else 0
        w = np.ones(n, dtype=np.int64) if weights is None else np.asarray(weights, dtype=np.int64)
        if w.shape != (n,):
            raise ValueError(f"{self.name}: weights shape {w.shape} != ({n},)")
        return self._compute(table, w)

    @abc.abstractmethod
    def _compute(self, table: dict[str, np.ndarray], w: np.ndarray) -> dict[str, float]:
        """Pure: the metric values from the rows and their integer weights."""

    def _compute_block(self, table: dict[str, np.ndarray], weights: np.ndarray) -> list[dict[str, float]]:
        """``_compute`` for each row of (R, N) ``weights``; override to share work across rows."""
        return [self._compute(table, w) for w in weights]

    def _prepare(self, table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Hook: convert the concatenated rows once before (possibly many) ``_compute`` calls."""
        return table

    @abc.abstractmethod
    def _row_spec(self) -> dict[str, tuple[tuple[int, ...], Any]]:
        """Name → (per-row shape, dtype) of the stored rows (used for an empty table)."""

    def headline_keys(self) -> list[str]:
        """The keys that get bootstrap confidence intervals by default."""
        return [k for k in self.compute() if not is_count_key(k)]


def is_count_key(key: str) -> bool:
    """Counts (``n``, ``n_real``, ``glide/n_fake``, ``cm_real_as_tampered``) get no interval."""
    last = key.rsplit("/", 1)[-1]
    return last == "n" or last.startswith(("n_", "cm_"))


RESAMPLE_BLOCK = 32
"""Resamples computed together (a (32, N) weight matrix lets per-image sums use one matrix product)."""


def resampled(metric: SampleMetric, weights: Iterable[np.ndarray]) -> Iterator[dict[str, float]]:
    """``metric.compute_weighted(w)`` for each ``w``, concatenating the state only once."""
    table = metric._prepare(metric.table())
    block: list[np.ndarray] = []
    for w in weights:
        block.append(np.asarray(w, dtype=np.int64))
        if len(block) == RESAMPLE_BLOCK:
            yield from metric._compute_block(table, np.stack(block))
            block = []
    if block:
        yield from metric._compute_block(table, np.stack(block))
