"""What each leaderboard shows: the main (ranking) metric first, then the paper's columns
(the layouts of :mod:`bench.tables`). Every value is a fraction in [0, 1] (CSS: a cosine in
[-1, 1]), higher is better, except the count columns (``count``: sample counts, no interval).

A column reads one condition (the clean one, except robustness) and one metric key, or the
mean of several keys (``Overall F1`` of Table 5). The robustness board ranks by the mean
3-class accuracy over all the protocol's conditions. The explanation board ranks by ROUGE-L
against the reference descriptions; a board whose samples have no reference ranks by class
consistency with the model's own verdict instead (``explanation_no_reference``; the reasons are in
docs/leaderboard.md). An ``optional`` column is left off a board on which no entry has a value
(CSS when the protocol's embedder was not found).
"""

from __future__ import annotations

from dataclasses import dataclass

Values = dict[str, float]


@dataclass(frozen=True)
class Column:
    """``label`` of the column; ``metric`` name; ``keys`` whose mean is the value; ``count``: a
    sample count (shown as an integer, no interval); ``optional``: dropped from a board on which
    no entry has a value."""

    label: str
    metric: str
    keys: tuple[str, ...]
    count: bool = False
    optional: bool = False

    def value(self, values: Values) -> float:
        got = [values.get(k, float("nan")) for k in self.keys]
        return float(sum(got) / len(got))


def col(label: str, metric: str, *keys: str, count: bool = False, optional: bool = False) -> Column:
    return Column(label, metric, keys, count, optional)


TD, BD, LOC, EXP = "ternary_detection", "binary_detection", "localization", "explanation"

_TEXT = [col("BLEU-1", EXP, "bleu1"), col("BLEU-2", EXP, "bleu2"), col("BLEU-4", EXP, "bleu4"),
         col("chrF", EXP, "chrf"), col("CSS", EXP, "css", optional=True)]
_SLOTS = [col("Parsed", EXP, "parse_rate"), col("Slot Type", EXP, "slot_type_acc"),
          col("Slot Areas", EXP, "slot_areas_rouge_l"), col("Slot Content", EXP, "slot_content_rouge_l"),
          col("Slot Incons.", EXP, "slot_inconsistencies_rouge_l"), col("Slot Aspects F1", EXP, "slot_aspects_f1")]
_CONSISTENCY = [col("Class = GT", EXP, "class_vs_gt"), col("Region = pred", EXP, "region_vs_pred"),
                col("Region = GT", EXP, "region_vs_gt")]
_COUNTS = [col("n scored", EXP, "n_scored", count=True), col("n no reference", EXP, "n_no_reference", count=True),
           col("n no text", EXP, "n_no_text", count=True), col("n unparseable", EXP, "n_unparseable", count=True),
           col("n class unstated", EXP, "n_class_unstated", count=True)]

BOARD_COLUMNS: dict[str, list[Column]] = {
    "detection": [col("Overall Acc", TD, "accuracy"), col("Overall F1 (macro)", TD, "macro_f1"),
                  col("Real Acc", TD, "acc_real"), col("Real F1", TD, "f1_real"),
                  col("Fully synthetic Acc", TD, "acc_full_synthetic"),
                  col("Fully synthetic F1", TD, "f1_full_synthetic"),
                  col("Tampered Acc", TD, "acc_tampered"), col("Tampered F1", TD, "f1_tampered")],
    "localization": [col("Pixel F1", LOC, "pixel_f1"), col("Pixel AUC", LOC, "pixel_auc"),
                     col("Pixel IoU", LOC, "pixel_iou")],
    "cross_dataset": [col("Overall Acc", BD, "accuracy"),
                      col("Overall F1 (mean of real, fake)", BD, "f1_real", "f1_fake"),
                      col("Real Acc", BD, "acc_real"), col("Real F1", BD, "f1_real"),
                      col("Fake Acc", BD, "acc_fake"), col("Fake F1", BD, "f1_fake"), col("AUC", BD, "auc")],
    "robustness": [col("Mean Acc over conditions", TD, "accuracy")],
    "explanation": [col("ROUGE-L", EXP, "rouge_l"), *_TEXT, *_SLOTS, col("Class = pred", EXP, "class_vs_pred"),
                    *_CONSISTENCY, *_COUNTS],
    "explanation_no_reference": [col("Class = pred", EXP, "class_vs_pred"), *_CONSISTENCY,
                                 col("Parsed", EXP, "parse_rate"), *_COUNTS],
}
"""Columns per table kind; the first is the ranking metric."""

MAIN_DESCRIPTION: dict[str, str] = {
    "detection": "3-class accuracy (argmax) on the clean test split",
    "localization": "pixel F1 of forged pixels on tampered images (clean)",
    "cross_dataset": "real/fake accuracy (fake iff p_fake >= threshold) on the clean test split",
    "robustness": "mean 3-class accuracy over every condition of the protocol (clean and perturbed)",
    "explanation": "mean per-sample ROUGE-L F-measure of the explanation (verdict clause removed) against the "
                   "reference description, over the clean images that have a reference",
    "explanation_no_reference": "share of the texts stating one class that state the model's own predicted class "
                                "(the split has no reference descriptions, so no text-vs-reference score)",
}

NO_REFERENCE_KIND = {"explanation": "explanation_no_reference"}
"""The layout a board takes when none of its samples has a reference description."""


def board_kind(table_kinds: list[str], metric_names: list[str]) -> str | None:
    """The layout of a protocol's board: its first table kind that has a board layout and that its
    metrics can fill; else a layout whose ranking metric the protocol has (robustness excepted),
    or None (the entry is listed as not ranked)."""
    for kind in table_kinds:
        if kind in BOARD_COLUMNS and BOARD_COLUMNS[kind][0].metric in metric_names:
            return kind
    for kind, cols in BOARD_COLUMNS.items():
        if cols[0].metric in metric_names and kind not in ("robustness", *NO_REFERENCE_KIND.values()):
            return kind
    return None
