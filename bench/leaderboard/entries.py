"""Leaderboard entries: a results folder (``results.json`` + its prediction store) and the
per-sample metric states rebuilt from the store, for intervals and paired tests.

Metrics are rebuilt exactly as :mod:`bench.scoring` builds them (rows with an error are left
out; label-space adapters as recorded; localization sees rows with a predicted mask and, for
tampered images, a ground-truth mask), so ``metric.compute()`` equals the numbers of
``results.json`` (tested).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench.adapters import TernaryToBinary
from bench.errors import UserError
from bench.metrics.base import SampleMetric
from bench.evaluation.protocol import Protocol
from bench.evaluation.results import RESULTS_FILE, ResultsFile, load_results
from bench.scoring import BINARY_ON_TERNARY_PARAMS, MASK_CHUNK
from bench.evaluation.store import PredictionStore, decode_bool_mask, decode_prob_mask, iter_groups
from bench.types import TAMPERED, LabelSpace

SITE_MARKER = ".sida-leaderboard"
"""The file that marks a built site (its copied results files are never read back as entries)."""

LIGHT_PARAMS: dict[str, dict[str, Any]] = {"binary_detection": {"per_group": False}}
"""Options that only drop keys no board column reads (per-group keys: the breakdown masks rows
instead), so that each resample is cheaper. They change no value the leaderboard shows."""


@dataclass
class Entry:
    """One scored method on one protocol (one results folder)."""

    slug: str
    label: str
    folder: Path
    results: ResultsFile
    protocol: Protocol
    results_bytes: bytes
    groups: dict[tuple[str, str, str], pa.Table] = field(default_factory=dict, repr=False)

    @property
    def model(self) -> dict[str, Any]:
        return self.results.model

    def rows(self, dataset: str, split: str, perturbation: str) -> pa.Table | None:
        return self.groups.get((dataset, split, perturbation))


def find_results(inputs: list[Path]) -> list[Path]:
    """Results folders under ``inputs`` (a folder holding ``results.json``, or any folder above
    such folders, searched recursively), sorted and de-duplicated."""
    found: set[Path] = set()
    for p in inputs:
        p = Path(p)
        if p.is_file() and p.name == RESULTS_FILE:
            found.add(p.parent.resolve())
        elif (p / RESULTS_FILE).is_file():
            found.add(p.resolve())
        elif p.is_dir():
            found.update(r.parent.resolve() for r in p.rglob(RESULTS_FILE) if not _inside_site(r, p))
        else:
            raise UserError(f"No results folder at {p}")
    if not found:
        raise UserError(f"No results.json under {', '.join(map(str, inputs))}")
    return sorted(found)


def _inside_site(path: Path, top: Path) -> bool:
    rel = path.parent.relative_to(top)
    return any((top / Path(*rel.parts[:i]) / SITE_MARKER).is_file() for i in range(len(rel.parts) + 1))


def load_entries(inputs: list[Path]) -> list[Entry]:
    """Every entry under ``inputs``, in a deterministic order, with unique slugs."""
    entries = []
    for folder in find_results(inputs):
        results = load_results(folder)
        try:
            protocol = Protocol.model_validate(results.protocol.resolved)
        except ValueError as exc:
            raise UserError(f"{folder / RESULTS_FILE}: the resolved protocol is not valid ({exc})") from None
        store = PredictionStore(folder / str(results.run.get("predictions") or "predictions"))
        if not store:
            raise UserError(f"{folder}: no prediction store; the leaderboard needs per-sample predictions "
                            "(re-run `sida-bench run` or `sida-bench submit score`)")
        data = (folder / RESULTS_FILE).read_bytes()
        entries.append(Entry("", results.model_label, folder, results, protocol, data,
                             dict(iter_groups(store.read()))))
    entries.sort(key=lambda e: (e.protocol.name, e.label, hashlib.sha256(e.results_bytes).hexdigest()))
    used: set[str] = set()
    for e in entries:
        base = slugify(f"{e.protocol.name}-{e.label}")
        slug, k = base, 2
        while slug in used:
            slug, k = f"{base}-{k}", k + 1
        used.add(slug)
        e.slug = slug
    return entries


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "entry"


def sample_set_hash(rows: pa.Table) -> str:
    ids = sorted(rows.column("sample_id").to_pylist())
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]


def rebuild_metric(name: str, rows: pa.Table, protocol: Protocol) -> SampleMetric | None:
    """The metric ``name`` of the protocol over ``rows`` (one group), or None where scoring
    skipped it (no BinaryOnTernary mode, no predicted masks)."""
    from bench.plugins import METRICS, create_metric

    spec = next((m for m in protocol.metrics if m.name == name), None)
    if spec is None:
        return None
    ok = pa.array([e is None for e in rows.column("error").to_pylist()])
    good = rows.filter(ok)
    spaces = set(good.column("probs_space").to_pylist())
    probs_space = spaces.pop() if len(spaces) == 1 else protocol.label_space.value
    params = {**spec.params, **LIGHT_PARAMS.get(name, {})}
    task = METRICS.get(name).task
    if task == "detection":
        if probs_space == LabelSpace.BINARY.value and protocol.label_space == LabelSpace.TERNARY:
            if name not in BINARY_ON_TERNARY_PARAMS:
                return None
            params.update(BINARY_ON_TERNARY_PARAMS[name])
        metric = create_metric(name, **params)
        labels = np.asarray(good.column("label").to_pylist(), dtype=np.int64)
        probs = np.asarray(good.column("probs").to_pylist(), dtype=np.float64).reshape(len(labels), -1)
        if probs_space == LabelSpace.TERNARY.value and protocol.label_space == LabelSpace.BINARY:
            probs = TernaryToBinary.apply(probs) if len(probs) else np.zeros((0, 2))
        metric.update(labels, probs, groups=good.column("group").to_pylist(),
                      sample_ids=good.column("sample_id").to_pylist())
    elif task == "localization":
        metric = create_metric(name, **params)
        has_pred = np.array([m is not None for m in good.column("pred_mask").to_pylist()], dtype=bool)
        if not has_pred.any():
            return None
        labels = np.asarray(good.column("label").to_pylist(), dtype=np.int64)
        has_gt = np.array([m is not None for m in good.column("gt_mask").to_pylist()], dtype=bool)
        tampered = getattr(metric, "tampered_label", TAMPERED)
        sub = good.filter(pa.array(has_pred & (has_gt | (labels != tampered))))
        for start in range(0, sub.num_rows, MASK_CHUNK):
            chunk = sub.slice(start, MASK_CHUNK).to_pylist()
            gts = [decode_bool_mask(r["gt_mask"], r["gt_mask_h"], r["gt_mask_w"]) if r["gt_mask"] is not None
                   else None for r in chunk]
            preds = [decode_prob_mask(r["pred_mask"], r["pred_mask_h"], r["pred_mask_w"]) for r in chunk]
            metric.update(gts, preds, [r["label"] for r in chunk], sample_ids=[r["sample_id"] for r in chunk])
    else:
        return None
    return metric if isinstance(metric, SampleMetric) else None
