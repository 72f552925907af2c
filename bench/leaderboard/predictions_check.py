"""Row-by-row checks of one predictions file against its protocol, collecting every problem.

The file format is the one ``sida-bench score`` reads (:mod:`bench.evaluation.predictions_import`); rows
are 1-based data rows (the CSV line is one more). Checked: columns, probabilities (number,
finite, in [0, 1], summing to 1 within ``PROB_TOLERANCE``), dataset / split / perturbation
values, duplicate and unknown sample ids, every (sample, condition) of the protocol present,
and masks (confined path, header size equal to the image's size under that condition, values
in [0, 1]). Paths in ``mask_path`` are relative to the predictions file's folder.
"""

from __future__ import annotations

import difflib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.leaderboard.safety import LIMITS, Limits, Refused, confined, mask_header, read_utf8
from bench.evaluation.predictions_import import PROB_TOLERANCE
from bench.evaluation.protocol import CLEAN, Protocol
from bench.types import LabelSpace

FORMATS = (".csv", ".jsonl", ".parquet")
OPTIONAL_COLUMNS = ("dataset", "split", "perturbation", "mask_path", "text")
MISSING_EXAMPLES = 3

Report = Callable[[int | None, str | None, str], None]


def read_frame(path: Path, report: Report, limits: Limits = LIMITS) -> pd.DataFrame | None:
    """The file as a frame of strings and numbers, or None (after reporting why)."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        report(None, None, f"unsupported format {suffix!r}; use .csv, .jsonl or .parquet")
        return None
    try:
        if suffix == ".parquet":
            size = path.stat().st_size
            if size > limits.predictions:
                raise Refused(f"predictions file is {size:,} bytes; the limit is {limits.predictions:,}")
            return pd.read_parquet(path)
        text = read_utf8(path, limits.predictions, "predictions file")
        if suffix == ".csv":
            return pd.read_csv(io.StringIO(text), dtype={"sample_id": str}, keep_default_na=True)
        records = []
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                report(i + 1, None, f"not a JSON object ({exc.msg})")
                continue
            if not isinstance(rec, dict):
                report(i + 1, None, "not a JSON object")
                continue
            records.append(rec)
        return pd.DataFrame.from_records(records)
    except Refused as exc:
        report(None, None, str(exc))
    except (ValueError, OSError) as exc:
        report(None, None, f"cannot read the file ({str(exc).splitlines()[0]})")
    return None


def probability_columns(columns: list[str], space: LabelSpace) -> tuple[list[str], str] | None:
    names = [f"prob_{c}" for c in space.class_names]
    if all(n in columns for n in names):
        return names, space.value
    if "prob_fake" in columns:
        return [c for c in ("prob_real", "prob_fake") if c in columns], LabelSpace.BINARY.value
    return None


def check_frame(frame: pd.DataFrame, protocol: Protocol, report: Report) -> list[tuple[str, str, str, str]] | None:
    """Column and value checks; the (dataset, split, sample_id, perturbation) key of every row
    (None when the columns are unusable)."""
    columns = [str(c) for c in frame.columns]
    probs = probability_columns(columns, protocol.label_space)
    if "sample_id" not in columns:
        report(None, "sample_id", "no 'sample_id' column")
    if probs is None:
        names = ", ".join(f"prob_{c}" for c in protocol.label_space.class_names)
        report(None, None, f"expected probability columns {names} (or prob_fake)")
    known = {"sample_id", *OPTIONAL_COLUMNS, *(probs[0] if probs else ())}
    for c in columns:
        if c not in known:
            hint = difflib.get_close_matches(c, sorted(known), n=1)
            report(None, c, "unknown column" + (f"; did you mean {hint[0]!r}?" if hint else ""))
    if "sample_id" not in columns or probs is None:
        return None
    cols = probs[0]
    values = frame[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    for i, row in enumerate(values):
        ok = True
        for col, v in zip(cols, row):
            if not np.isfinite(v):
                raw = frame[col].iloc[i]
                report(i + 1, col, f"{raw!r} is not a finite number" if isinstance(raw, str)
                       else f"{raw} is empty or not a finite number")
                ok = False
            elif not 0.0 <= v <= 1.0:
                report(i + 1, col, f"{v} is outside [0, 1]")
                ok = False
        total = row.sum() if len(cols) > 1 else 1.0
        if ok and abs(total - 1.0) > PROB_TOLERANCE:
            report(i + 1, ",".join(cols), f"probabilities sum to {total:.4f}, not 1")
    return _keys(frame, protocol, report)


def _keys(frame: pd.DataFrame, protocol: Protocol, report: Report) -> list[tuple[str, str, str, str]]:
    specs = [(d.name, d.split) for d in protocol.datasets]
    pert_keys = [p.key for p in protocol.perturbations]
    has_ds = "dataset" in frame.columns
    if not has_ds and len(specs) > 1:
        report(None, "dataset", f"the protocol has {len(specs)} datasets; give 'dataset' and 'split' columns")
    keys: list[tuple[str, str, str, str]] = []
    first: dict[tuple[str, str, str, str], int] = {}
    for i, rec in enumerate(frame.to_dict("records")):
        sid = rec.get("sample_id")
        if not isinstance(sid, str) or not sid:
            report(i + 1, "sample_id", f"{sid!r} is not a sample id")
            sid = ""
        ds = (str(rec.get("dataset")), str(rec.get("split", specs[0][1]))) if has_ds else specs[0]
        if ds not in specs:
            report(i + 1, "dataset", f"{ds[0]}/{ds[1]} is not a dataset split of the protocol "
                                     f"({', '.join(f'{a}/{b}' for a, b in specs)})")
        pert = rec.get("perturbation")
        pert = CLEAN if pert is None or (isinstance(pert, float) and np.isnan(pert)) else str(pert)
        if pert not in pert_keys:
            hint = difflib.get_close_matches(pert, pert_keys, n=1)
            report(i + 1, "perturbation", f"{pert!r} is not a condition of the protocol"
                   + (f"; did you mean {hint[0]!r}?" if hint else f" ({', '.join(pert_keys)})"))
        key = (ds[0], ds[1], sid, pert)
        if sid and key in first:
            report(i + 1, "sample_id", f"duplicate prediction for {sid!r} ({pert}); first at row {first[key] + 1}")
        elif sid:
            first[key] = i
        keys.append(key)
        text = rec.get("text")
        if "text" in frame.columns and text is not None and not isinstance(text, str) and not pd.isna(text):
            report(i + 1, "text", "explanation text must be a string")
    return keys


def check_coverage(keys: list[tuple[str, str, str, str]], ids: dict[tuple[str, str], list[str]],
                   pert_keys: list[str], report: Report) -> None:
    """Unknown sample ids (by row) and (sample, condition) pairs without a row (by count)."""
    present: set[tuple[str, str, str, str]] = set(keys)
    for (ds, split), wanted in ids.items():
        known = set(wanted)
        for i, key in enumerate(keys):
            if key[:2] == (ds, split) and key[2] and key[2] not in known:
                hint = difflib.get_close_matches(key[2], wanted, n=1)
                report(i + 1, "sample_id", f"{key[2]!r} is not in {ds}/{split}"
                       + (f"; did you mean {hint[0]!r}?" if hint else ""))
        for pert in pert_keys:
            missing = [s for s in wanted if (ds, split, s, pert) not in present]
            if missing:
                eg = ", ".join(repr(s) for s in missing[:MISSING_EXAMPLES])
                report(None, "sample_id", f"{len(missing)} of {len(wanted)} samples of {ds}/{split} have no "
                                          f"prediction under {pert!r} (e.g. {eg})")


def check_mask(root: Path, rel_dir: Path, value: Any, expected: tuple[int, int] | None,
               limits: Limits = LIMITS) -> str | None:
    """Why the mask at ``value`` (relative to the predictions file) is refused, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        path = confined(root, (rel_dir / value).as_posix() if rel_dir != Path(".") else value)
        shape = mask_header(path, limits)
        if expected is not None and shape != expected:
            return f"mask {value} is {shape[0]}x{shape[1]} (H x W); the image is {expected[0]}x{expected[1]}"
        mask = _decode(path)
    except Refused as exc:
        return f"mask {exc}" if str(exc).startswith("'") else f"mask {value}: {exc}"
    if mask.ndim != 2 or not np.all(np.isfinite(mask)) or mask.min(initial=0) < 0 or mask.max(initial=0) > 1:
        return f"mask {value} must be a 2-D map of probabilities in [0, 1]"
    return None


def _decode(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        return np.load(path, allow_pickle=False).astype(np.float64)
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except (OSError, ValueError, SyntaxError) as exc:
        raise Refused(f"cannot be decoded ({exc})") from None
    scale = 65535.0 if arr.dtype == np.uint16 else 255.0
    return (arr[..., 0] if arr.ndim == 3 else arr).astype(np.float64) / scale
