"""The runner: protocol × model → prediction store and run record (no scoring).

Path of one image (DESIGN.md): dataset decode (once per model for the whole perturbation grid)
→ perturbation (rng from ``sample_rng(protocol seed, sample id, perturbation key)``, mask
co-transformed) → the model's input policy (``model.preprocess``, in loader workers) →
``model.predict_preprocessed`` in batches → one store row per (sample, perturbation).
A run may be split across processes (:mod:`bench.evaluation.sharding`): each predicts the samples
it owns into the same folder. The scorer (:mod:`bench.evaluation.scorer`) reads the store only,
sorted by sample id, so the numbers do not depend on batch size, workers, order or sharding; the
CLI composes run → score.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from bench.adapters import LocalizerAsDetector
from bench.datasets.base import Dataset
from bench.errors import ImageSizeError, UserError
from bench.evaluation.conditions import Condition, build_conditions
from bench.evaluation.protocol import Protocol, load_protocol
from bench.evaluation.run_record import RunRecord, environment, read_records, split_key
from bench.evaluation.sharding import Shard
from bench.evaluation.store import PREDICTIONS_DIR, PredictionStore, RunIdentity, policy_hash, prediction_row, row_key
from bench.model import Capability, Detector
from bench.perturbations.base import sample_rng
from bench.progress import make_progress
from bench.types import Prediction, Sample


@dataclass
class Variant:
    """One (sample, condition) pair after perturbation and preprocessing (made in a worker)."""

    sample_id: str
    condition: str
    label: int
    item: Any
    size: tuple[int, int]
    gt_mask: np.ndarray | None
    meta: dict[str, Any]
    error: str | None = None


@dataclass
class Split:
    """A dataset split to evaluate, with the ids to skip and the conditions still missing per id."""

    spec_name: str
    dataset: Dataset
    skip_ids: set[str] = field(default_factory=set)
    missing: dict[str, set[str]] = field(default_factory=dict)
    limit_ids: list[str] | None = None
    fallback_limit: int | None = None
    shard: Shard = field(default_factory=Shard)
    ids: list[str] | None = None


LIMIT_RULE = ("N samples of each split evenly spaced through the dataset's deterministic order "
              "(the first N where a dataset cannot list its ids without decoding)")


class _VariantStream(IterableDataset):
    """Yields the preprocessed variants of every sample of one split, sharded by loader worker."""

    def __init__(self, split: Split, conditions: Sequence[Condition], model: Detector, seed: int) -> None:
        self.split = split
        self.conditions = list(conditions)
        self.model = model
        self.seed = seed

    def __iter__(self) -> Iterator[Variant]:
        info = get_worker_info()
        shard, num_shards = (info.id, info.num_workers) if info is not None else (0, 1)
        samples = self.split.dataset.iter_samples(shard, num_shards, skip_ids=self.split.skip_ids)
        if self.split.fallback_limit is not None:
            samples = _first_n(samples, self.split.fallback_limit)
        for sample in samples:
            if sample.id in self.split.skip_ids or not self.split.shard.owns(sample.id):
                continue
            wanted = self.split.missing.get(sample.id)
            for cond in self.conditions:
                if wanted is None or cond.key in wanted:
                    yield self._variant(sample, cond)

    def _variant(self, sample: Sample, cond: Condition) -> Variant:
        meta = sample.meta
        if sample.error is not None or sample.image is None:
            size = tuple(meta.get("original_size") or (0, 0))
            return Variant(sample.id, cond.key, sample.label, None, size, None, meta, f"decode: {sample.error}")
        image, mask = sample.image, sample.mask
        try:
            if cond.neutralise is not None:
                image, mask = cond.neutralise(image, mask, sample_rng(self.seed, sample.id, "neutralise"))
            if cond.perturbation is not None:
                rng = sample_rng(self.seed, sample.id, cond.key)
                image, mask = cond.perturbation(image, mask, rng)
            item = self.model.preprocess(image)
        except Exception as exc:  # a per-sample failure is recorded, never raised
            size = (int(image.shape[0]), int(image.shape[1]))
            return Variant(sample.id, cond.key, sample.label, None, size, mask, meta,
                           f"{condition_text(cond)}: {_describe(exc)}")
        return Variant(sample.id, cond.key, sample.label, item, (int(image.shape[0]), int(image.shape[1])), mask, meta)


def _first_n(samples: Iterator[Sample], n: int) -> Iterator[Sample]:
    for i, sample in enumerate(samples):
        if i >= n:
            return
        yield sample


def condition_text(cond: Condition) -> str:
    """How a per-sample error names its condition: ``clean image`` or ``perturbation <key>``."""
    return "clean image" if cond.perturbation is None else f"perturbation {cond.key}"


def _describe(exc: BaseException) -> str:
    """An expected input problem (:class:`ImageSizeError`) reads as its message; others keep their type."""
    return str(exc) if isinstance(exc, ImageSizeError) else f"{type(exc).__name__}: {exc}"


def _collate(batch: list[Variant]) -> list[Variant]:
    return batch


def _predict(model: Detector, variants: Sequence[Variant]) -> list[Prediction]:
    """Call the model; ground-truth labels are passed only to a model that asks for them
    (``wants_labels``: an official teacher-forced evaluation mode, recorded in its options)."""
    extra = {"labels": [v.label for v in variants]} if model.wants_labels else {}
    return model.predict_preprocessed([v.item for v in variants], [v.size for v in variants], **extra)


def predict_batch(model: Detector, variants: Sequence[Variant]) -> list[Prediction]:
    """Predictions for the variants that have an item; a failing batch is retried one by one."""
    todo = [v for v in variants if v.error is None]
    preds: dict[int, Prediction] = {}
    if todo:
        try:
            out = _predict(model, todo)
            if len(out) != len(todo):
                raise RuntimeError(f"model returned {len(out)} predictions for {len(todo)} inputs")
            preds.update({id(v): p for v, p in zip(todo, out)})
        except Exception:  # isolate the failing item(s)
            for v in todo:
                try:
                    preds[id(v)] = _predict(model, [v])[0]
                except Exception as exc:  # recorded in the row, counted in results
                    preds[id(v)] = Prediction.failed(model.num_classes, f"model: {_describe(exc)}")
    checked_classes = None if detection_adapter(model) is not None else model.num_classes
    out = []
    for v in variants:
        pred = preds.get(id(v)) or Prediction.failed(model.num_classes, v.error or "no prediction")
        problem = pred.problem(checked_classes, v.size) if pred.error is None else None
        out.append(Prediction.failed(model.num_classes, f"model: {problem}") if problem else pred)
    return out


def detection_adapter(model: Detector) -> LocalizerAsDetector | None:
    """A localizer without its own detection output is scored through its max-pooled mask."""
    if Capability.DETECT not in model.capabilities and Capability.LOCALIZE in model.capabilities:
        return LocalizerAsDetector()
    return None


def make_row(run: RunIdentity, split: Split, cond: Condition, v: Variant, pred: Prediction,
             probs_space: str, store_masks: str = "full") -> dict[str, Any]:
    return prediction_row(
        run, dataset=split.spec_name, split=split.dataset.split, sample_id=v.sample_id, perturbation=cond.key,
        params_json=cond.params_json, label=v.label, probs=pred.probs, probs_space=probs_space, size=v.size,
        pred_mask=pred.mask, gt_mask=v.gt_mask, meta=v.meta, error=v.error or pred.error, text=pred.text,
        store_masks=store_masks, confidence=pred.confidence)


def run_protocol(
    protocol: Protocol | str | Path,
    model: Detector | str,
    out_dir: str | Path,
    *,
    weights: str | Path | None = None,
    device: str = "cpu",
    allow_pickle: bool = False,
    data_roots: dict[str, str | Path] | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    workers: int = 0,
    resume: bool = False,
    flush_every: int = 256,
    shard: Shard | None = None,
    model_options: dict[str, Any] | None = None,
) -> RunRecord:
    """Predict ``protocol`` with ``model`` into ``out_dir/predictions/`` (no scoring).

    Args:
        protocol: a :class:`Protocol`, a bundled protocol name or a YAML path.
        model: a :class:`Detector` instance or ``"NAME[:CONFIG]"`` (then ``weights``, ``device``,
            ``allow_pickle`` and ``model_options`` are used to create it, after the datasets are listed).
        data_roots: ``{dataset name: folder}``, overriding a protocol's ``root``.
        limit: evaluate only ``limit`` samples of each split (:data:`LIMIT_RULE`).
        batch_size, workers: inference batch size and DataLoader workers (0 = in process).
        resume: continue a run in ``out_dir`` (stored rows are skipped before decoding).
        flush_every: rows per parquet shard (the most a killed run loses).
        shard: predict only the samples of this shard (:mod:`bench.evaluation.sharding`); every
            shard of a run writes into the same ``out_dir``, with or without ``resume``.
    Returns the completed run record, also written to ``out_dir/ranks/`` (score it with
    :func:`bench.evaluation.scorer.score_run`; the CLI composes the two).
    """
    from bench.plugins import create_model

    started = time.time()
    proto = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    source = "" if isinstance(protocol, Protocol) else str(protocol)
    if batch_size < 1 or workers < 0 or (limit is not None and limit < 1):
        raise UserError("Expected batch_size >= 1, workers >= 0 and limit >= 1")
    shard = shard or Shard()
    out = Path(out_dir)
    store = PredictionStore(out / PREDICTIONS_DIR, flush_every=flush_every, writer=f"r{shard.index}of{shard.count}")
    # cheap checks first: a wrong data root or split fails before a (possibly 27 GB) model is loaded
    datasets = [_open_dataset(spec, proto, data_roots or {}) for spec in proto.datasets]
    conditions = build_conditions(proto)
    if isinstance(model, str):
        model = create_model(model, weights=weights, device=device, allow_pickle=allow_pickle, **(model_options or {}))
    describe = model.describe()
    run = RunIdentity(f"{model.name}:{model.config_name}", model.weights_sha256, policy_hash(describe), proto.seed)
    identity = {"model": run.model, "weights_sha256": run.weights_sha256, "policy_hash": run.policy_hash,
                "seed": run.seed, "protocol_sha256": proto.sha256()}
    _check_run_dir(out, store, identity, shard, resume)
    stored = store.stored_keys() if store else set()
    splits = [_open_split(spec, dataset, limit, run, conditions, stored, shard)
              for spec, dataset in zip(proto.datasets, datasets)]
    adapter = detection_adapter(model)
    probs_space = "binary" if adapter is not None else model.label_space.value
    model_info = {**describe, "spec": run.model, "policy_hash": run.policy_hash,
                  "adapters": {"detection": "LocalizerAsDetector (p_fake = max of the predicted mask)"}
                  if adapter else {}}
    record = RunRecord(
        protocol=proto.to_dict(), protocol_source=source, model=model_info, device=str(model.device),
        shard=(shard.index, shard.count), identity=identity, environment=environment(str(model.device)),
        run={"seed": proto.seed, "limit": limit, "limit_rule": LIMIT_RULE if limit else None,
             "neutralise": proto.neutralise.model_dump() if proto.neutralise else None,
             "batch_size": batch_size, "workers": workers, "resumed": resume, "flush_every": flush_every,
             "predictions": PREDICTIONS_DIR},
        requested={split_key(s.spec_name, s.dataset.split): _requested(s, limit) for s in splits},
        dataset_info={split_key(s.spec_name, s.dataset.split): s.dataset.describe() for s in splits},
    )
    record.write(out)
    total = sum(_pending(s, limit, conditions) for s in splits)
    with make_progress() as bar:
        task = bar.add_task(f"{model.name} × {proto.name}", total=total)
        for split in splits:
            stream = _VariantStream(split, conditions, model, proto.seed)
            loader = DataLoader(stream, batch_size=batch_size, num_workers=workers, collate_fn=_collate,
                                multiprocessing_context="fork" if workers else None)
            by_key = {c.key: c for c in conditions}
            for batch in loader:
                for v, pred in zip(batch, predict_batch(model, batch)):
                    if adapter is not None and pred.error is None:
                        pred = adapter(pred)
                    store.add(make_row(run, split, by_key[v.condition], v, pred, probs_space, proto.store_masks))
                bar.advance(task, len(batch))
    store.flush()
    record.run["elapsed_s"] = round(time.time() - started, 3)
    record.complete = True
    record.write(out)
    return record


def _check_run_dir(out: Path, store: PredictionStore, identity: dict[str, Any], shard: Shard, resume: bool) -> None:
    """Refuse to mix runs: another model or protocol in ``out``, or this shard's work again without resume."""
    records = read_records(out)
    for rec in records:
        if rec.identity and rec.identity != identity:
            diff = sorted(k for k in identity if rec.identity.get(k) != identity[k])
            raise UserError(f"{out} holds a run of another model or protocol ({', '.join(diff)} differ); "
                            "choose a new --out")
    if resume:
        return
    own = any(tuple(r.shard) == (shard.index, shard.count) for r in records)
    other_k = any(r.shard[1] != shard.count for r in records)
    if own or other_k or (shard.count == 1 and store):
        raise UserError(f"{out} already holds predictions; pass --resume to continue, or choose a new --out")


