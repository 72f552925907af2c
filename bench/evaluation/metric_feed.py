"""Feeding store rows into metrics, one batch at a time: the streaming half of the scorer.

A :class:`GroupScorer` holds the metric states of one (dataset, split, perturbation) group.
Batches of rows arrive in any order (shard by shard); each metric's ``update`` keeps per-sample
rows only (a label and a score, or a few numbers per image), and :meth:`GroupScorer.result`
sorts them by sample id before computing, so the numbers and the bootstrap's draws equal those
of one in-memory pass over the rows sorted by sample id.

Label-space rules (each recorded as the entry's ``adapter``):

- probabilities in the protocol's label space: used as they are;
- ternary probabilities on binary data: :class:`~bench.adapters.TernaryToBinary`;
- binary probabilities on ternary data: the :class:`~bench.adapters.BinaryOnTernary` rule,
  through the metric's own mode (:data:`BINARY_ON_TERNARY_PARAMS`); a metric without that
  mode is skipped with the reason recorded.

Rows with an error are counted in ``n_errors`` and left out of every metric (never dropped
from the store). Localization metrics read each row's ``mask_stats`` (never the masks): rows
that have a predicted mask; a tampered row without a ground-truth mask is left out and
counted in ``n_no_gt_mask``. ``sida_legacy`` reads the same statistics and applies its own
recorded rules to tampered rows without a mask (:mod:`bench.metrics.legacy`).

Pixel path: a localization metric whose conventions need the pixels
(:attr:`~bench.metrics.localization.Localization.needs_pixels`: ``border_exclusion`` or
``pred_resize``) is fed with ``update(gt_masks, pred_masks, labels)`` from the masks decoded
from the rows of the current batch (the scorer then reads the store one row group at a time,
:meth:`~bench.evaluation.store.PredictionStore.iter_row_groups`, ground-truth references
resolved), same rows kept as above. Predicted masks reach the metric as stored (8-bit codes
decoded ``c / 255``, at their stored size, so ``pred_resize`` resizes them to the ground
truth's). A usable row without mask bytes (a ``store_masks: stats`` store) makes the metric a
recorded skip, never a partial score. A predicted mask of another size than its ground truth
has no ``mask_stats``: only the pixel path with ``pred_resize`` scores it; any other
localization metric refuses it with one line naming the sample. A metric with
``confidence_weighting`` takes the pixel path and also reads each row's ``confidence`` map
(:data:`CONFIDENCE_COLUMN`, decoded ``c / 255`` at the mask's size); a usable row without one (a
model that makes none, a ``stats`` store, a store of format 2) makes it a recorded skip
(:data:`NO_CONFIDENCE`), never an unweighted score.

The ``explanation`` metric reads each row's ``text``, its reference ``meta["explanation"]`` (as
the dataset loaders set it: SID-Set ``description/<class>_GT.json``, the parquet ``description``
column, sid-mini), the predicted class (argmax of ternary probabilities; -1 for binary ones,
which name no ternary class) and the masks, decoded from the row's bytes a few rows at a time
(:data:`EXPLANATION_CHUNK`); a run stored with ``store_masks: stats`` keeps no mask bytes, so its
region consistency has no sample (NaN, never a guess). A group in which no row has a text is
"not applicable" (:data:`NOT_APPLICABLE`), not zeros.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bench.adapters import TernaryToBinary
from bench.errors import UserError
from bench.evaluation.bootstrap import bootstrap_ci, describe_bootstrap
from bench.evaluation.protocol import Protocol
from bench.evaluation.results import MetricResult, MetricValue, PerturbationInfo, ResultEntry
from bench.evaluation.store import decode_bool_mask, decode_prob_mask, decode_stats, level_values
from bench.metrics.base import Metric, SampleMetric
from bench.types import TAMPERED, LabelSpace

BINARY_ON_TERNARY_PARAMS: dict[str, dict[str, Any]] = {"ternary_detection": {"mode": "binary_on_ternary"}}
"""Metrics that implement the BinaryOnTernary rule, and the parameters that switch it on."""

MAX_ERRORS_LISTED = 20
FEED_COLUMNS = ["dataset", "split", "perturbation", "sample_id", "label", "probs", "group", "error",
                "pred_mask_h", "gt_mask_h", "mask_stats"]
"""The store columns scoring reads (never the mask bytes, unless a metric reads text: :data:`TEXT_COLUMNS`)."""
PIXEL_COLUMNS = [*FEED_COLUMNS, "pred_mask", "pred_mask_w", "gt_mask", "gt_mask_w"]
"""The columns read when a metric needs the pixels (:data:`FEED_COLUMNS` and the masks)."""
NO_PIXELS = ("{name}: border_exclusion / pred_resize / confidence_weighting need the mask pixels, and this store "
             "keeps only per-image statistics (store_masks: stats); re-run with store_masks: full")
NO_PIXEL_COLUMNS = ("{name}: border_exclusion / pred_resize / confidence_weighting need the mask pixels, which this "
                    "feed does not read")
CONFIDENCE_COLUMN = "confidence"
"""The store column a ``confidence_weighting`` metric reads besides :data:`PIXEL_COLUMNS`."""
NO_CONFIDENCE = ("{name}: confidence_weighting needs the model's confidence map of every scored mask, and this "
                 "store has none for sample {sample!r} (the model makes none, or store_masks: stats, or an older "
                 "store format)")
TEXT_COLUMNS = ["probs_space", "text", "meta", "pred_mask", "pred_mask_w", "gt_mask", "gt_mask_w"]
"""The further columns the ``explanation`` metric reads."""
EXPLANATION_CHUNK = 32
"""Rows whose masks the ``explanation`` feed decodes at a time."""
NOT_APPLICABLE = "not applicable: the model produced no explanation text"


def feed_columns(protocol: Protocol) -> list[str]:
    """The store columns scoring ``protocol`` reads."""
    from bench.plugins import METRICS

    reads_text = any(METRICS.get(m.name).task == "explanation" for m in protocol.metrics)
    return FEED_COLUMNS + TEXT_COLUMNS if reads_text else list(FEED_COLUMNS)


class GroupScorer:
    """Metric states of one (dataset, split, perturbation) group.

    Args:
        protocol: metrics, label space and bootstrap settings.
        pert: the group's perturbation, for the entry.
        index: the group's winning rows' ``sample_id``, ``error`` and ``probs_space`` columns.
    """

    def __init__(self, protocol: Protocol, pert: PerturbationInfo, index: pa.Table) -> None:
        from bench.plugins import METRICS, create_metric

        self.protocol, self.pert = protocol, pert
        ids = np.array(index.column("sample_id").to_pylist(), dtype=object)
        errors = np.array(index.column("error").to_pylist(), dtype=object)
        failed = np.flatnonzero(np.not_equal(errors, None))
        order = failed[np.argsort(ids[failed].astype(str), kind="stable")] if failed.size else failed
        self.n, self.n_errors = index.num_rows, int(failed.size)
        self.errors = {str(ids[i]): str(errors[i]) for i in order[:MAX_ERRORS_LISTED]}
        ok = np.equal(errors, None)
        spaces = set(np.array(index.column("probs_space").to_pylist(), dtype=object)[ok].tolist())
        self.probs_space = spaces.pop() if len(spaces) == 1 else protocol.label_space.value
        self.metrics: dict[str, Metric] = {}
        self.tasks: dict[str, str] = {}
        self.skipped: dict[str, MetricResult] = {}
        self.pixel_skip: dict[str, str] = {}
        for spec in protocol.metrics:
            task = METRICS.get(spec.name).task
            params = dict(spec.params)
            if task == "detection" and self._binary_on_ternary():
                if spec.name not in BINARY_ON_TERNARY_PARAMS:
                    self.skipped[spec.name] = MetricResult(
                        skipped="binary predictions on ternary data: this metric has no BinaryOnTernary mode")
                    continue
                params.update(BINARY_ON_TERNARY_PARAMS[spec.name])
            if task == "detection+localization" and self.probs_space != LabelSpace.TERNARY.value:
                self.skipped[spec.name] = MetricResult(skipped="SIDA legacy metrics need ternary probabilities")
                continue
            self.metrics[spec.name] = create_metric(spec.name, **params)
            self.tasks[spec.name] = task
        self.pixel_metrics = {n for n, m in self.metrics.items() if getattr(m, "needs_pixels", False)}
        self.n_no_gt_mask = self.n_no_pred_mask = 0
        self.any_pred_mask = self.any_text = self.mask_bytes_missing = False
        self.values = level_values()

    @property
    def needs_pixels(self) -> bool:
        """True when a metric must be fed the decoded masks (rows with :data:`PIXEL_COLUMNS`)."""
        return bool(self.pixel_metrics)

    @property
    def needs_confidence(self) -> bool:
        """True when a metric weights pixels by the stored confidence (:data:`CONFIDENCE_COLUMN` too)."""
        return any(getattr(self.metrics[n], "confidence_weighting", False) for n in self.pixel_metrics)

    def _binary_on_ternary(self) -> bool:
        return self.probs_space == LabelSpace.BINARY.value and self.protocol.label_space == LabelSpace.TERNARY

    # -- feeding ----------------------------------------------------------------------------
    def update(self, rows: pa.Table) -> None:
        """Add a batch of this group's rows (any order; errors are left out here)."""
        good = rows.filter(pc.is_null(rows.column("error")))
        if not good.num_rows:
            return
        labels = good.column("label").to_numpy(zero_copy_only=False).astype(np.int64)
        ids = good.column("sample_id").to_pylist()
        has_pred = pc.is_valid(good.column("pred_mask_h")).to_numpy(zero_copy_only=False)
        has_gt = pc.is_valid(good.column("gt_mask_h")).to_numpy(zero_copy_only=False)
        self.any_pred_mask |= bool(has_pred.any())
        probs: np.ndarray | None = None
        stats: list[np.ndarray | None] | None = None
        for name, metric in self.metrics.items():
            task = self.tasks[name]
            if task in ("detection", "detection+localization") and probs is None:
                probs = _probs(good.column("probs"), len(labels))
            if name in self.pixel_metrics:
                self._localization_pixels(name, metric, good, labels, has_pred, has_gt, ids)
                continue
            if task in ("localization", "detection+localization") and stats is None:
                stats = [None if s is None else decode_stats(s) for s in good.column("mask_stats").to_pylist()]
            if task == "detection":
                self._detection(metric, labels, probs, good.column("group").to_pylist(), ids)
            elif task == "localization":
                self._localization(metric, labels, has_pred, has_gt, stats, ids)
            elif task == "explanation":
                self.any_text |= good.column("text").null_count < good.num_rows
                self.mask_bytes_missing |= _mask_bytes_missing(good)
                _explanation(metric, good)
            else:
                self._legacy(metric, labels, probs, has_pred, has_gt, stats, ids)

    def _detection(self, metric: Any, labels: np.ndarray, probs: Any, groups: list[Any], ids: list[str]) -> None:
        if self.probs_space == LabelSpace.TERNARY.value and self.protocol.label_space == LabelSpace.BINARY:
            probs = TernaryToBinary.apply(probs) if len(probs) else np.zeros((0, 2))
        metric.update(labels, probs, groups=groups, sample_ids=ids)

    def _usable(self, metric: Any, labels: np.ndarray, has_pred: np.ndarray, has_gt: np.ndarray) -> np.ndarray:
        """Indices of the rows a localization metric reads (counting those it cannot)."""
        tampered = getattr(metric, "tampered_label", TAMPERED)
        usable = has_pred & (has_gt | (labels != tampered))
        self.n_no_gt_mask += int((has_pred & ~has_gt & (labels == tampered)).sum())
        self.n_no_pred_mask += int((~has_pred).sum())
        return np.flatnonzero(usable)

    def _localization(self, metric: Any, labels: np.ndarray, has_pred: np.ndarray, has_gt: np.ndarray,
                      stats: Any, ids: list[str]) -> None:
        keep = self._usable(metric, labels, has_pred, has_gt)
        for i in keep:
            if stats[i] is None:
                raise UserError(f"sample {ids[i]!r}: the predicted mask and the ground truth differ in size; "
                                "score it with the localization parameter pred_resize: bilinear or nearest")
        metric.update_stats([stats[i] for i in keep], self.values, labels[keep], sample_ids=[ids[i] for i in keep])

    def _localization_pixels(self, name: str, metric: Any, rows: pa.Table, labels: np.ndarray,
                             has_pred: np.ndarray, has_gt: np.ndarray, ids: list[str]) -> None:
        """Feed ``metric.update`` with this batch's decoded masks (see the module docstring)."""
        if name in self.pixel_skip:
            return
        keep = self._usable(metric, labels, has_pred, has_gt)
        if not keep.size:
            return
        if "pred_mask" not in rows.column_names or "gt_mask" not in rows.column_names:
            self.pixel_skip[name] = NO_PIXEL_COLUMNS.format(name=name)
            return
        pred_bytes, gt_bytes = rows.column("pred_mask").to_pylist(), rows.column("gt_mask").to_pylist()
        ph, pw, gh, gw = (rows.column(c).to_pylist() for c in ("pred_mask_h", "pred_mask_w", "gt_mask_h", "gt_mask_w"))
        if any(pred_bytes[i] is None or (has_gt[i] and gt_bytes[i] is None) for i in keep):
            self.pixel_skip[name] = NO_PIXELS.format(name=name)
            return
        weighted = bool(getattr(metric, "confidence_weighting", False))
        conf_bytes: list[Any] = []
        if weighted:
            conf_bytes = (rows.column(CONFIDENCE_COLUMN).to_pylist() if CONFIDENCE_COLUMN in rows.column_names
                          else [None] * rows.num_rows)
            missing = next((i for i in keep if conf_bytes[i] is None), None)
            if missing is not None:
                self.pixel_skip[name] = NO_CONFIDENCE.format(name=name, sample=ids[missing])
                return
        gts, preds, confs = [], [], []
        for i in keep:
            if has_gt[i] and metric.pred_resize == "none" and (ph[i], pw[i]) != (gh[i], gw[i]):
                raise UserError(f"sample {ids[i]!r}: the predicted mask ({ph[i]}x{pw[i]}) and the ground truth "
                                f"({gh[i]}x{gw[i]}) differ in size; set the localization parameter pred_resize: "
                                "bilinear or nearest")
            preds.append(decode_prob_mask(pred_bytes[i], ph[i], pw[i]))
            gts.append(decode_bool_mask(gt_bytes[i], gh[i], gw[i]) if has_gt[i] else None)
            if weighted:
                confs.append(decode_prob_mask(conf_bytes[i], ph[i], pw[i]))
        metric.update(gts, preds, labels[keep], sample_ids=[ids[i] for i in keep],
                      **({"confidences": confs} if weighted else {}))

    def _legacy(self, metric: Any, labels: np.ndarray, probs: Any, has_pred: np.ndarray, has_gt: np.ndarray,
                stats: Any, ids: list[str]) -> None:
        """Tampered images without a predicted mask (honest mode: its ``mask_stats`` holds every
        pixel at code 0) or without a ground-truth mask follow the metric's recorded rules
        (:mod:`bench.metrics.legacy`)."""
        metric.update_stats(labels, probs, stats, self.values, sample_ids=ids, has_gt=has_gt, has_pred=has_pred)

    # -- results ----------------------------------------------------------------------------
    def state(self, name: str) -> Metric | str:
        """The fed state of metric ``name``, sorted by sample id (what :meth:`result` computes and
        bootstraps), or the reason the scorer skips it."""
        if name in self.skipped:
            return str(self.skipped[name].skipped)
        if name in self.pixel_skip:
            return self.pixel_skip[name]
        metric = self.metrics[name]
        if self.tasks[name] == "localization" and not self.any_pred_mask:
            return "the model produced no predicted masks"
        if self.tasks[name] == "explanation" and not self.any_text:
            return NOT_APPLICABLE
        if isinstance(metric, SampleMetric):
            metric.sort_by_sample_id()
        return metric

    def result(self, dataset: str, split: str) -> ResultEntry:
        """The group's entry: each metric sorted by sample id, computed, bootstrapped."""
        out: dict[str, MetricResult] = {}
        for spec in self.protocol.metrics:
            if spec.name in self.skipped:
                out[spec.name] = self.skipped[spec.name]
                continue
            state = self.state(spec.name)
            if isinstance(state, str):
                out[spec.name] = MetricResult(convention=self.metrics[spec.name].convention(), skipped=state)
                continue
            metric, task = state, self.tasks[spec.name]
            result = metric_result(metric, self.protocol)
            if task == "localization":
                result.values["n_no_gt_mask"] = MetricValue(value=float(self.n_no_gt_mask))
                result.values["n_no_pred_mask"] = MetricValue(value=float(self.n_no_pred_mask))
            elif task == "explanation" and self.mask_bytes_missing:
                result.convention["masks"] = "not stored (store_masks: stats): region consistency has no sample"
            out[spec.name] = result
        return ResultEntry(dataset=dataset, split=split, perturbation=self.pert, n=self.n, n_errors=self.n_errors,
                           errors=self.errors, adapter=_adapter_name(LabelSpace(self.probs_space),
                                                                      self.protocol.label_space), metrics=out)


