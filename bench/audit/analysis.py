"""The numbers of a robustness audit, from a finished run directory (results.json + predictions).

Conventions:
- A protocol's conditions carry ``sweep`` (an axis title) and ``strength`` (the position on it),
  listed from the mildest to the most severe; conditions without a sweep (social-media
  pipelines, single points) are compared with clean one by one.
- Main metrics (:data:`MAIN_KEYS`): ternary/binary detection accuracy or AUC, localization pixel F1,
  with the run's bootstrap intervals (results.json).
- Breaking point of a sweep: its first (mildest) strength whose value is below
  ``break_fraction × clean``; ``None`` when the sweep never gets there.
- Paired comparison (detection metrics): :func:`bench.evaluation.bootstrap.paired_bootstrap` of
  ``condition − clean`` on the images that have an error-free prediction in both.
- Verdict of one prediction, as the protocol's detection metric decides: on a ternary protocol
  with ternary probabilities "fake" when the argmax is not real; otherwise "fake" when
  P(fake) >= 0.5 (binary probabilities: p[1]; ternary ones on a binary protocol: 1 - p[0],
  :class:`~bench.adapters.TernaryToBinary`). A flip is a verdict that differs from clean's on the
  same image; ``to_fake`` counts images judged real on clean and fake when degraded, ``to_real``
  the reverse, per true class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench.errors import UserError
from bench.evaluation.bootstrap import paired_bootstrap
from bench.evaluation.conditions import Condition, build_conditions
from bench.evaluation.metric_feed import metric_from_rows
from bench.evaluation.protocol import CLEAN, PerturbationSpec, Protocol
from bench.evaluation.results import RESULTS_FILE, ResultEntry, ResultsFile, load_results
from bench.evaluation.run_record import RANKS_DIR
from bench.evaluation.store import LIGHT_COLUMNS, PREDICTIONS_DIR, PredictionStore
from bench.progress import track
from bench.types import LabelSpace

MAIN_KEYS: dict[str, str] = {"ternary_detection": "accuracy", "binary_detection": "auc", "localization": "pixel_f1"}
"""The value of each metric that the audit follows (metric name → key)."""
DEFAULT_BREAK_FRACTION = 0.9
FAKE_THRESHOLD = 0.5


@dataclass(frozen=True)
class AuditCondition:
    """A protocol condition with its place in the audit (sweep and strength, or none)."""

    spec: PerturbationSpec
    condition: Condition

    @property
    def key(self) -> str:
        return self.condition.key

    @property
    def label(self) -> str:
        return self.condition.label


@dataclass
class AuditRun:
    """A finished run: its results, resolved protocol, store and conditions."""

    run_dir: Path
    results: ResultsFile
    protocol: Protocol
    store: PredictionStore
    conditions: list[AuditCondition]


def open_run(run_dir: str | Path) -> AuditRun:
    """Read ``run_dir/results.json`` and its prediction store (``run`` output or ``--from``)."""
    run_dir = Path(run_dir)
    if not (run_dir / RESULTS_FILE).is_file() and (run_dir / RANKS_DIR).is_dir():
        raise UserError(f"{run_dir}: the run is not scored yet (no {RESULTS_FILE}); score it first: "
                        f"sida-bench score {run_dir}")
    results = load_results(run_dir)
    try:
        protocol = Protocol.model_validate(results.protocol.resolved)
    except ValueError as exc:
        raise UserError(f"{run_dir}: the resolved protocol in results.json is not valid: {exc}") from None
    store = PredictionStore(run_dir / results.run.get("predictions", PREDICTIONS_DIR))
    if not store:
        raise UserError(f"{run_dir}: no predictions store ({store.root}); the audit needs per-image predictions")
    conditions = [AuditCondition(s, c) for s, c in zip(protocol.perturbations, build_conditions(protocol))]
    if CLEAN not in {c.key for c in conditions}:
        raise UserError(f"{run_dir}: protocol {protocol.name!r} has no clean condition (name: none) to compare with")
    return AuditRun(run_dir, results, protocol, store, conditions)


def main_metrics(protocol: Protocol, clean: ResultEntry) -> list[tuple[str, str]]:
    """(metric, key) pairs that the audit follows: those of :data:`MAIN_KEYS` scored on clean."""
    out = []
    for spec in protocol.metrics:
        key = MAIN_KEYS.get(spec.name)
        result = clean.metrics.get(spec.name)
        if key and result is not None and result.skipped is None and result.values.get(key) is not None \
                and result.values[key].value is not None:
            out.append((spec.name, key))
    return out


def _value(entry: ResultEntry | None, metric: str, key: str) -> dict[str, Any]:
    result = entry.metrics.get(metric) if entry is not None else None
    mv = result.values.get(key) if result is not None and result.skipped is None else None
    return {"value": mv.value if mv else None, "ci": list(mv.ci) if mv and mv.ci else None}


def verdicts(rows: pa.Table, label_space: LabelSpace) -> dict[str, tuple[int, bool]]:
    """sample id → (true label, judged fake) for the error-free rows of a protocol in
    ``label_space`` (see the module docstring)."""
    out = {}
    ternary = LabelSpace.TERNARY.value
    for sid, label, probs, space, error in zip(*(rows.column(c).to_pylist() for c in
                                                 ("sample_id", "label", "probs", "probs_space", "error"))):
        if error is None and probs:
            if space == ternary and label_space == LabelSpace.TERNARY:
                fake = int(np.argmax(probs)) != 0
            else:
                fake = (1.0 - probs[0] if space == ternary else probs[1]) >= FAKE_THRESHOLD
            out[sid] = (int(label), bool(fake))
    return out


def flips(clean: dict[str, tuple[int, bool]], degraded: dict[str, tuple[int, bool]],
          class_names: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per true class: images compared, verdicts turned to fake, turned to real."""
    out = {name: {"n": 0, "to_fake": 0, "to_real": 0} for name in class_names}
    for sid, (label, was_fake) in clean.items():
        if sid not in degraded:
            continue
        counts = out[class_names[label]]
        counts["n"] += 1
        now_fake = degraded[sid][1]
        counts["to_fake"] += int(now_fake and not was_fake)
        counts["to_real"] += int(was_fake and not now_fake)
    return out


