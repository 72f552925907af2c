"""Scoring: a run directory's prediction store → metrics → :class:`~bench.evaluation.results.ResultsFile`.

The store is streamed (:meth:`~bench.evaluation.store.PredictionStore.iter_batches`): a first
pass reads the light columns of every shard (keys, ids, errors) to find the winning row of each
key; the second feeds batches of rows, shard by shard, into one
:class:`~bench.evaluation.metric_feed.GroupScorer` per (dataset, split, perturbation). Mask bytes
are not read by localization metrics (they use each row's per-image ``mask_stats``) except as below; the
``explanation`` metric reads texts and masks, in batches of :data:`TEXT_FEED_ROWS`. Memory is
bounded by one batch plus the metrics' per-sample rows, and the numbers equal one in-memory
pass over the rows sorted by sample id (whatever order, batch size or sharding wrote them).

Only when a metric needs the pixels (``border_exclusion``, ``pred_resize``, ``confidence_weighting``,
which also reads the stored confidence maps) does the second
pass read the masks too, one parquet row group at a time
(:meth:`~bench.evaluation.store.PredictionStore.iter_row_groups`, ground-truth references
resolved): memory is then one row group's masks, never the whole store.
Label-space adapters, error handling and the pixel path: :mod:`bench.evaluation.metric_feed`.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench.errors import UserError
from bench.evaluation.conditions import build_conditions
from bench.evaluation.metric_feed import (CONFIDENCE_COLUMN, NO_PERTURBATION, PIXEL_COLUMNS, GroupScorer, feed_columns,
                                          single_metric)
from bench.evaluation.protocol import MetricSpec, Protocol, load_protocol
from bench.evaluation.results import PerturbationInfo, ProtocolInfo, ResultEntry, ResultsFile
from bench.evaluation.run_record import complete_records, environment, git_commit, split_key
from bench.evaluation.store import PREDICTIONS_DIR, PredictionStore, StoreIndex
from bench.metrics.base import Metric

FEED_ROWS = 1024
"""Rows per batch fed to the metrics (columns without mask bytes: about 5 KB a row)."""
TEXT_FEED_ROWS = 64
"""Rows per batch when a metric reads texts and mask bytes (``explanation``)."""


def score_run(run_dir: str | Path, protocol: Protocol | str | Path | None = None,
              metric_options: dict[str, dict[str, Any]] | None = None) -> ResultsFile:
    """Score a finished run directory from its store and run records alone (no model).

    ``protocol``: score with another protocol (other metrics, conventions or a subset of the
    datasets and perturbations; default: the run's own). ``metric_options``: ``{metric name:
    {param: value}}`` merged over the protocol's metric parameters.
    """
    run_dir = Path(run_dir)
    records = complete_records(run_dir)
    first = records[0]
    if protocol is None:
        proto = Protocol.model_validate(first.protocol)
        source = first.protocol_source
    else:
        proto = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
        source = "" if isinstance(protocol, Protocol) else str(protocol)
    proto = with_metric_options(proto, metric_options or {})
    store = PredictionStore(run_dir / PREDICTIONS_DIR)
    index = store.index(["error", "probs_space"])
    perts = {c.key: PerturbationInfo(key=c.key, name=c.name, params=c.params, label=c.label)
             for c in build_conditions(proto)}
    wanted = {(d.name, d.split, k) for d in proto.datasets for k in perts}
    scorers = {key: GroupScorer(proto, perts[key[2]], rows) for key, rows in _groups(index.table) if key in wanted}
    _feed(store, index, proto, scorers)
    entries: list[ResultEntry] = []
    for spec in proto.datasets:
        for pert_key in perts:
            scorer = scorers.get((spec.name, spec.split, pert_key))
            if scorer is None:
                continue
            entry = scorer.result(spec.name, spec.split)
            entry.n_requested = first.requested.get(split_key(spec.name, spec.split))
            entry.dataset_info = first.dataset_info.get(split_key(spec.name, spec.split), {})
            entries.append(entry)
    if not entries:
        wanted_text = ", ".join(f"{d.name}/{d.split}" for d in proto.datasets)
        raise UserError(f"{run_dir}: no stored predictions for {wanted_text} under protocol {proto.name!r}'s "
                        "perturbations")
    run = {**first.run, "rows": index.table.num_rows, "shards": len(records),
           "elapsed_s": max((r.run.get("elapsed_s") or 0.0) for r in records)}
    return ResultsFile(
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        protocol=ProtocolInfo(name=proto.name, version=proto.version, source=source,
                              sha256=proto.sha256(), resolved=proto.to_dict()),
        model=first.model,
        environment={**(first.environment or environment(first.device)), "scored_with_git_commit": git_commit()},
        run=run,
        entries=entries,
    )


def _feed(store: PredictionStore, index: StoreIndex, protocol: Protocol,
          scorers: dict[tuple[str, str, str], GroupScorer]) -> None:
    """Stream the store's winning rows into the scorers of their groups (see the module docstring)."""
    columns = feed_columns(protocol)
    if any(s.needs_pixels for s in scorers.values()):
        extra = [CONFIDENCE_COLUMN] if any(s.needs_confidence for s in scorers.values()) else []
        batches = store.iter_row_groups(list(dict.fromkeys([*PIXEL_COLUMNS, *columns, *extra])), index)
    else:
        batches = store.iter_batches(columns, index, rows=TEXT_FEED_ROWS if "pred_mask" in columns else FEED_ROWS)
    for batch in batches:
        for key, rows in _groups(batch):
            if key in scorers:
                scorers[key].update(rows)