def metric_from_rows(protocol: Protocol, name: str, rows: pa.Table,
                     params: dict[str, Any] | None = None) -> Metric | str:
    """The metric ``name`` of ``protocol`` fed with ``rows`` exactly as scoring feeds one group
    (same label-space adapters, error rows left out, localization from ``mask_stats``, or from
    the masks for a metric that needs the pixels), sorted by sample id; or the reason scoring
    skips it.

    ``rows``: winning store rows of one (dataset, split, perturbation) group, any order, any
    subset (e.g. the samples two runs share, for a paired bootstrap), with :data:`FEED_COLUMNS`
    and ``probs_space`` (and, for a metric that needs the pixels, the mask columns of
    :data:`PIXEL_COLUMNS` with ground-truth references resolved, as
    :meth:`~bench.evaluation.store.PredictionStore.read` gives them; without them that metric
    is skipped with the reason). ``params`` are merged over the protocol's parameters of the metric.
    The ``explanation`` metric also reads texts and mask bytes (:data:`TEXT_COLUMNS`): feed it from
    the store with :func:`bench.evaluation.scorer.stream_group_metric`.
    """
    scorer = GroupScorer(single_metric(protocol, name, params), NO_PERTURBATION,
                         rows.select(["sample_id", "error", "probs_space"]))
    scorer.update(rows.select([c for c in [*PIXEL_COLUMNS, CONFIDENCE_COLUMN]
                               if c in rows.column_names or c in FEED_COLUMNS]))
    return scorer.state(name)


