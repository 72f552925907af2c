"""The prediction store: one parquet row per (sample, perturbation), written in atomic shards.

Layout: ``<dir>/part-<writer>-<seq>.parquet``. A shard is written to a hidden temporary file
and renamed into place, so a killed run leaves only complete shards (and maybe a ``.tmp-*``
file that readers ignore). A run resumes by skipping the row keys already stored; a finished
run is re-scored from the store alone (ground-truth masks are stored too).

Row key (:func:`row_key`): sha256 of the model name and configuration, the weights sha256,
the input-policy hash, dataset, split, sample id, perturbation key and parameters, and the
seed. A key mismatch is a miss, never a reuse.

Mask encodings (lossless up to the stated precision):
- predicted masks: probabilities quantised to uint16 (``round(p * 65535)``, error ≤ 7.7e-6),
  zlib-compressed, row-major, with ``pred_mask_h``/``pred_mask_w``;
- ground-truth masks: ``np.packbits`` of the boolean mask (row-major), with ``gt_mask_h``/``gt_mask_w``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.errors import UserError
from bench.safe_text import printable

SCHEMA = pa.schema([
    ("key", pa.string()),
    ("model", pa.string()),
    ("weights_sha256", pa.string()),
    ("policy_hash", pa.string()),
    ("dataset", pa.string()),
    ("split", pa.string()),
    ("sample_id", pa.string()),
    ("perturbation", pa.string()),
    ("perturbation_params", pa.string()),
    ("seed", pa.int64()),
    ("label", pa.int64()),
    ("probs", pa.list_(pa.float64())),
    ("probs_space", pa.string()),
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("pred_mask", pa.binary()),
    ("pred_mask_h", pa.int32()),
    ("pred_mask_w", pa.int32()),
    ("gt_mask", pa.binary()),
    ("gt_mask_h", pa.int32()),
    ("gt_mask_w", pa.int32()),
    ("group", pa.string()),
    ("meta", pa.string()),
    ("error", pa.string()),
    ("text", pa.string()),
])
"""Columns of every shard (see the module docstring for the mask encodings)."""

LIGHT_COLUMNS = [n for n in SCHEMA.names if n not in ("pred_mask", "gt_mask")]


@dataclass(frozen=True)
class RunIdentity:
    """The part of the row key that is fixed for a run: model identity and seed."""

    model: str
    weights_sha256: str | None
    policy_hash: str
    seed: int


def policy_hash(describe: dict[str, Any]) -> str:
    """sha256 of what defines a model's outputs besides its weights: config, options, input policy."""
    fields = {k: describe.get(k) for k in ("config_values", "options", "input_policy", "label_space")}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def row_key(run: RunIdentity, dataset: str, split: str, sample_id: str, perturbation: str, params: str) -> str:
    parts = [run.model, run.weights_sha256 or "", run.policy_hash, dataset, split, sample_id,
             perturbation, params, str(run.seed)]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


# ------------------------------------------------------------------------------- encodings
def encode_prob_mask(mask: np.ndarray) -> bytes:
    """float (H, W) in [0, 1] → zlib(uint16 little-endian)."""
    q = np.rint(np.clip(np.asarray(mask, dtype=np.float64), 0.0, 1.0) * 65535.0).astype("<u2")
    return zlib.compress(q.tobytes(), 6)


def decode_prob_mask(data: bytes, h: int, w: int) -> np.ndarray:
    """Inverse of :func:`encode_prob_mask`: float32 (H, W) in [0, 1]."""
    q = np.frombuffer(zlib.decompress(data), dtype="<u2")
    return (q.astype(np.float32) / np.float32(65535.0)).reshape(h, w)


def encode_bool_mask(mask: np.ndarray) -> bytes:
    return np.packbits(np.asarray(mask, dtype=bool).ravel()).tobytes()


def decode_bool_mask(data: bytes, h: int, w: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=h * w)
    return bits.astype(bool).reshape(h, w)


# ------------------------------------------------------------------------------- store
class PredictionStore:
    """A folder of parquet shards with the columns of :data:`SCHEMA`.

    Args:
        root: the folder (created on first write).
        flush_every: rows buffered before a shard is written.
    """

    def __init__(self, root: str | Path, flush_every: int = 256) -> None:
        if flush_every < 1:
            raise UserError(f"Expected flush_every >= 1, but got {flush_every}")
        self.root = Path(root)
        self.flush_every = flush_every
        self._buffer: list[dict[str, Any]] = []
        self._writer = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        self._seq = 0

    # -- writing ----------------------------------------------------------------------------
    def add(self, row: dict[str, Any]) -> None:
        """Buffer one row; text that is not valid UTF-8 (a file name's raw bytes) is stored escaped."""
        self._buffer.append({k: printable(v) if isinstance(v, str) else v for k, v in row.items()})
        if len(self._buffer) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one shard (temporary file, then an atomic rename)."""
        if not self._buffer:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(self._buffer, schema=SCHEMA)
        name = f"part-{self._writer}-{self._seq:06d}.parquet"
        tmp = self.root / f".tmp-{name}"
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / name)
        self._seq += 1
        self._buffer.clear()

    # -- reading ----------------------------------------------------------------------------
    def shards(self) -> list[Path]:
        return sorted(self.root.glob("part-*.parquet")) if self.root.is_dir() else []

    def __bool__(self) -> bool:
        return bool(self.shards())

    def read(self, columns: Iterable[str] | None = None) -> pa.Table:
        """All stored rows (duplicate keys: the last written wins), sorted by key columns."""
        cols = list(columns) if columns is not None else SCHEMA.names
        if "key" not in cols:
            cols = ["key", *cols]
        tables = [pq.read_table(p, columns=cols) for p in self.shards()]
        if not tables:
            return SCHEMA.empty_table().select(cols)
        table = pa.concat_tables(tables)
        keys = table.column("key").to_pylist()
        last = {k: i for i, k in enumerate(keys)}
        if len(last) != len(keys):
            table = table.take(sorted(last.values()))
        order = ["dataset", "split", "perturbation", "sample_id"]
        sort = [(c, "ascending") for c in order if c in cols]
        return table.sort_by(sort) if sort else table

    def stored_keys(self) -> set[str]:
        return set(self.read(["key"]).column("key").to_pylist())


def iter_groups(table: pa.Table) -> Iterator[tuple[tuple[str, str, str], pa.Table]]:
    """(dataset, split, perturbation) → rows, in sorted order; rows already sorted by sample id."""
    if table.num_rows == 0:
        return
    ds = table.column("dataset").to_pylist()
    sp = table.column("split").to_pylist()
    pt = table.column("perturbation").to_pylist()
    start = 0
    for i in range(1, table.num_rows + 1):
        if i == table.num_rows or (ds[i], sp[i], pt[i]) != (ds[start], sp[start], pt[start]):
            yield (ds[start], sp[start], pt[start]), table.slice(start, i - start)
            start = i