def stream_group_metric(store: PredictionStore, protocol: Protocol, name: str, group: tuple[str, str, str],
                        params: dict[str, Any] | None = None) -> Metric | str:
    """The metric ``name`` of ``protocol`` over one (dataset, split, perturbation) ``group`` of
    ``store``, streamed exactly as :func:`score_run` feeds it (texts and masks a batch at a time,
    so memory stays bounded), sorted by sample id; or the reason scoring skips it (no stored
    rows: ``"no predictions"``; no text at all: :data:`~bench.evaluation.metric_feed.NOT_APPLICABLE`).
    ``params`` are merged over the protocol's parameters of the metric."""
    single = single_metric(protocol, name, params)
    index = store.index(["error", "probs_space"])
    rows = dict(_groups(index.table)).get(group)
    if rows is None:
        return "no predictions"
    scorer = GroupScorer(single, NO_PERTURBATION, rows)
    _feed(store, index, single, {group: scorer})
    return scorer.state(name)


def _groups(table: pa.Table) -> list[tuple[tuple[str, str, str], pa.Table]]:
    """The rows of ``table`` split by (dataset, split, perturbation), in first-seen order."""
    if table.num_rows == 0:
        return []
    keys = list(zip(table.column("dataset").to_pylist(), table.column("split").to_pylist(),
                    table.column("perturbation").to_pylist()))
    positions: dict[tuple[str, str, str], list[int]] = {}
    for i, k in enumerate(keys):
        positions.setdefault(k, []).append(i)
    if len(positions) == 1:
        return [(keys[0], table)]
    return [(k, table.take(pa.array(np.asarray(v, dtype=np.int64)))) for k, v in positions.items()]


def with_metric_options(protocol: Protocol, options: dict[str, dict[str, Any]]) -> Protocol:
    """``protocol`` with ``{metric: {param: value}}`` merged over its metrics' parameters."""
    if not options:
        return protocol
    names = [m.name for m in protocol.metrics]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise UserError(f"--metric-option: metric {unknown[0]!r} is not in protocol {protocol.name!r} "
                        f"(metrics: {', '.join(names)})")
    metrics = [MetricSpec(name=m.name, params={**m.params, **options.get(m.name, {})}) for m in protocol.metrics]
    data = {**protocol.to_dict(), "metrics": [m.model_dump() for m in metrics]}
    from bench.plugins import create_metric

    for m in metrics:
        try:
            create_metric(m.name, **m.params)
        except (TypeError, ValueError, UserError) as exc:
            raise UserError(f"--metric-option {m.name}: {exc}") from None
    return Protocol.model_validate(data)