NO_PERTURBATION = PerturbationInfo(key="", name="", params={}, label="")
"""The perturbation record of a group fed outside scoring (its entry is never written)."""


def single_metric(protocol: Protocol, name: str, params: dict[str, Any] | None = None) -> Protocol:
    """``protocol`` with only its metric ``name``, ``params`` merged over that metric's parameters."""
    spec = next((m for m in protocol.metrics if m.name == name), None)
    if spec is None:
        raise UserError(f"metric {name!r} is not in protocol {protocol.name!r}")
    return protocol.model_copy(update={"metrics": [spec.model_copy(update={"params": {**spec.params,
                                                                                      **(params or {})}})]})


def _explanation(metric: Any, rows: pa.Table) -> None:
    """Feed error-free rows to an ``explanation`` metric, :data:`EXPLANATION_CHUNK` at a time."""
    for start in range(0, rows.num_rows, EXPLANATION_CHUNK):
        chunk = rows.slice(start, EXPLANATION_CHUNK).to_pylist()
        predicted = [int(np.argmax(r["probs"])) if r["probs_space"] == LabelSpace.TERNARY.value and r["probs"] else -1
                     for r in chunk]
        pred_masks = [decode_prob_mask(r["pred_mask"], r["pred_mask_h"], r["pred_mask_w"]) if r["pred_mask"] else None
                      for r in chunk]
        gt_masks = [decode_bool_mask(r["gt_mask"], r["gt_mask_h"], r["gt_mask_w"]) if r["gt_mask"] else None
                    for r in chunk]
        metric.update([r["text"] for r in chunk], [reference_of(r["meta"]) for r in chunk],
                      [r["label"] for r in chunk], predicted, pred_masks, gt_masks,
                      sample_ids=[r["sample_id"] for r in chunk])


