"""Compare paper-style CSV tables with committed references within a tolerance set by sample size.

The rule (``Z`` = 4):

    |a − b| ≤ 100 · Z · sqrt(2 · p̄ (1 − p̄) / n) + 0.1,      p̄ = (a + b) / 200

for two values ``a`` and ``b`` in percent computed on ``n`` samples. Every number of the demo's
tables is a mean over ``n`` per-image values in [0, 1]: accuracies average 0/1 hits, the
localization columns average per-image AUC, F1 and IoU. Such a mean has variance at most
μ(1 − μ)/n (the Bhatia–Davis bound, equal to the binomial variance for 0/1 values), so the
difference of two independent reruns (another machine's kernels act like another training seed)
has standard deviation at most sqrt(2 p̄ (1 − p̄)/n); ``Z`` = 4 bounds it at p ≈ 6e-5 per number
(family-wise below 2 % over the few hundred numbers of the demo). The 0.1 covers the tables'
one-decimal rounding. Detection F1 (one-vs-rest per class, macro overall) has no binomial law; it
is held to the same bound at its class's (or the split's) size, a stated heuristic. ``n`` per
column group comes from ``sizes.json`` written beside the tables (:func:`table_sizes`); the
produced and reference sizes must agree, else the data differ and no tolerance applies.
Empty cells (undefined numbers) must be empty on both sides.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

Z = 4.0
ROUNDING = 0.1
SIZES_FILE = "sizes.json"

# Per table kind: column group → (metric, count key in that metric's values).
GROUP_COUNTS: dict[str, dict[str, tuple[str, str]]] = {
    "detection": {"Real": ("ternary_detection", "n_real"),
                  "Fully synthetic": ("ternary_detection", "n_full_synthetic"),
                  "Tampered": ("ternary_detection", "n_tampered"),
                  "Overall": ("ternary_detection", "n")},
    "localization": {"Tampered": ("localization", "n_images")},
    "robustness": {"Detection": ("ternary_detection", "n"), "Localization": ("localization", "n_images")},
    "cross_dataset": {"Real": ("binary_detection", "n_real"), "Fake": ("binary_detection", "n_fake"),
                      "Overall": ("binary_detection", "n")},
}

Table = dict[str, dict[str, "float | None"]]


def tolerance(a: float, b: float, n: int, z: float = Z) -> float:
    """The largest |a − b| (percentage points) two independent runs on ``n`` samples may differ by."""
    if n <= 0:
        raise ValueError(f"sample size must be positive, got {n}")
    p = min(max((a + b) / 200.0, 0.0), 1.0)
    return 100.0 * z * math.sqrt(2.0 * p * (1.0 - p) / n) + ROUNDING


def read_table(path: Path) -> tuple[list[str], Table]:
    """A table CSV as (column names, {row label: {column: value in percent or None}})."""
    with Path(path).open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][:1] != ["Method"]:
        raise ValueError(f"{path}: not a table CSV (first header cell must be 'Method')")
    columns = rows[0][1:]
    table: Table = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(columns) + 1:
            raise ValueError(f"{path}:{line}: {len(row)} cells, expected {len(columns) + 1}")
        table[row[0]] = {c: (float(v) if v != "" else None) for c, v in zip(columns, row[1:])}
    return columns, table


def group_of(column: str) -> str:
    """``"Fully synthetic Acc"`` → ``"Fully synthetic"`` (the last word names the statistic)."""
    return column.rsplit(" ", 1)[0]


def table_sizes(entries_by_kind: Mapping[str, Iterable[object]]) -> dict[str, dict[str, int]]:
    """Sample size per (table kind, column group): the largest count over the given result entries
    (``bench.evaluation.results.ResultEntry``) of that kind, i.e. the population a column is computed on."""
    sizes: dict[str, dict[str, int]] = {}
    for kind, entries in entries_by_kind.items():
        groups = GROUP_COUNTS.get(kind, {})
        found: dict[str, int] = {}
        for entry in entries:
            for group, (metric, key) in groups.items():
                result = entry.metrics.get(metric)  # type: ignore[attr-defined]
                value = result.values.get(key) if result is not None and result.skipped is None else None
                if value is not None and value.value is not None:
                    found[group] = max(found.get(group, 0), int(value.value))
        if found:
            sizes[kind] = dict(sorted(found.items()))
    return sizes


def write_sizes(sizes: Mapping[str, Mapping[str, int]], tables_dir: Path) -> Path:
    path = Path(tables_dir) / SIZES_FILE
    path.write_text(json.dumps(sizes, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


@dataclass(frozen=True)
class CellDiff:
    """One compared cell; ``ok`` is False when it is outside the tolerance or present on one side only."""

    kind: str
    row: str
    column: str
    produced: float | None
    reference: float | None
    n: int | None
    tol: float | None
    ok: bool

    def line(self) -> str:
        def show(v: float | None) -> str:
            return "–" if v is None else f"{v:.1f}"
        delta = (f"Δ {self.produced - self.reference:+.1f} (tol ±{self.tol:.1f}, n={self.n})"
                 if self.produced is not None and self.reference is not None and self.tol is not None
                 else "one side empty")
        mark = "  " if self.ok else "✗ "
        return f"{mark}{self.row} | {self.column}: {show(self.produced)} vs ref {show(self.reference)}  {delta}"


@dataclass
class Comparison:
    """Cell-by-cell comparison of produced tables with references; ``problems`` are structural."""

    cells: list[CellDiff]
    problems: list[str]

    @property
    def failures(self) -> list[CellDiff]:
        return [c for c in self.cells if not c.ok]

    @property
    def ok(self) -> bool:
        return not self.problems and not self.failures

    def report(self) -> str:
        """The full diff: structural problems, then every cell (failing ones marked ✗)."""
        lines = [f"{len(self.failures)} of {len(self.cells)} numbers outside the tolerance "
                 f"(|Δ| ≤ 100·{Z:g}·sqrt(2·p̄(1−p̄)/n) + {ROUNDING}); {len(self.problems)} structural problems"]
        lines += [f"✗ {p}" for p in self.problems]
        kind = None
        for c in self.cells:
            if c.kind != kind:
                kind = c.kind
                lines.append(f"[{kind}]")
            lines.append("  " + c.line())
        return "\n".join(lines)


def _selected(row: str, rows: Sequence[str] | None) -> bool:
    return rows is None or any(row == r or row.startswith(f"{r} · ") for r in rows)


def compare_tables(produced_dir: Path, reference_dir: Path, kinds: Sequence[str], z: float = Z,
                   rows: Sequence[str] | None = None) -> Comparison:
    """Compare ``produced_dir/<kind>.csv`` with ``reference_dir/<kind>.csv`` for each kind; with
    ``rows`` (model labels), only those models' rows (and their perturbation rows) are compared."""
    produced_dir, reference_dir = Path(produced_dir), Path(reference_dir)
    problems: list[str] = []
    sizes = json.loads((reference_dir / SIZES_FILE).read_text(encoding="utf-8"))
    produced_sizes = json.loads((produced_dir / SIZES_FILE).read_text(encoding="utf-8"))
    cells: list[CellDiff] = []
    for kind in kinds:
        cols_p, produced = read_table(produced_dir / f"{kind}.csv")
        cols_r, reference = read_table(reference_dir / f"{kind}.csv")
        if cols_p != cols_r:
            problems.append(f"{kind}: columns {cols_p} differ from the reference's {cols_r}")
            continue
        want = [r for r in reference if _selected(r, rows)]
        got = [r for r in produced if _selected(r, rows)]
        if got != want:
            problems.append(f"{kind}: rows {got} differ from the reference's {want}")
        bad_sizes: set[str] = set()
        for row in (r for r in want if r in produced):
            for column in cols_r:
                a, b = produced[row][column], reference[row][column]
                group = group_of(column)
                n, n_produced = sizes.get(kind, {}).get(group), produced_sizes.get(kind, {}).get(group)
                if a is None or b is None:
                    cells.append(CellDiff(kind, row, column, a, b, n, None, a is None and b is None))
                elif n is None or n != n_produced:
                    if group not in bad_sizes:
                        bad_sizes.add(group)
                        problems.append(f"{kind}/{group}: sample size {n_produced} differs from the reference's {n} "
                                        f"in {SIZES_FILE} (another data build; no tolerance applies)")
                else:
                    tol = tolerance(a, b, n, z)
                    cells.append(CellDiff(kind, row, column, a, b, n, tol, abs(a - b) <= tol + 1e-9))
    return Comparison(cells, problems)