def check_data_roots(proto: Protocol, data_roots: Mapping[str, Any]) -> None:
    """A ``--data-root`` for a dataset the protocol does not use is a mistake (a typo would silently
    leave the protocol's own root in use); the CLI checks it, library callers may share one mapping."""
    used = [d.name for d in proto.datasets]
    unknown = sorted(set(data_roots) - set(used))
    if unknown:
        raise UserError(f"--data-root names {', '.join(map(repr, unknown))}, which protocol {proto.name!r} does not "
                        f"use; its datasets: {', '.join(used)}")


def _open_dataset(spec: Any, proto: Protocol, data_roots: dict[str, str | Path]) -> Dataset:
    """Create and list one dataset of the protocol (no decoding); label space checked."""
    from bench.plugins import create_dataset

    root = data_roots.get(spec.name, spec.root)
    dataset = create_dataset(spec.name, root=root, split=spec.split, **spec.options)
    if dataset.label_space.value != proto.label_space.value:
        raise UserError(
            f"Protocol {proto.name!r} is {proto.label_space.value} but dataset {spec.name!r} is {dataset.label_space.value}"
        )
    len(dataset)  # lists the split: a missing folder or split is reported now
    return dataset


def _open_split(spec: Any, dataset: Dataset, limit: int | None, run: RunIdentity, conditions: Sequence[Condition],
                stored: set[str], shard: Shard) -> Split:
    split = Split(spec.name, dataset, shard=shard)
    ids = _ordered_ids(dataset)
    if limit is not None and ids is None:
        split.fallback_limit = limit
    if ids is not None and limit is not None:
        split.limit_ids = spread_subset(ids, limit)
        split.skip_ids |= set(ids) - set(split.limit_ids)
    candidates = split.limit_ids if split.limit_ids is not None else ids
    if candidates is not None:
        split.ids = [sid for sid in candidates if shard.owns(sid)]
        split.skip_ids |= set(candidates) - set(split.ids)
    if stored:
        keys_of = {c.key: c for c in conditions}
        for sid in split.ids or []:
            missing = {k for k, c in keys_of.items()
                       if row_key(run, spec.name, dataset.split, sid, k, c.params_json) not in stored}
            if not missing:
                split.skip_ids.add(sid)
            elif len(missing) < len(conditions):
                split.missing[sid] = missing
    return split


def spread_subset(ids: Sequence[str], limit: int) -> list[str]:
    """``limit`` ids evenly spaced through ``ids`` (positions ``floor(i * len / limit)``).

    SID-Set-style listings are ordered by class, so the first N would hold one class only;
    an even spread keeps every class (and source) in proportion, deterministically.
    """
    n = len(ids)
    if limit >= n:
        return list(ids)
    return [ids[(i * n) // limit] for i in range(limit)]


def _ordered_ids(dataset: Dataset) -> list[str] | None:
    """Sample ids in the dataset's order without decoding, when the plugin lists entries."""
    entries = getattr(dataset, "entries", None)
    if isinstance(entries, list) and all(hasattr(e, "id") for e in entries):
        return [str(e.id) for e in entries]
    return None


def _requested(split: Split, limit: int | None) -> int:
    n = len(split.dataset)
    return min(n, limit) if limit is not None else n


def _pending(split: Split, limit: int | None, conditions: Sequence[Condition]) -> int:
    """Variants still to predict in this shard (an estimate where ids cannot be listed)."""
    if split.ids is None:
        return -(-_requested(split, limit) * len(conditions) // split.shard.count)
    return sum(len(split.missing.get(sid, conditions)) for sid in split.ids if sid not in split.skip_ids)
