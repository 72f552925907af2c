"""What each leaderboard shows: the main (ranking) metric first, then the paper's columns
(the layouts of :mod:`bench.tables`). Every value is a fraction in [0, 1], higher is better.

A column reads one condition (the clean one, except robustness) and one metric key, or the
mean of several keys (``Overall F1`` of Table 5). The robustness board ranks by the mean
3-class accuracy over all the protocol's conditions.
"""

from __future__ import annotations

from dataclasses import dataclass

Values = dict[str, float]


@dataclass(frozen=True)
class Column:
    """``label`` of the column; ``metric`` name; ``keys`` whose mean is the value."""

    label: str
    metric: str
    keys: tuple[str, ...]

    def value(self, values: Values) -> float:
        got = [values.get(k, float("nan")) for k in self.keys]
        return float(sum(got) / len(got))


def col(label: str, metric: str, *keys: str) -> Column:
    return Column(label, metric, keys)


TD, BD, LOC = "ternary_detection", "binary_detection", "localization"

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
}
"""Columns per table kind; the first is the ranking metric."""

MAIN_DESCRIPTION: dict[str, str] = {
    "detection": "3-class accuracy (argmax) on the clean test split",
    "localization": "pixel F1 of forged pixels on tampered images (clean)",
    "cross_dataset": "real/fake accuracy (fake iff p_fake >= threshold) on the clean test split",
    "robustness": "mean 3-class accuracy over every condition of the protocol (clean and perturbed)",
}


def board_kind(table_kinds: list[str], metric_names: list[str]) -> str | None:
    """The layout of a protocol's board: its first table kind that has a board layout and that its
    metrics can fill (``explanation`` has no board yet: such a protocol ranks by another of its
    metrics, e.g. its ``ternary_detection``, or is listed as not ranked)."""
    for kind in table_kinds:
        if kind in BOARD_COLUMNS and BOARD_COLUMNS[kind][0].metric in metric_names:
            return kind
    for kind, cols in BOARD_COLUMNS.items():
        if cols[0].metric in metric_names and kind != "robustness":
            return kind
    return None
