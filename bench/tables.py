"""Paper-style tables (SIDA Tables 2–5) rendered from results files only.

Layouts (values are percentages with one decimal; the best value of each column is bold in
Markdown and LaTeX; ``–`` marks a number that is undefined or not produced):

- ``detection`` (Table 2): Real / Fully synthetic / Tampered accuracy (= recall) and
  one-vs-rest F1, Overall accuracy and Overall F1 = ``macro_f1`` of ``ternary_detection``.
- ``localization`` (Table 3): pixel AUC, F1 and IoU of ``localization`` on tampered images.
- ``robustness`` (Table 4): one row per model × perturbation: detection ACC / F1 (as Table 2's
  overall) and localization AUC / F1 / IoU.
- ``cross_dataset`` (Table 5): Real / Fake / Overall accuracy and F1 of ``binary_detection``;
  Overall F1 = the mean of the real and fake F1 (macro).
- ``explanation`` (no paper table; docs/explanations.md): ROUGE-L, BLEU-1/2/4, chrF and CSS of
  ``explanation`` against the reference descriptions; parse rate and slot scores; class and
  region consistency. A model without text gets a note "not applicable" and dashes.
Rows come from the clean condition (perturbation ``none``) except in ``robustness``. Several
runs merge into one table, one row per model (and dataset, when runs cover more than one).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import DataRow, TableFormat, tabulate

from bench.errors import UserError
from bench.evaluation.protocol import CLEAN, TABLE_KINDS
from bench.evaluation.results import ResultEntry, ResultsFile

FORMATS = ("md", "latex", "csv")
EXTENSIONS = {"md": "md", "latex": "tex", "csv": "csv"}
TITLES = {"detection": "Table 2", "localization": "Table 3", "robustness": "Table 4", "cross_dataset": "Table 5",
          "explanation": "Explanation"}
DEFAULT_CAPTIONS = {
    "detection": "Detection: per-class accuracy (= recall) and one-vs-rest F1; overall accuracy and macro F1.",
    "localization": "Localization of tampered regions: pixel AUC, F1 and IoU.",
    "robustness": "Robustness: detection ACC/F1 and localization AUC/F1/IoU under each perturbation.",
    "cross_dataset": "Cross-dataset detection: real, fake and overall accuracy and F1.",
    "explanation": "Explanations: text scores against reference descriptions, slot scores and consistency.",
}

Getter = Callable[[ResultEntry], "float | None"]
DETECTION_KINDS = ("detection", "robustness", "cross_dataset")
"""Tables with detection columns: the only ones where a label-space adapter changes a number."""


def metric(name: str, key: str) -> Getter:
    def get(entry: ResultEntry) -> float | None:
        result = entry.metrics.get(name)
        value = result.values.get(key) if result is not None and result.skipped is None else None
        return value.value if value is not None else None
    return get


def mean_of(*getters: Getter) -> Getter:
    def get(entry: ResultEntry) -> float | None:
        values = [g(entry) for g in getters]
        return None if any(v is None for v in values) else sum(values) / len(values)  # type: ignore[arg-type]
    return get


def explanation_notes(label: str, entry: ResultEntry) -> list[str]:
    """Why a row of the explanation table has dashes: no text at all, or no CSS embedder."""
    result = entry.metrics.get("explanation")
    if result is None:
        return []
    if result.skipped is not None:
        return [f"{label}: {result.skipped}."]
    css = result.convention.get("css", {})
    status = css.get("status", "computed") if isinstance(css, dict) else "computed"
    return [] if status == "computed" else [f"{label}: CSS {status}."]


def _explanation(key: str) -> Getter:
    return metric("explanation", key)


@dataclass(frozen=True)
class Layout:
    """Column groups of a table: ``[(group name, [(column name, getter)])]``."""

    groups: list[tuple[str, list[tuple[str, Getter]]]]
    per_perturbation: bool = False
    notes: tuple[str, ...] = ()
    row_notes: Callable[[str, ResultEntry], list[str]] | None = None
    label_options: tuple[str, ...] = ()
    """Model options shown in the row label (``sida:tiny · text=generated``)."""

    @property
    def columns(self) -> list[tuple[str, str, Getter]]:
        return [(g, c, get) for g, cols in self.groups for c, get in cols]


LAYOUTS: dict[str, Layout] = {
    "detection": Layout([
        ("Real", [("Acc", metric("ternary_detection", "acc_real")), ("F1", metric("ternary_detection", "f1_real"))]),
        ("Fully synthetic", [("Acc", metric("ternary_detection", "acc_full_synthetic")),
                             ("F1", metric("ternary_detection", "f1_full_synthetic"))]),
        ("Tampered", [("Acc", metric("ternary_detection", "acc_tampered")),
                      ("F1", metric("ternary_detection", "f1_tampered"))]),
        ("Overall", [("Acc", metric("ternary_detection", "accuracy")), ("F1", metric("ternary_detection", "macro_f1"))]),
    ], notes=("Acc per class = recall (as SIDA's test.py); F1 one-vs-rest; Overall F1 = macro F1 "
              "(the paper's overall F1 is not the macro average of its per-class F1).",)),
    "localization": Layout([
        ("Tampered", [("AUC", metric("localization", "pixel_auc")), ("F1", metric("localization", "pixel_f1")),
                      ("IoU", metric("localization", "pixel_iou"))]),
    ]),
    "robustness": Layout([
        ("Detection", [("ACC", metric("ternary_detection", "accuracy")), ("F1", metric("ternary_detection", "macro_f1"))]),
        ("Localization", [("AUC", metric("localization", "pixel_auc")), ("F1", metric("localization", "pixel_f1")),
                          ("IoU", metric("localization", "pixel_iou"))]),
    ], per_perturbation=True, notes=("Detection F1 = macro F1 of the three classes.",)),
    "cross_dataset": Layout([
        ("Real", [("Acc", metric("binary_detection", "acc_real")), ("F1", metric("binary_detection", "f1_real"))]),
        ("Fake", [("Acc", metric("binary_detection", "acc_fake")), ("F1", metric("binary_detection", "f1_fake"))]),
        ("Overall", [("Acc", metric("binary_detection", "accuracy")),
                     ("F1", mean_of(metric("binary_detection", "f1_real"), metric("binary_detection", "f1_fake")))]),
    ], notes=("Overall F1 = mean of the real and fake F1 (macro).",)),
    "explanation": Layout([
        ("Text vs reference", [("ROUGE-L", _explanation("rouge_l")), ("BLEU-1", _explanation("bleu1")),
                               ("BLEU-2", _explanation("bleu2")), ("BLEU-4", _explanation("bleu4")),
                               ("chrF", _explanation("chrf")), ("CSS", _explanation("css"))]),
        ("Slots", [("Parsed", _explanation("parse_rate")), ("Type", _explanation("slot_type_acc")),
                   ("Areas", _explanation("slot_areas_rouge_l")), ("Content", _explanation("slot_content_rouge_l")),
                   ("Incons.", _explanation("slot_inconsistencies_rouge_l"))]),
        ("Consistency", [("Class=pred", _explanation("class_vs_pred")), ("Class=GT", _explanation("class_vs_gt")),
                         ("Region=pred", _explanation("region_vs_pred")), ("Region=GT", _explanation("region_vs_gt"))]),
    ], notes=("Text scores on samples with a reference description (others counted, not scored); BLEU and chrF "
              "are corpus scores; CSS = cosine of mean-pooled sentence embeddings (x100). Slot scores: ROUGE-L "
              "per slot where both texts parse. Consistency: rates over texts that state a class / name a region.",),
       row_notes=explanation_notes, label_options=("text",)),
}


@dataclass
class Table:
    """A rendered-ready table: ``rows`` are (label, values as fractions or None)."""

    kind: str
    caption: str
    layout: Layout
    rows: list[tuple[str, list[float | None]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def cells(self) -> list[list[str]]:
        return [[fmt(v) for v in values] for _, values in self.rows]

    def best(self) -> list[set[int]]:
        """Per column, the row indices holding the best (highest displayed) value."""
        out: list[set[int]] = []
        cells = self.cells()
        for j in range(len(self.layout.columns)):
            shown = [(float(c[j]), i) for i, c in enumerate(cells) if c[j] != "–"]
            top = max((v for v, _ in shown), default=None)
            out.append({i for v, i in shown if v == top} if len(self.rows) > 1 else set())
        return out


def fmt(value: float | None) -> str:
    return "–" if value is None else f"{100.0 * value:.1f}"


def build_table(kind: str, runs: Sequence[tuple[str, ResultsFile]]) -> Table:
    """Build ``kind`` from runs ``(run name, results)`` whose protocols list that table."""
    if kind not in LAYOUTS:
        raise UserError(f"Unknown table kind {kind!r}; known: {', '.join(TABLE_KINDS)}")
    layout = LAYOUTS[kind]
    captions = [t.get("caption", "") for _, r in runs for t in r.protocol.resolved.get("tables", []) if t.get("kind") == kind]
    table = Table(kind, next((c for c in captions if c), DEFAULT_CAPTIONS[kind]), layout, notes=list(layout.notes))
    datasets = {(e.dataset, e.split) for _, r in runs for e in r.entries}
    seen: dict[str, int] = {}
    for run_name, results in runs:
        for entry in results.entries:
            if not layout.per_perturbation and entry.perturbation.key != CLEAN:
                continue
            label = results.model_label
            options = results.model.get("options") or {}
            label += "".join(f" · {k}={options[k]}" for k in layout.label_options if k in options)
            if len(datasets) > 1:
                label += f" ({entry.dataset}/{entry.split})"
            if layout.per_perturbation and entry.perturbation.key != CLEAN:
                label += f" · {entry.perturbation.label}"
            seen[label] = seen.get(label, 0) + 1
            if seen[label] > 1:
                label += f" [{run_name}]"
            table.rows.append((label, [get(entry) for _, _, get in layout.columns]))
            if layout.row_notes is not None:
                table.notes.extend(n for n in layout.row_notes(label, entry) if n not in table.notes)
            if entry.n_errors:
                table.notes.append(f"{label}: {entry.n_errors} of {entry.n} samples failed (excluded from metrics).")
            note = f"{results.model_label}: scored with {entry.adapter}."
            if entry.adapter != "none" and kind in DETECTION_KINDS and note not in table.notes:
                table.notes.append(note)
    return table


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "·": r"$\cdot$", "–": "--"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def _joined(rows: Sequence[Sequence[str]], begin: str, sep: str, end: str) -> list[str]:
    """Rows as text lines through tabulate, cells unpadded and unparsed (numbers stay as formatted)."""
    if not rows:
        return []
    row = DataRow(begin, sep, end)
    layout = TableFormat(lineabove=None, linebelowheader=None, linebetweenrows=None, linebelow=None,
                         headerrow=row, datarow=row, padding=0, with_header_hide=None)
    return tabulate([list(r) for r in rows], tablefmt=layout, disable_numparse=True, stralign=None,
                    numalign=None).split("\n")


def render(table: Table, fmt_name: str) -> str:
    """The table as Markdown, LaTeX (booktabs) or CSV text.

    Markdown and LaTeX rows are joined by ``tabulate`` (unpadded pipe / ``&`` rows); the two-level
    LaTeX header (``\\multicolumn`` groups with ``\\cmidrule``), the caption and the notes are added
    around them. CSV is written by the standard ``csv`` module (tabulate has no CSV writer).
    """
    cells, best = table.cells(), table.best()
    columns = table.layout.columns
    if fmt_name == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["Method", *[f"{g} {c}" for g, c, _ in columns]])
        for (label, _), row in zip(table.rows, cells):
            writer.writerow([label, *["" if c == "–" else c for c in row]])
        return buf.getvalue()
    if fmt_name == "md":
        header = _joined([["Method", *[f"{g} {c}" for g, c, _ in columns]]], "| ", " | ", " |")
        body = _joined([[label, *[f"**{c}**" if i in best[j] else c for j, c in enumerate(row)]]
                        for i, ((label, _), row) in enumerate(zip(table.rows, cells))], "| ", " | ", " |")
        lines = [f"**{TITLES[table.kind]}.** {table.caption}", "", *header, "|---|" + "---:|" * len(columns), *body]
        lines += [""] + [f"- {n}" for n in table.notes] if table.notes else []
        return "\n".join(lines) + "\n"
    if fmt_name == "latex":
        groups = table.layout.groups
        head1 = " & ".join(rf"\multicolumn{{{len(cols)}}}{{c}}{{{_latex_escape(g)}}}" for g, cols in groups)
        spans, start = [], 2
        for _, cols in groups:
            spans.append(rf"\cmidrule(lr){{{start}-{start + len(cols) - 1}}}")
            start += len(cols)
        end = r" \\"
        lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_latex_escape(table.caption)}}}",
                 rf"\label{{tab:{table.kind}}}", rf"\begin{{tabular}}{{l{'c' * len(columns)}}}", r"\toprule",
                 rf"Method & {head1} \\", " ".join(spans),
                 *_joined([["", *[_latex_escape(c) for _, c, _ in columns]]], "", " & ", end), r"\midrule"]
        lines += _joined([[_latex_escape(label), *[rf"\textbf{{{c}}}" if i in best[j] else _latex_escape(c)
                                                   for j, c in enumerate(row)]]
                          for i, ((label, _), row) in enumerate(zip(table.rows, cells))], "", " & ", end)
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        lines += [f"% {n}" for n in table.notes]
        return "\n".join(lines) + "\n"
    raise UserError(f"Unknown table format {fmt_name!r}; use one of {', '.join(FORMATS)}")


def table_kinds(runs: Sequence[tuple[str, ResultsFile]]) -> list[str]:
    """The kinds the runs' protocols ask for, in paper order."""
    wanted = {t.get("kind") for _, r in runs for t in r.protocol.resolved.get("tables", [])}
    return [k for k in TABLE_KINDS if k in wanted]


def runs_for(kind: str, runs: Sequence[tuple[str, ResultsFile]]) -> list[tuple[str, ResultsFile]]:
    return [(n, r) for n, r in runs if any(t.get("kind") == kind for t in r.protocol.resolved.get("tables", []))]


def write_tables(results: Sequence[ResultsFile], out_dir: Path, kinds: Sequence[str] | None = None,
                 names: Sequence[str] | None = None, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``<kind>.{md,tex,csv}`` for each table kind into ``out_dir``; returns the paths."""
    runs = list(zip(names or [f"run{i + 1}" for i in range(len(results))], results))
    paths = []
    for kind in kinds or table_kinds(runs):
        table = build_table(kind, runs_for(kind, runs) or runs)
        out_dir.mkdir(parents=True, exist_ok=True)
        for f in formats:
            path = out_dir / f"{kind}.{EXTENSIONS[f]}"
            path.write_text(render(table, f), encoding="utf-8")
            paths.append(path)
    return paths
