"""A generic manifest: a CSV, JSONL or parquet table with ``path,label[,mask_path,split,source,id]``.

``root`` is the manifest file. Relative ``path``/``mask_path`` values are resolved against the
manifest's folder. Labels are integers or names: ``real`` 0, ``fake`` 1 (binary) or ``real`` 0,
``full_synthetic`` 1, ``tampered`` 2 (ternary). Option ``label_space`` = ``"auto"`` (default:
ternary when any label is 2 or a ternary name, else binary), ``"binary"`` or ``"ternary"``.
With a ``split`` column only rows of the requested split are listed; without one every row is.
Ids are the ``id`` column, else the path relative to the manifest folder without its extension.
Rows keep the manifest's order. ``meta["source"]`` is the ``source`` column, else the image's
parent folder name; ``meta["group"]`` is the class name.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from bench.datasets.common import Entry, ListedDataset
from bench.errors import UserError
from bench.jsonl import read_jsonl
from bench.safe_text import path_text
from bench.types import LABEL_NAMES, LabelSpace

NAMES = {"real": 0, "fake": 1, "full_synthetic": 1, "tampered": 2}
TERNARY_NAMES = {"full_synthetic", "tampered"}


def read_table(path: Path) -> pd.DataFrame:
    """Load a manifest table by extension (.csv, .jsonl/.json lines, .parquet).

    CSV and JSONL bytes that are not UTF-8 are kept as surrogate escapes (file names stay usable);
    columns stay ``object`` (Python str), as pyarrow-backed strings cannot hold those escapes.
    """
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return pd.DataFrame(read_jsonl(path, "manifest"), dtype=object)
    try:
        if suffix == ".csv":
            return pd.read_csv(path, dtype=object, keep_default_na=False, encoding_errors="surrogateescape")
        if suffix == ".parquet":
            return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read manifest {path_text(path)}: {exc}") from exc
    raise UserError(f"manifest {path}: unsupported extension {suffix!r} (use .csv, .jsonl or .parquet)")


def _label(value: Any, where: str) -> int:
    text = str(value).strip().lower()
    if text in NAMES:
        return NAMES[text]
    try:
        number = int(float(text))
    except ValueError:
        number = -1
    if number not in (0, 1, 2):
        raise UserError(f"{where}: label {value!r} is not 0/1/2 or one of {sorted(NAMES)}")
    return number


def _cell(row: dict[str, Any], column: str) -> str | None:
    if column not in row:
        return None
    value = row[column]
    if isinstance(value, bytes):  # a binary parquet column: raw file-name bytes
        value = os.fsdecode(value)
    if value is None or (isinstance(value, float) and pd.isna(value)) or str(value) == "":
        return None
    return str(value)


class Manifest(ListedDataset):
    """Samples listed in a manifest file (see module docstring)."""

    name = "manifest"
    label_space = LabelSpace.BINARY
    extra_options = ("label_space",)

    def __init__(self, root: str | Path | None = None, split: str = "test", **options: Any) -> None:
        super().__init__(root, split, **options)
        _ = self.entries  # the label space depends on the rows; listing a manifest is cheap

    def _list(self) -> list[Entry]:
        if not self.root.is_file():
            raise UserError(f"manifest: expected a .csv, .jsonl or .parquet file at {self.root}")
        table = read_table(self.root)
        for column in ("path", "label"):
            if column not in table.columns:
                raise UserError(f"manifest {self.root}: missing required column {column!r} (has {list(table.columns)})")
        if "split" in table.columns:
            table = table[[str(v) == self.split for v in table["split"]]]
        base = self.root.parent
        labels = [_label(v, f"manifest {path_text(self.root)} data row {int(i) + 1}")
                  for i, v in zip(table.index, table["label"])]
        self.label_space = self._resolve_space(table, labels)
        entries: list[Entry] = []
        for row, label in zip(table.to_dict("records"), labels, strict=True):
            rel = _cell(row, "path") or ""
            path = base / rel  # an absolute ``rel`` replaces ``base``
            mask_rel = _cell(row, "mask_path")
            mask = base / mask_rel if mask_rel else None
            sid = _cell(row, "id") or str(PurePosixPath(Path(rel).as_posix()).with_suffix(""))
            meta = {"source": _cell(row, "source") or path.parent.name, "path": str(path),
                    "group": LABEL_NAMES[self.label_space][label]}
            if mask is not None and not mask.is_file():
                meta["mask_path_missing"] = str(mask)
                mask = None
            entries.append(Entry(sid, label, path, mask, meta))
        ids = [e.id for e in entries]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise UserError(f"manifest {self.root}: duplicate ids {dup} (add an 'id' column)")
        self.listing_problems = {"mask_paths_missing": sum("mask_path_missing" in e.meta for e in entries)}
        return entries

    def _resolve_space(self, table: pd.DataFrame, labels: list[int]) -> LabelSpace:
        choice = str(self.extra.get("label_space", "auto"))
        if choice not in ("auto", "binary", "ternary"):
            raise UserError(f"manifest option label_space must be auto, binary or ternary, got {choice!r}")
        named_ternary = any(str(v).strip().lower() in TERNARY_NAMES for v in table["label"])
        if choice == "auto":
            return LabelSpace.TERNARY if named_ternary or 2 in labels else LabelSpace.BINARY
        if choice == "binary" and 2 in labels:
            raise UserError(f"manifest {self.root}: label 2 (tampered) in a binary manifest")
        return LabelSpace(choice)
