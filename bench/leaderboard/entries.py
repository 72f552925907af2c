"""Leaderboard entries: a results folder (``results.json`` + its prediction store) and the
per-sample metric states rebuilt from the store, for intervals and paired tests.

Metrics are rebuilt by the scorer's own feed (:func:`bench.evaluation.metric_feed.metric_from_rows`:
rows with an error are left out; label-space adapters as recorded; localization from each row's
``mask_stats``, on rows with a predicted mask and, for tampered images, a ground-truth mask), so
``metric.compute()`` equals the numbers of ``results.json`` (tested). Groups hold the store's
light columns (no mask bytes); the entry page reads the few masks it draws from ``Entry.store``,
and the ``explanation`` metric (texts and masks) is streamed from it (:func:`rebuild_streamed`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from bench.errors import UserError
from bench.evaluation.metric_feed import metric_from_rows
from bench.evaluation.protocol import Protocol
from bench.evaluation.results import RESULTS_FILE, ResultsFile, load_results
from bench.evaluation.scorer import stream_group_metric
from bench.evaluation.store import LIGHT_COLUMNS, PREDICTIONS_DIR, PredictionStore
from bench.metrics.base import SampleMetric

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
    store: PredictionStore
    groups: dict[tuple[str, str, str], pa.Table] = field(default_factory=dict, repr=False)
    """(dataset, split, perturbation) → the winning rows' :data:`~bench.evaluation.store.LIGHT_COLUMNS`,
    sorted by sample id."""

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
        store = PredictionStore(folder / str(results.run.get("predictions") or PREDICTIONS_DIR))
        if not store:
            raise UserError(f"{folder}: no prediction store; the leaderboard needs per-sample predictions "
                            "(re-run `sida-bench run` or `sida-bench submit score`)")
        data = (folder / RESULTS_FILE).read_bytes()
        entries.append(Entry("", results.model_label, folder, results, protocol, data, store,
                             store.read_groups(LIGHT_COLUMNS)))
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


def rebuild_streamed(entry: Entry, name: str, group: tuple[str, str, str]) -> SampleMetric | str | None:
    """The metric ``name`` of the entry's protocol over one (dataset, split, perturbation) group,
    streamed from the entry's store with every column scoring reads (texts and mask bytes: the
    ``explanation`` metric), so it equals ``results.json``; or the reason scoring skips it (e.g.
    :data:`~bench.evaluation.metric_feed.NOT_APPLICABLE`); None when the protocol lacks it."""
    if not any(m.name == name for m in entry.protocol.metrics):
        return None
    metric = stream_group_metric(entry.store, entry.protocol, name, group, LIGHT_PARAMS.get(name))
    return metric if isinstance(metric, (SampleMetric, str)) else None


def rebuild_metric(name: str, rows: pa.Table, protocol: Protocol) -> SampleMetric | None:
    """The metric ``name`` of the protocol over ``rows`` (one group's light columns), or None
    where scoring skipped it (not in the protocol, no BinaryOnTernary mode, no predicted masks)."""
    if not any(m.name == name for m in protocol.metrics):
        return None
    metric = metric_from_rows(protocol, name, rows, LIGHT_PARAMS.get(name))
    return metric if isinstance(metric, SampleMetric) else None
