"""Figures of a run, as PNG files (matplotlib, Agg backend): every axis labelled, every
figure titled, a legend wherever several curves share axes.

The functions take plain arrays, so they do not depend on where the numbers come from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

DPI = 120


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return path


def roc_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """ROC curves, one per model: ``{label: (y_true in {0,1}, score for class 1)}``."""
    fig, ax = plt.subplots(figsize=(5.2, 5))
    for label, (y, score) in curves.items():
        y = np.asarray(y)
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, score)
        ax.plot(fpr, tpr, label=f"{label} (AUC {roc_auc_score(y, score):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    ax.set_xlabel("False positive rate (real called fake)")
    ax.set_ylabel("True positive rate (fake called fake)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def robustness_curves(
    series: Mapping[str, Sequence[tuple[str, float]]], path: Path, title: str, ylabel: str
) -> Path:
    """A metric against perturbation, one line per model: ``{model: [(condition, value), ...]}``.

    Conditions are placed in the order given (e.g. clean, JPEG 80, JPEG 70, ...).
    """
    fig, ax = plt.subplots(figsize=(7, 4.2))
    conditions: list[str] = []
    for points in series.values():
        for cond, _ in points:
            if cond not in conditions:
                conditions.append(cond)
    x = {c: i for i, c in enumerate(conditions)}
    for label, points in series.items():
        xs = [x[c] for c, _ in points]
        ax.plot(xs, [v for _, v in points], marker="o", label=label)
    ax.set_xticks(range(len(conditions)))
    ax.set_xticklabels(conditions, rotation=30, ha="right")
    ax.set_xlabel("Perturbation")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def confusion_matrix_plot(cm: np.ndarray, true_names: Sequence[str], pred_names: Sequence[str], path: Path,
                          title: str) -> Path:
    """A confusion matrix (rows = true class, columns = predicted class), counts and row %.

    Rows and columns may differ (a binary model scored on ternary data: 3 × 2).
    """
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(3.2 + 1.3 * cm.shape[1], 1.4 + 1.2 * cm.shape[0]))
    im = ax.imshow(frac, vmin=0, vmax=1, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{int(cm[i, j])}\n{100 * frac[i, j]:.0f}%", ha="center", va="center",
                    color="white" if frac[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(cm.shape[1]))
    ax.set_xticklabels(list(pred_names), rotation=20)
    ax.set_yticks(range(cm.shape[0]))
    ax.set_yticklabels(list(true_names))
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    return _save(fig, path)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend red into ``image`` (uint8 H×W×3) where ``mask`` (bool or [0, 1] float) is set."""
    m = np.asarray(mask, dtype=np.float32)
    if m.dtype != np.bool_:
        m = (m > 0.5).astype(np.float32)
    red = np.zeros_like(image, dtype=np.float32)
    red[..., 0] = 255.0
    out = image.astype(np.float32) * (1 - alpha * m[..., None]) + red * (alpha * m[..., None])
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def mask_grid(
    rows: Sequence[tuple[str, np.ndarray, Sequence[tuple[str, np.ndarray | None]]]], path: Path, title: str,
    missing: str = "no mask",
) -> Path:
    """A grid of mask overlays: each row is (sample id, image, [(column title, mask or None)]);
    a None mask shows the ``missing`` text."""
    ncols = 1 + max(len(cols) for _, _, cols in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.2 * ncols, 2.3 * len(rows)), squeeze=False)
    for r, (sample_id, image, cols) in enumerate(rows):
        axes[r, 0].imshow(image)
        axes[r, 0].set_title(f"image\n{sample_id}", fontsize=7)
        for c, (name, mask) in enumerate(cols, start=1):
            ax = axes[r, c]
            if mask is None:
                ax.imshow(np.full_like(image, 235))
                ax.text(0.5, 0.5, missing, ha="center", va="center", transform=ax.transAxes, fontsize=8)
            else:
                ax.imshow(overlay(image, mask))
            ax.set_title(name, fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title)
    return _save(fig, path)