def _mask_bytes_missing(rows: pa.Table) -> bool:
    """Whether a row has a mask (its height is set) stored without its bytes (``store_masks: stats``)."""
    return any(pc.any(pc.and_(pc.is_valid(rows.column(f"{m}_h")), pc.is_null(rows.column(m)))).as_py() is True
               for m in ("pred_mask", "gt_mask"))


def reference_of(meta_json: str | None) -> str | None:
    """``meta["explanation"]`` of a stored row, or ``None``."""
    if not meta_json:
        return None
    value = json.loads(meta_json).get("explanation")
    return str(value) if value is not None else None


def _probs(column: pa.ChunkedArray, n: int) -> np.ndarray:
    """(N, K) float64 from a list<double> column whose rows all have K values."""
    arr = column.combine_chunks()
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    if n and (lengths != lengths[0]).any():
        raise UserError(f"stored probabilities have different lengths ({sorted(set(lengths.tolist()))})")
    flat = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np.float64)
    return flat.reshape(n, -1) if n else np.zeros((0, 1))


def _adapter_name(probs: LabelSpace, data: LabelSpace) -> str:
    if probs == data:
        return "none"
    if probs == LabelSpace.TERNARY:
        return "TernaryToBinary (p_fake = p_full_synthetic + p_tampered)"
    return "BinaryOnTernary (real correct iff predicted real; full_synthetic/tampered correct iff predicted fake)"


def metric_result(metric: Metric, protocol: Protocol | None) -> MetricResult:
    """Values (non-finite → None) with the protocol's bootstrap intervals and conventions."""
    values = metric.compute()
    cis: dict[str, tuple[float, float]] = {}
    boot = protocol.bootstrap if protocol is not None else None
    if boot is not None and boot.n > 0 and hasattr(metric, "headline_keys"):
        cis = bootstrap_ci(metric, n_resamples=boot.n, confidence=boot.confidence, seed=boot.seed)
    out = {k: MetricValue(value=_finite(v), ci=_ci(cis.get(k))) for k, v in values.items()}
    convention = dict(metric.convention())
    if cis:
        convention["ci"] = describe_bootstrap(boot.n, boot.confidence, boot.seed)  # type: ignore[union-attr]
    return MetricResult(convention=convention, values=out)


def _finite(v: Any) -> float | None:
    f = float(v)
    return f if np.isfinite(f) else None


def _ci(pair: Any) -> tuple[float, float] | None:
    if pair is None:
        return None
    lo, hi = float(pair[0]), float(pair[1])
    return (lo, hi) if np.isfinite(lo) and np.isfinite(hi) else None