def breaking_point(points: Sequence[dict[str, Any]], clean_value: float | None, fraction: float) -> dict[str, Any]:
    """The mildest point whose value is below ``fraction × clean`` (points listed mild → severe)."""
    limit = None if clean_value is None else fraction * clean_value
    for p in points:
        if limit is not None and p["value"] is not None and p["value"] < limit:
            return {"strength": p["strength"], "label": p["label"], "value": p["value"], "limit": limit}
    return {"strength": None, "label": None, "value": None, "limit": limit}


def _paired(rows_c: pa.Table, rows_d: pa.Table, protocol: Protocol, metric: str, key: str) -> dict[str, Any]:
    boot = protocol.bootstrap
    if boot.n == 0:
        return {"skipped": "the protocol's bootstrap.n is 0"}
    ok_c = {s for s, e in zip(rows_c.column("sample_id").to_pylist(), rows_c.column("error").to_pylist()) if e is None}
    ok_d = {s for s, e in zip(rows_d.column("sample_id").to_pylist(), rows_d.column("error").to_pylist()) if e is None}
    common = ok_c & ok_d
    if not common:
        return {"skipped": "no image has an error-free prediction in both conditions"}

    def filled(rows: pa.Table) -> Any:
        keep = pa.array([s in common for s in rows.column("sample_id").to_pylist()])
        return metric_from_rows(protocol, metric, rows.filter(keep))

    m_d, m_c = filled(rows_d), filled(rows_c)
    if isinstance(m_d, str) or isinstance(m_c, str):
        return {"skipped": m_d if isinstance(m_d, str) else m_c}
    res = paired_bootstrap(m_d, m_c, key, n_resamples=boot.n, seed=boot.seed, confidence=boot.confidence)
    return {"diff": _f(res["diff"]), "ci": [_f(v) for v in res["ci"]], "p_value": _f(res["p_value"]),
            "n": res["n"], "degraded": _f(res["a"]), "clean": _f(res["b"])}


def _f(v: Any) -> float | None:
    f = float(v)
    return f if np.isfinite(f) else None


def analyse(run: AuditRun, break_fraction: float = DEFAULT_BREAK_FRACTION) -> list[dict[str, Any]]:
    """One audit section per dataset split of the run (sweeps, conditions, paired, flips)."""
    if not 0.0 < break_fraction < 1.0:
        raise UserError(f"Expected `break_fraction` to be in (0, 1), but got {break_fraction!r}")
    groups = run.store.read_groups(LIGHT_COLUMNS)
    class_names = run.protocol.label_space.class_names
    sections = []
    for ds in run.protocol.datasets:
        entries = {e.perturbation.key: e for e in run.results.entries if (e.dataset, e.split) == (ds.name, ds.split)}
        if CLEAN not in entries:
            continue
        clean_rows = groups[(ds.name, ds.split, CLEAN)]
        clean_verdicts = verdicts(clean_rows, run.protocol.label_space)
        metrics = main_metrics(run.protocol, entries[CLEAN])
        conditions = []
        for c in track(run.conditions, f"auditing {ds.name}/{ds.split}", total=len(run.conditions)):
            entry = entries.get(c.key)
            rows = groups.get((ds.name, ds.split, c.key))
            item: dict[str, Any] = {
                "key": c.key, "label": c.label, "sweep": c.spec.sweep, "strength": c.spec.strength,
                "params": c.condition.params, "n": entry.n if entry else 0, "n_errors": entry.n_errors if entry else 0,
                "metrics": {f"{m}.{k}": _value(entry, m, k) for m, k in metrics},
            }
            if c.key != CLEAN and rows is not None:
                item["paired"] = {f"{m}.{k}": _paired(clean_rows, rows, run.protocol, m, k)
                                  for m, k in metrics if m != "localization"}
                item["flips"] = flips(clean_verdicts, verdicts(rows, run.protocol.label_space), class_names)
            conditions.append(item)
        sections.append({"dataset": ds.name, "split": ds.split, "metrics": [f"{m}.{k}" for m, k in metrics],
                         "conditions": conditions,
                         "sweeps": _sweeps(conditions, [f"{m}.{k}" for m, k in metrics], break_fraction)})
    if not sections:
        raise UserError(f"{run.run_dir}: results.json has no clean entry to audit against")
    return sections