def roc_pr_curves(y: np.ndarray, score: np.ndarray, path: Path, title: str) -> Path:
    """ROC (left) and precision-recall (right) of one model: ``y`` in {0 real, 1 fake}, ``score`` = P(fake)."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y, score = np.asarray(y), np.asarray(score, dtype=np.float64)
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(9, 4.2))
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, score)
        roc.plot(fpr, tpr, label=f"AUC {roc_auc_score(y, score):.3f}")
        precision, recall, _ = precision_recall_curve(y, score)
        pr.step(recall, precision, where="post", label=f"AP {average_precision_score(y, score):.3f}")
        pr.axhline(float(np.mean(y)), linestyle="--", color="grey", linewidth=1, label="chance (fake rate)")
    else:
        for ax in (roc, pr):
            ax.text(0.5, 0.5, "one class only: no curve", ha="center", va="center", transform=ax.transAxes)
    roc.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    roc.set_xlabel("False positive rate (real called fake)")
    roc.set_ylabel("True positive rate (fake called fake)")
    roc.set_title("ROC")
    pr.set_xlabel("Recall (fake called fake)")
    pr.set_ylabel("Precision (of images called fake)")
    pr.set_title("Precision-recall")
    for ax in (roc, pr):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def sweep_panels(
    panels: Mapping[str, Sequence[tuple[float, float | None, tuple[float, float] | None]]],
    clean: tuple[float, tuple[float, float] | None], path: Path, title: str, ylabel: str,
    limit: float | None = None, breaks: Mapping[str, float | None] | None = None,
) -> Path:
    """One panel per sweep: ``{sweep: [(strength, value, (lo, hi) or None), ...]}`` drawn as a
    curve with its interval band, clean (value, interval) as a dashed line with its band,
    ``limit`` (the breaking threshold) dotted, and each sweep's breaking strength marked."""
    n = max(1, len(panels))
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, points) in zip(axes.ravel(), panels.items()):
        xs = np.array([p[0] for p in points], dtype=np.float64)
        ys = np.array([np.nan if p[1] is None else p[1] for p in points], dtype=np.float64)
        lo = np.array([np.nan if p[2] is None else p[2][0] for p in points], dtype=np.float64)
        hi = np.array([np.nan if p[2] is None else p[2][1] for p in points], dtype=np.float64)
        ax.axhline(clean[0], color="grey", linestyle="--", linewidth=1, label="clean")
        if clean[1] is not None:
            ax.axhspan(clean[1][0], clean[1][1], color="grey", alpha=0.15)
        if limit is not None:
            ax.axhline(limit, color="tab:red", linestyle=":", linewidth=1, label="breaking threshold")
        ax.fill_between(xs, lo, hi, alpha=0.25, color="tab:blue", label="95% interval")
        ax.plot(xs, ys, marker="o", color="tab:blue", label="degraded")
        brk = (breaks or {}).get(name)
        if brk is not None:
            ax.axvline(brk, color="tab:red", alpha=0.6, linewidth=1.5, label="breaking point")
        if len(xs) > 1 and xs[0] > xs[-1]:
            ax.invert_xaxis()  # mildest strength on the left
        ax.set_xlabel(name)
        ax.set_ylabel(ylabel)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    return _save(fig, path)


def paired_differences(labels: Sequence[str], diffs: Sequence[float | None],
                       cis: Sequence[tuple[float, float] | None], path: Path, title: str, xlabel: str) -> Path:
    """Degraded − clean differences with paired-bootstrap intervals, one row per condition."""
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.28 * len(labels)))
    y = np.arange(len(labels))[::-1]
    for yi, d, ci in zip(y, diffs, cis):
        if d is None:
            continue
        err = None if ci is None else [[d - ci[0]], [ci[1] - d]]
        worse, better = ci is not None and ci[1] < 0, ci is not None and ci[0] > 0
        color = "tab:red" if worse else "tab:green" if better else "tab:grey"
        ax.errorbar([d], [yi], xerr=err, fmt="o", color=color, capsize=3)
    ax.axvline(0, color="black", linewidth=1)
    ax.set_yticks(y)
    ax.set_yticklabels(list(labels), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Condition")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def flip_bars(labels: Sequence[str], series: Mapping[str, Sequence[float]], path: Path, title: str) -> Path:
    """Grouped horizontal bars: for each condition, one bar per series (e.g. "real → fake")."""
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.32 * len(labels)))
    y = np.arange(len(labels))[::-1]
    height = 0.8 / max(1, len(series))
    for k, (name, values) in enumerate(series.items()):
        ax.barh(y + (k - (len(series) - 1) / 2) * height, list(values), height=height, label=name)
    ax.set_yticks(y)
    ax.set_yticklabels(list(labels), fontsize=8)
    ax.set_xlabel("Fraction of the class's images whose verdict flips")
    ax.set_ylabel("Condition")
    top = max((v for values in series.values() for v in values), default=0.0)
    ax.set_xlim(0, min(1.0, max(0.05, 1.15 * top)))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def image_grid(rows: Sequence[tuple[str, Sequence[tuple[str, np.ndarray | None]]]], path: Path, title: str,
               missing: str = "not available") -> Path:
    """Rows of thumbnails: each row is (row title, [(caption, uint8 H×W×3 image or None)])."""
    ncols = max(len(cols) for _, cols in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.3 * ncols, 2.5 * len(rows)), squeeze=False)
    for r, (row_title, cols) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(cols):
                ax.axis("off")
                continue
            caption, image = cols[c]
            if image is None:
                ax.imshow(np.full((8, 8, 3), 235, np.uint8))
                ax.text(0.5, 0.5, missing, ha="center", va="center", transform=ax.transAxes, fontsize=7)
            else:
                ax.imshow(image, interpolation="nearest")
            ax.set_title(caption, fontsize=7)
        axes[r, 0].set_ylabel(row_title, fontsize=7)
    fig.suptitle(title, fontsize=9, wrap=True)
    return _save(fig, path)
