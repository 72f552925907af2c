"""Scoring a predictions file from a method that is not a plugin (``sida-bench score``).

File formats (by suffix): ``.csv``, ``.jsonl``, ``.parquet``. Columns:

- ``sample_id`` (required): the dataset's sample id (``sida-bench data`` lists them);
- probabilities, in the protocol's label space: ``prob_real``, ``prob_full_synthetic``,
  ``prob_tampered`` (ternary) or ``prob_real``, ``prob_fake`` (binary); a binary file may give
  ``prob_fake`` alone. A binary file on a ternary protocol is scored with the BinaryOnTernary rule;
- ``dataset``, ``split`` (optional when the protocol has one dataset), ``perturbation``
  (optional, a perturbation key of the protocol, default ``none``);
- ``mask_path`` (optional): a forgery-probability mask (PNG: 8-bit /255 or 16-bit /65535; or
  ``.npy`` float in [0, 1]) relative to the file's folder, at the image's resolution; a mask of
  another size (e.g. a 256×256 network output) is stored as given and scored only by a
  ``localization`` metric with ``pred_resize: bilinear`` or ``nearest`` (the default refuses it).

Every problem is a :class:`~bench.errors.UserError` naming the row (1-based data row; the CSV
line is one more): unknown or duplicate ids, missing rows, NaN or out-of-range probabilities.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import UserError
from bench.evaluation.conditions import Condition, build_conditions
from bench.evaluation.protocol import CLEAN, Protocol
from bench.evaluation.run_record import RunRecord, environment, split_key
from bench.evaluation.store import PREDICTIONS_DIR, PredictionStore, RunIdentity, prediction_row
from bench.jsonl import read_jsonl
from bench.model import file_sha256
from bench.perturbations.base import sample_rng
from bench.safe_text import printable
from bench.types import LabelSpace

PROB_TOLERANCE = 1e-3


def read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"Predictions file not found: {path}")
    readers = {".csv": lambda: pd.read_csv(path, dtype=object, keep_default_na=True,
                                           encoding_errors="surrogateescape"),
               ".jsonl": lambda: pd.DataFrame(read_jsonl(path, "predictions file"), dtype=object),
               ".parquet": lambda: pd.read_parquet(path)}
    if path.suffix.lower() not in readers:
        raise UserError(f"{path}: unsupported predictions format {path.suffix!r}; use .csv, .jsonl or .parquet")
    try:
        frame = readers[path.suffix.lower()]()
    except (ValueError, OSError) as exc:
        raise UserError(f"{path}: cannot read predictions ({exc})") from None
    if "sample_id" not in frame.columns:
        raise UserError(f"{path}: no 'sample_id' column (columns: {', '.join(map(str, frame.columns))})")
    # ids as the datasets write them: raw non-UTF-8 file-name bytes become \xNN (bench.safe_text)
    frame["sample_id"] = [printable(os.fsdecode(v) if isinstance(v, bytes) else str(v)) for v in frame["sample_id"]]
    return frame


def _probabilities(frame: pd.DataFrame, path: Path, space: LabelSpace) -> tuple[np.ndarray, str]:
    names = [f"prob_{c}" for c in space.class_names]
    if all(n in frame.columns for n in names):
        cols, probs_space = names, space.value
    elif "prob_fake" in frame.columns:
        cols, probs_space = [c for c in ("prob_real", "prob_fake") if c in frame.columns], LabelSpace.BINARY.value
    else:
        raise UserError(f"{path}: expected probability columns {', '.join(names)} (or prob_fake)")
    values = frame[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    for i, row in enumerate(values):
        for col, v in zip(cols, row):
            if not np.isfinite(v):
                raise UserError(f"{path}: row {i + 1}: {col} is NaN or not a number")
            if not 0.0 <= v <= 1.0:
                raise UserError(f"{path}: row {i + 1}: {col} = {v} is outside [0, 1]")
    if cols == ["prob_fake"]:
        values = np.c_[1.0 - values[:, 0], values[:, 0]]
    sums = values.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > PROB_TOLERANCE)
    if bad.size:
        raise UserError(f"{path}: row {bad[0] + 1}: probabilities sum to {sums[bad[0]]:.4f}, not 1")
    return values, probs_space


def _load_mask(path: Path, row: int, file: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"{file}: row {row}: mask_path {path} does not exist")
    from PIL import Image, UnidentifiedImageError

    try:
        if path.suffix.lower() == ".npy":
            mask = np.load(path, allow_pickle=False).astype(np.float64)
        else:
            with Image.open(path) as im:
                arr = np.asarray(im)
            scale = 65535.0 if arr.dtype == np.uint16 else 255.0
            mask = (arr[..., 0] if arr.ndim == 3 else arr).astype(np.float64) / scale
    except (OSError, ValueError, TypeError, UnidentifiedImageError) as exc:
        raise UserError(f"{file}: row {row}: cannot read mask {path} as a .npy array or an image ({exc})") from None
    if mask.ndim != 2 or not np.all(np.isfinite(mask)) or mask.min() < 0 or mask.max() > 1:
        raise UserError(f"{file}: row {row}: mask {path} must be a 2-D map of probabilities in [0, 1]")
    return mask


def import_predictions(path: Path, protocol: Protocol, out_dir: Path, data_roots: dict[str, Path] | None = None,
                       name: str | None = None) -> RunRecord:
    """Validate ``path`` against the protocol's datasets and write it into ``out_dir`` as a run
    (prediction store and a complete run record), ready for :func:`bench.evaluation.scorer.score_run`."""
    from bench.plugins import create_dataset

    frame = read_table(path)
    probs, probs_space = _probabilities(frame, path, protocol.label_space)
    conditions = {c.key: c for c in build_conditions(protocol)}
    specs = {(d.name, d.split): d for d in protocol.datasets}
    default_ds = next(iter(specs)) if len(specs) == 1 else None
    keys: list[tuple[str, str, str, str]] = []
    first: dict[tuple[str, str, str, str], int] = {}
    for i, rec in enumerate(frame.to_dict("records")):
        ds = (str(rec.get("dataset")), str(rec.get("split"))) if "dataset" in frame.columns else default_ds
        if ds is None or ds not in specs:
            raise UserError(f"{path}: row {i + 1}: dataset/split {ds} is not in protocol {protocol.name!r} "
                            f"({', '.join(f'{a}/{b}' for a, b in specs)}); add dataset and split columns")
        pert = str(rec.get("perturbation") or CLEAN) if "perturbation" in frame.columns else CLEAN
        if pert not in conditions:
            raise UserError(f"{path}: row {i + 1}: unknown perturbation {pert!r}; protocol keys: {', '.join(conditions)}")
        key = (*ds, str(rec["sample_id"]), pert)
        if key in first:
            raise UserError(f"{path}: row {i + 1}: duplicate prediction for sample_id {key[2]!r} "
                            f"({pert}; first at row {first[key] + 1})")
        first[key] = i
        keys.append(key)
    identity = RunIdentity(name or path.stem, file_sha256(path), "external", protocol.seed)
    store = PredictionStore(out_dir / PREDICTIONS_DIR, flush_every=512)
    if store:
        raise UserError(f"{out_dir} already holds predictions; choose a new --out")
    records = frame.to_dict("records")
    requested: dict[str, int] = {}
    dataset_info: dict[str, dict[str, Any]] = {}
    for (ds_name, split), spec in specs.items():
        dataset = create_dataset(ds_name, root=(data_roots or {}).get(ds_name, spec.root), split=split, **spec.options)
        requested[split_key(ds_name, split)] = len(dataset)
        dataset_info[split_key(ds_name, split)] = dataset.describe()
        wanted: dict[str, dict[str, int]] = {k[2]: {} for k in keys if k[:2] == (ds_name, split)}
        for k in keys:
            if k[:2] == (ds_name, split):
                wanted[k[2]][k[3]] = first[k]
        _check_ids_listed(path, dataset, ds_name, split, wanted, first)
        seen: set[str] = set()
        for sample in dataset.iter_samples():
            if sample.id not in wanted:
                continue
            seen.add(sample.id)
            missing = sorted(set(conditions) - set(wanted[sample.id]))
            if missing:
                raise UserError(f"{path}: sample_id {sample.id!r} ({ds_name}/{split}) has no row for {', '.join(missing)}")
            for pert_key, i in wanted[sample.id].items():
                store.add(_row(identity, conditions[pert_key], ds_name, split, sample, records[i], probs[i],
                               probs_space, i, path, protocol.store_masks))
        unknown = [s for s in wanted if s not in seen]
        if unknown:
            row = first[(ds_name, split, unknown[0], next(iter(wanted[unknown[0]])))] + 1
            hint = difflib.get_close_matches(unknown[0], list(seen) or [], n=1)
            raise UserError(f"{path}: row {row}: sample_id {unknown[0]!r} is not in {ds_name}/{split}"
                            + (f". Did you mean {hint[0]!r}?" if hint else ""))
        if len(seen) < len(dataset):
            raise UserError(f"{path}: {len(dataset) - len(seen)} samples of {ds_name}/{split} have no prediction "
                            f"(the file has {len(seen)} of {len(dataset)})")
    store.flush()
    info = {"name": identity.model, "spec": identity.model, "source": "predictions file", "file": str(path),
            "file_sha256": identity.weights_sha256, "label_space": probs_space}
    record = RunRecord(protocol=protocol.to_dict(), protocol_source="", model=info, device="none",
                       environment=environment("none"),
                       run={"seed": protocol.seed, "limit": None, "predictions": PREDICTIONS_DIR, "source": str(path)},
                       requested=requested, dataset_info=dataset_info, complete=True)
    record.write(out_dir)
    return record


def _check_ids_listed(path: Path, dataset: Any, ds_name: str, split: str, wanted: dict[str, Any],
                      first: dict[tuple[str, str, str, str], int]) -> None:
    """Unknown or missing sample ids, found from the dataset's listing before any image is decoded
    (datasets without a cheap listing are checked while iterating)."""
    entries = getattr(dataset, "entries", None)
    if not isinstance(entries, list) or not all(hasattr(e, "id") for e in entries):
        return
    listed = [str(e.id) for e in entries]
    known = set(listed)
    unknown = [s for s in wanted if s not in known]
    if unknown:
        row = first[(ds_name, split, unknown[0], next(iter(wanted[unknown[0]])))] + 1
        hint = difflib.get_close_matches(unknown[0], listed, n=1)
        raise UserError(f"{path}: row {row}: sample_id {unknown[0]!r} is not in {ds_name}/{split}"
                        + (f". Did you mean {hint[0]!r}?" if hint else ""))
    if len(wanted) < len(known):
        missing = next(s for s in listed if s not in wanted)
        raise UserError(f"{path}: {len(known) - len(wanted)} samples of {ds_name}/{split} have no prediction "
                        f"(the file has {len(wanted)} of {len(known)}; first missing: {missing!r})")


def _row(identity: RunIdentity, cond: Condition, ds: str, split: str, sample: Any, rec: dict[str, Any],
         probs: np.ndarray, probs_space: str, i: int, path: Path, store_masks: str) -> dict[str, Any]:
    gt, size, error = sample.mask, None, sample.error
    if sample.image is not None and cond.perturbation is not None:
        image, gt = cond.perturbation(sample.image, sample.mask, sample_rng(identity.seed, sample.id, cond.key))
        size = image.shape[:2]
    elif sample.image is not None:
        size = sample.image.shape[:2]
    pred = None
    mask_path = rec.get("mask_path")
    if isinstance(mask_path, str) and mask_path:
        pred = _load_mask(path.parent / mask_path, i + 1, path)
    h, w = (int(size[0]), int(size[1])) if size is not None else (0, 0)
    text = rec.get("text") if isinstance(rec.get("text"), str) else None
    return prediction_row(identity, dataset=ds, split=split, sample_id=sample.id, perturbation=cond.key,
                          params_json=cond.params_json, label=sample.label, probs=probs, probs_space=probs_space,
                          size=(h, w), pred_mask=pred, gt_mask=gt, meta=sample.meta, error=error, text=text,
                          store_masks=store_masks)