def _sweeps(conditions: list[dict[str, Any]], metric_keys: list[str], fraction: float) -> list[dict[str, Any]]:
    clean = next(c for c in conditions if c["key"] == CLEAN)
    names: list[str] = []
    for c in conditions:
        if c["sweep"] is not None and c["sweep"] not in names:
            names.append(c["sweep"])
    out = []
    for name in names:
        members = [c for c in conditions if c["sweep"] == name]
        per_metric = {}
        for mk in metric_keys:
            points = [{"strength": c["strength"], "label": c["label"], "key": c["key"], **c["metrics"][mk]}
                      for c in members]
            per_metric[mk] = {"points": points,
                              "breaking_point": breaking_point(points, clean["metrics"][mk]["value"], fraction)}
        out.append({"name": name, "keys": [c["key"] for c in members], "metrics": per_metric})
    return out


def earliest_flips(run: AuditRun, section: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Up to ``n`` images whose verdict flips at the mildest strength of a sweep (round robin over
    sweeps; earliest first, then alternating true classes, then by sample id); each image at most once."""
    light = run.store.read_groups(["dataset", "split", "sample_id", "perturbation", "label", "probs",
                                   "probs_space", "error"])
    ds, split = section["dataset"], section["split"]
    space = run.protocol.label_space
    clean = verdicts(light[(ds, split, CLEAN)], space)
    queues = []
    for sweep in section["sweeps"]:
        first: dict[str, tuple[int, str]] = {}
        for i, key in enumerate(sweep["keys"]):
            rows = light.get((ds, split, key))
            for sid, (_, fake) in (verdicts(rows, space) if rows is not None else {}).items():
                if sid in clean and fake != clean[sid][1] and sid not in first:
                    first[sid] = (i, key)
        queues.append(_interleave_classes([(i, sid, key, sweep["name"]) for sid, (i, key) in first.items()], clean))
    picked: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(picked) < n and any(queues):
        for q in queues:
            while q and q[0][1] in seen:
                q.pop(0)
            if q and len(picked) < n:
                i, sid, key, sweep = q.pop(0)
                seen.add(sid)
                picked.append({"sample_id": sid, "sweep": sweep, "key": key, "rank": i,
                               "label": clean[sid][0], "clean_fake": clean[sid][1]})
    return picked


def _interleave_classes(items: list[tuple[int, str, str, str]], clean: dict[str, tuple[int, bool]]
                        ) -> list[tuple[int, str, str, str]]:
    """Sort (rank, sample id, key, sweep) by rank, then take the true classes in turn."""
    seen: dict[tuple[int, int], int] = {}
    keyed = []
    for item in sorted(items):
        group = (item[0], clean[item[1]][0])
        seen[group] = seen.get(group, -1) + 1
        keyed.append(((item[0], seen[group], group[1], item[1]), item))
    return [item for _, item in sorted(keyed)]


def compare_runs(run: AuditRun, other: AuditRun, sections: list[dict[str, Any]]) -> None:
    """Add ``section["compare"]``: each condition of ``run`` minus the same condition of ``other``
    (e.g. the same protocol with and without ``neutralise``, or another model), paired on the
    images that both runs scored without error, for the detection metrics of each section."""
    mine, theirs = (r.store.read_groups(LIGHT_COLUMNS) for r in (run, other))
    labels = {c.key: c.label for c in run.conditions}
    for s in sections:
        ds, split = s["dataset"], s["split"]
        rows = []
        for key, label in labels.items():
            a, b = mine.get((ds, split, key)), theirs.get((ds, split, key))
            if a is None or b is None:
                continue
            metrics = {}
            for mk in s["metrics"]:
                metric, value_key = mk.split(".", 1)
                if metric != "localization":
                    paired = _paired(b, a, run.protocol, metric, value_key)
                    if "diff" in paired:
                        paired["this"], paired["other"] = paired.pop("degraded"), paired.pop("clean")
                    metrics[mk] = paired
            rows.append({"key": key, "label": label, "paired": metrics})
        if not rows:
            raise UserError(f"{other.run_dir} has no condition of {ds}/{split} in common with {run.run_dir}")
        s["compare"] = {"other": str(other.run_dir), "other_model": other.results.model.get("spec"),
                        "other_neutralise": other.results.run.get("neutralise"),
                        "neutralise": run.results.run.get("neutralise"), "conditions": rows}
