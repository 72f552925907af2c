"""The prediction store: one parquet row per (sample, perturbation), written in atomic shards.

Layout: ``<dir>/part-<writer>-<seq>.parquet``. A shard is written to a hidden temporary file
and renamed into place, so a killed run leaves only complete shards (and maybe a ``.tmp-*``
file that readers ignore). A run resumes by skipping the row keys already stored; a finished
run is re-scored from the store alone. When two shards hold the same key, the one whose file
name sorts last wins (every shard of a run names its writer: time, rank, process).

Row key (:func:`row_key`): sha256 of the model name and configuration, the weights sha256,
the input-policy hash, dataset, split, sample id, perturbation key and parameters, and the
seed. A key mismatch is a miss, never a reuse.

What a row keeps (store format :data:`STORE_VERSION`; docs/running.md "Prediction store"):

- identity and provenance: ``key``, model, weights sha256, policy hash, dataset, split, sample
  id, perturbation key and parameters, seed, ``group``, ``meta`` (JSON), ``error``, ``text``;
- the label and ``probs`` (float64, in ``probs_space``), the image size ``height`` × ``width``;
- ``pred_mask``: the predicted mask quantised to 8 bits, code ``c = ceil(255 p - 1/2)`` (round
  half down, so for float32 ``p``, ``p > 0.5`` iff ``c >= 128``; decoded ``c / 255``, error <= 1/510),
  row-major, zstd-compressed; ``pred_mask_h``/``pred_mask_w`` (null: the model made no mask);
- ``confidence``: the model's confidence map of its mask (TruFor), 8-bit codes and zstd exactly as
  ``pred_mask`` and of its size (``pred_mask_h`` × ``pred_mask_w``); null: the model made none
  (store format 3; a format-2 shard has no such column and reads as null);
- ``gt_mask``: ``np.packbits`` of the boolean ground truth, stored once per shard for each
  distinct mask (``gt_ref``: a content hash; further rows of the same sample and geometry hold
  only the reference); ``gt_mask_h``/``gt_mask_w`` (null: no ground truth);
- ``mask_stats``: the per-image sufficient statistic of every bundled localization metric, a
  (2, 256) int64 table counting pixels by (ground truth 0/1, predicted code); without a ground
  truth every pixel counts as negative, without a prediction every pixel has code 0. Any
  threshold, aggregation, polarity or AUC binning is recomputed from it without the masks
  (border exclusion and prediction resizing are not: those metrics read the masks,
  :meth:`PredictionStore.iter_row_groups`). Null when the predicted mask and the ground truth
  differ in size (an imported mask kept as given): such a row is scorable only from its pixels,
  by a metric with ``pred_resize``.

The protocol's ``store_masks`` chooses ``full`` (everything above) or ``stats`` (no
``pred_mask``, ``confidence`` or ``gt_mask`` bytes: rows of about 1 KB; masks are no longer viewable).

Formats: shards are written as :data:`STORE_VERSION`; :data:`READABLE_VERSIONS` are read (a column
an older format lacks reads as null: :data:`ADDED_COLUMNS`); any other is refused with one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.errors import UserError
from bench.safe_text import printable

PREDICTIONS_DIR = "predictions"
"""The store's folder inside a run directory."""

STORE_VERSION = "3"
"""Written into every shard's metadata (``sida_store``)."""
READABLE_VERSIONS = ("2", "3")
"""Formats this code reads; format 3 added the ``confidence`` column (:data:`ADDED_COLUMNS`)."""
ADDED_COLUMNS = {"confidence": "3"}
"""Columns added after format 2, with the format that added them: an older shard reads them as null."""

MASK_LEVELS = 256
"""Quantisation levels of a stored predicted mask (8 bits)."""

STORE_MASKS = ("full", "stats")

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
    ("gt_ref", pa.string()),
    ("gt_mask", pa.binary()),
    ("gt_mask_h", pa.int32()),
    ("gt_mask_w", pa.int32()),
    ("mask_stats", pa.binary()),
    ("group", pa.string()),
    ("meta", pa.string()),
    ("error", pa.string()),
    ("text", pa.string()),
    ("confidence", pa.binary()),
])
"""Columns of every shard (see the module docstring)."""

LIGHT_COLUMNS = [n for n in SCHEMA.names if n not in ("pred_mask", "gt_mask", "confidence")]
"""Every column but the mask bytes (``mask_stats`` included): what scoring-like readers need."""

ROW_GROUP = 64
"""Rows per parquet row group of a shard that holds mask bytes (a reader holds one row group);
shards without mask bytes are one row group."""

_ZSTD = pa.Codec("zstd", compression_level=1)


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
def quantise_mask(mask: np.ndarray) -> np.ndarray:
    """float (H, W) probabilities → uint8 codes ``ceil(255 p - 1/2)`` (p clipped to [0, 1])."""
    p = np.asarray(mask, dtype=np.float32)
    return np.ceil(np.clip(p, 0.0, 1.0) * np.float32(255.0) - np.float32(0.5)).astype(np.uint8)


def level_values() -> np.ndarray:
    """(256,) float64: the probability a code stands for, exactly as :func:`decode_prob_mask` gives it."""
    return (np.arange(MASK_LEVELS, dtype=np.float32) / np.float32(255.0)).astype(np.float64)


def encode_codes(codes: np.ndarray) -> bytes:
    return _ZSTD.compress(np.ascontiguousarray(codes, dtype=np.uint8).tobytes(), asbytes=True)


def decode_codes(data: bytes, h: int, w: int) -> np.ndarray:
    """uint8 (H, W) codes of a stored predicted mask."""
    raw = _ZSTD.decompress(data, decompressed_size=h * w, asbytes=True)
    return np.frombuffer(raw, dtype=np.uint8).reshape(h, w)


def encode_prob_mask(mask: np.ndarray) -> bytes:
    """float (H, W) in [0, 1] → zstd(8-bit codes), see :func:`quantise_mask`."""
    return encode_codes(quantise_mask(mask))


def decode_prob_mask(data: bytes, h: int, w: int) -> np.ndarray:
    """Inverse of :func:`encode_prob_mask`: float32 (H, W) ``code / 255``."""
    return decode_codes(data, h, w).astype(np.float32) / np.float32(255.0)


def encode_bool_mask(mask: np.ndarray) -> bytes:
    return np.packbits(np.asarray(mask, dtype=bool).ravel()).tobytes()


def decode_bool_mask(data: bytes, h: int, w: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=h * w)
    return bits.astype(bool).reshape(h, w)


def mask_stats(codes: np.ndarray | None, gt: np.ndarray | None) -> np.ndarray:
    """(2, 256) int64 pixel counts by (ground truth, predicted code) (see the module docstring)."""
    ref = codes if codes is not None else gt
    if ref is None:
        raise ValueError("mask_stats needs a predicted mask or a ground truth")
    n = int(np.prod(ref.shape))
    c = codes.ravel() if codes is not None else np.zeros(n, dtype=np.uint8)
    every = np.bincount(c, minlength=MASK_LEVELS).astype(np.int64)
    if gt is None:
        return np.stack([every, np.zeros(MASK_LEVELS, np.int64)])
    positive = np.bincount(c[np.asarray(gt, dtype=bool).ravel()], minlength=MASK_LEVELS).astype(np.int64)
    return np.stack([every - positive, positive])


def encode_stats(stats: np.ndarray) -> bytes:
    return np.ascontiguousarray(stats, dtype="<i8").tobytes()


def decode_stats(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i8").reshape(2, MASK_LEVELS)


def gt_ref(gt_bytes: bytes, h: int, w: int) -> str:
    return hashlib.blake2b(gt_bytes + f"{h}x{w}".encode(), digest_size=16).hexdigest()


# ------------------------------------------------------------------------------- rows
def prediction_row(
    run: RunIdentity, *, dataset: str, split: str, sample_id: str, perturbation: str, params_json: str,
    label: int, probs: Any, probs_space: str, size: tuple[int, int], pred_mask: np.ndarray | None,
    gt_mask: np.ndarray | None, meta: dict[str, Any], error: str | None, text: str | None,
    store_masks: str = "full", confidence: np.ndarray | None = None,
) -> dict[str, Any]:
    """One store row (columns of :data:`SCHEMA`); ``probs``, ``pred_mask`` and ``confidence`` are
    dropped on error.

    A predicted mask or confidence map with NaN or infinite values makes the row an error (a
    recorded per-sample failure); values outside [0, 1] are clipped. A confidence map must have
    the predicted mask's shape. ``mask_stats`` is left null when the predicted mask and the
    ground truth differ in shape (the scorer then names the sample).
    """
    if store_masks not in STORE_MASKS:
        raise UserError(f"store_masks must be one of {STORE_MASKS}, got {store_masks!r}")
    if error is None and pred_mask is not None and not np.isfinite(pred_mask).all():
        error = "model: the predicted mask has NaN or infinite values"
    if error is None and confidence is not None:
        if pred_mask is None or np.shape(confidence) != np.shape(pred_mask):
            error = (f"model: a confidence map of shape {np.shape(confidence)} needs a predicted mask of that shape "
                     f"(got {None if pred_mask is None else np.shape(pred_mask)})")
        elif not np.isfinite(confidence).all():
            error = "model: the confidence map has NaN or infinite values"
    codes = quantise_mask(pred_mask) if pred_mask is not None and error is None else None
    conf_codes = quantise_mask(confidence) if confidence is not None and error is None else None
    gm = np.asarray(gt_mask, dtype=bool) if gt_mask is not None else None
    stats = None
    if (codes is not None or gm is not None) and (codes is None or gm is None or codes.shape == gm.shape):
        stats = encode_stats(mask_stats(codes, gm))
    full = store_masks == "full"
    gt_bytes = encode_bool_mask(gm) if gm is not None else None
    return {
        "key": row_key(run, dataset, split, sample_id, perturbation, params_json),
        "model": run.model, "weights_sha256": run.weights_sha256, "policy_hash": run.policy_hash,
        "dataset": dataset, "split": split, "sample_id": sample_id,
        "perturbation": perturbation, "perturbation_params": params_json, "seed": run.seed,
        "label": int(label),
        "probs": None if error or probs is None else [float(x) for x in np.asarray(probs, dtype=np.float64)],
        "probs_space": probs_space,
        "height": int(size[0]), "width": int(size[1]),
        "pred_mask": encode_codes(codes) if codes is not None and full else None,
        "pred_mask_h": int(codes.shape[0]) if codes is not None else None,
        "pred_mask_w": int(codes.shape[1]) if codes is not None else None,
        "gt_ref": gt_ref(gt_bytes, *gm.shape) if gm is not None and gt_bytes is not None and full else None,
        "gt_mask": gt_bytes if full else None,
        "gt_mask_h": int(gm.shape[0]) if gm is not None else None,
        "gt_mask_w": int(gm.shape[1]) if gm is not None else None,
        "mask_stats": stats,
        "group": group_of(meta),
        "meta": json.dumps(light_meta(meta), sort_keys=True, default=str),
        "error": error, "text": text,
        "confidence": encode_codes(conf_codes) if conf_codes is not None and full else None,
    }


def group_of(meta: dict[str, Any]) -> str | None:
    """The sample's generator / group / source name (per-group detection metrics), if any."""
    for k in ("generator", "group", "source"):
        if meta.get(k) is not None:
            return str(meta[k])
    return None


def light_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able scalar and list fields of a sample's meta."""
    return {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool, list, tuple, type(None)))}


# ------------------------------------------------------------------------------- store
class PredictionStore:
    """A folder of parquet shards with the columns of :data:`SCHEMA`.

    Args:
        root: the folder (created on first write).
        flush_every: rows buffered before a shard is written (the most a killed writer loses).
        writer: a tag in the shard names of this writer (e.g. its rank), besides time and pid.
    """

    def __init__(self, root: str | Path, flush_every: int = 256, writer: str = "r0") -> None:
        if flush_every < 1:
            raise UserError(f"Expected flush_every >= 1, but got {flush_every}")
        self.root = Path(root)
        self.flush_every = flush_every
        self._buffer: list[dict[str, Any]] = []
        now = time.time()
        self._writer = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}{int(now * 1000) % 1000:03d}-{writer}-{os.getpid()}"
        self._seq = 0

    # -- writing ----------------------------------------------------------------------------
    def add(self, row: dict[str, Any]) -> None:
        """Buffer one row; text that is not valid UTF-8 (a file name's raw bytes) is stored escaped."""
        self._buffer.append({k: printable(v) if isinstance(v, str) else v for k, v in row.items()})
        if len(self._buffer) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one shard (temporary file, then an atomic rename).

        A ground-truth mask is kept on the first row of the shard that references it.
        """
        if not self._buffer:
            return
        seen: set[str] = set()
        for row in self._buffer:
            ref = row.get("gt_ref")
            if ref is not None and ref in seen:
                row["gt_mask"] = None
            elif ref is not None:
                seen.add(ref)
        self.root.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(self._buffer, schema=SCHEMA)
        table = table.replace_schema_metadata({"sida_store": STORE_VERSION})
        name = f"part-{self._writer}-{self._seq:06d}.parquet"
        tmp = self.root / f".tmp-{name}"
        compression = {n: ("none" if n in ("pred_mask", "confidence") else "zstd") for n in SCHEMA.names}
        masks = any(r.get(c) is not None for r in self._buffer for c in ("pred_mask", "gt_mask", "confidence"))
        pq.write_table(table, tmp, compression=compression, row_group_size=ROW_GROUP if masks else len(self._buffer))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / name)
        self._seq += 1
        self._buffer.clear()

    # -- reading ----------------------------------------------------------------------------
    def shards(self) -> list[Path]:
        """The complete shards, in write-precedence order (a later one wins a duplicate key)."""
        return sorted(self.root.glob("part-*.parquet")) if self.root.is_dir() else []

    def __bool__(self) -> bool:
        return bool(self.shards())

    def index(self, columns: Iterable[str] = ()) -> "StoreIndex":
        """The light columns of every row and which rows win (see :class:`StoreIndex`)."""
        cols = ["key", "dataset", "split", "perturbation", "sample_id", *[c for c in columns if c not in
                                                                         ("key", "dataset", "split", "perturbation",
                                                                          "sample_id")]]
        shards = self.shards()
        tables = []
        for path in shards:
            try:
                pf = pq.ParquetFile(path)
                _check_version(path, pf)
                tables.append(_complete(pf.read(columns=_present(pf, cols), use_threads=False), cols))
            except (pa.ArrowException, OSError) as exc:
                raise UserError(f"{path}: unreadable prediction shard ({exc}); move it away and finish the run "
                                "with --resume") from None
        return StoreIndex(shards, tables)

    def read(self, columns: Iterable[str] | None = None) -> pa.Table:
        """All stored rows (duplicate keys: the last written wins), sorted by (dataset, split,
        perturbation, sample id), ground-truth references resolved. Holds everything in memory:
        for small stores and figures; scoring streams (:meth:`iter_batches`)."""
        cols = list(columns) if columns is not None else SCHEMA.names
        if "key" not in cols:
            cols = ["key", *cols]
        index = self.index()
        parts = []
        for shard, keep in zip(index.shards, index.keep):
            pf = pq.ParquetFile(shard)
            table = _resolve_gt(_complete(pf.read(columns=_present(pf, _with_gt(cols)), use_threads=False), cols))
            parts.append(table.select(cols).filter(pa.array(keep)))
        if not parts:
            return SCHEMA.empty_table().select(cols)
        table = pa.concat_tables(parts)
        order = ["dataset", "split", "perturbation", "sample_id"]
        sort = [(c, "ascending") for c in order if c in cols]
        return table.sort_by(sort) if sort else table

    def iter_batches(self, columns: Iterable[str], index: "StoreIndex | None" = None,
                     rows: int = ROW_GROUP) -> Iterator[pa.Table]:
        """The winning rows, shard by shard, at most ``rows`` at a time, with ``columns`` only
        (in storage order: sort what order matters for). Never more than one batch in memory,
        besides a shard's distinct ground-truth masks when ``gt_mask`` is read (references resolved)."""
        cols = list(columns)
        index = index if index is not None else self.index()
        for shard, keep in zip(index.shards, index.keep):
            start = 0
            held: dict[str, bytes] = {}
            pf = pq.ParquetFile(shard)
            for batch in pf.iter_batches(batch_size=rows, columns=_present(pf, _with_gt(cols)), use_threads=False):
                n = batch.num_rows
                table = _resolve_gt(_complete(pa.Table.from_batches([batch]), cols), held).select(cols)
                table = table.filter(pa.array(keep[start:start + n]))
                start += n
                if table.num_rows:
                    yield table

    def iter_row_groups(self, columns: Iterable[str], index: "StoreIndex | None" = None) -> Iterator[pa.Table]:
        """The winning rows, one parquet row group at a time (at most :data:`ROW_GROUP` rows of a
        shard with mask bytes), with ``columns`` (in storage order). With ``gt_mask`` among them,
        ground-truth references are resolved: a mask stored in an earlier row group of the shard
        is read from that row group alone (its ``gt_ref`` and ``gt_mask`` columns). Never more
        than one row group's masks (plus the referenced ground truths) in memory."""
        cols = list(columns)
        index = index if index is not None else self.index()
        gt = "gt_mask" in cols
        read_cols = _with_gt(cols)
        for shard, keep in zip(index.shards, index.keep):
            pf = pq.ParquetFile(shard)
            sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
            first_group: dict[str, int] = {}
            if gt:
                refs = pf.read(columns=["gt_ref"], use_threads=False).column("gt_ref").to_pylist()
                group_of_row = np.repeat(np.arange(len(sizes)), sizes)
                for row, ref in enumerate(refs):
                    if ref is not None:
                        first_group.setdefault(ref, int(group_of_row[row]))
            start = 0
            for g, n in enumerate(sizes):
                rows_keep, start = keep[start:start + n], start + n
                if not rows_keep.any():
                    continue
                table = _complete(pf.read_row_group(g, columns=_present(pf, read_cols), use_threads=False), cols)
                if gt:
                    table = _resolve_gt_from(pf, _resolve_gt(table), first_group)
                yield table.filter(pa.array(rows_keep)).select(cols)

    def read_groups(self, columns: Iterable[str] = LIGHT_COLUMNS) -> dict[tuple[str, str, str], pa.Table]:
        """:meth:`read` split by (dataset, split, perturbation): each group's winning rows sorted by
        sample id (see :func:`iter_groups`). ``columns`` must include dataset, split, perturbation
        and sample_id; the default leaves out the mask bytes."""
        return dict(iter_groups(self.read(columns)))

    def read_samples(self, dataset: str, split: str, sample_ids: Iterable[str],
                     columns: Iterable[str] | None = None) -> pa.Table:
        """The winning rows of these samples of ``dataset``/``split`` (every perturbation), with
        ``columns`` (default: all), ground-truth references resolved, sorted as :meth:`read`.
        Only shards holding one of the samples are read with their mask bytes."""
        cols = list(columns) if columns is not None else SCHEMA.names
        wanted = pa.array(sorted(set(sample_ids)), pa.string())
        index = self.index()
        parts = []
        for shard, keep in zip(index.shards, index.keep):
            pf = pq.ParquetFile(shard)
            light = pf.read(columns=["dataset", "split", "sample_id"], use_threads=False)
            hit = pc.and_(pc.and_(pc.equal(light["dataset"], dataset), pc.equal(light["split"], split)),
                          pc.is_in(light["sample_id"], value_set=wanted))
            mask = np.asarray(hit.to_numpy(zero_copy_only=False), dtype=bool) & keep
            if not mask.any():
                continue
            wanted_cols = _with_gt(list(dict.fromkeys([*cols, "dataset", "split", "perturbation", "sample_id"])))
            table = _resolve_gt(_complete(pf.read(columns=_present(pf, wanted_cols), use_threads=False), cols))
            parts.append(table.filter(pa.array(mask)).select(cols))
        if not parts:
            return SCHEMA.empty_table().select(cols)
        table = pa.concat_tables(parts)
        sort = [(c, "ascending") for c in ("dataset", "split", "perturbation", "sample_id") if c in cols]
        return table.sort_by(sort) if sort else table

    def stored_keys(self) -> set[str]:
        return set(self.index().table.column("key").to_pylist())


def iter_groups(table: pa.Table) -> Iterator[tuple[tuple[str, str, str], pa.Table]]:
    """(dataset, split, perturbation) → its rows, for a table sorted as :meth:`PredictionStore.read`
    returns it (so each group's rows are sorted by sample id), in that order."""
    if table.num_rows == 0:
        return
    ds, sp, pt = (table.column(c).to_pylist() for c in ("dataset", "split", "perturbation"))
    start = 0
    for i in range(1, table.num_rows + 1):
        if i == table.num_rows or (ds[i], sp[i], pt[i]) != (ds[start], sp[start], pt[start]):
            yield (ds[start], sp[start], pt[start]), table.slice(start, i - start)
            start = i


class StoreIndex:
    """Light columns of all shards with the winning row of each key (the last written).

    ``shards``: the shard paths; ``keep[i]``: bool per row of shard i; ``table``: the winning
    rows' light columns, concatenated in storage order.
    """

    def __init__(self, shards: list[Path], tables: list[pa.Table]) -> None:
        self.shards = shards
        sizes = [t.num_rows for t in tables]
        keys = pa.chunked_array([t.column("key") for t in tables], pa.string()) if tables else pa.chunked_array(
            [], pa.string())
        positions = pa.table({"key": keys, "pos": pa.array(np.arange(sum(sizes), dtype=np.int64))})
        last = positions.group_by("key").aggregate([("pos", "max")]).column("pos_max").to_numpy()
        winners = np.zeros(sum(sizes), dtype=bool)
        winners[last] = True
        bounds = np.cumsum([0, *sizes])
        self.keep = [winners[bounds[i]:bounds[i + 1]] for i in range(len(tables))]
        kept = [t.filter(pa.array(k)) for t, k in zip(tables, self.keep)]
        self.table = pa.concat_tables(kept) if kept else pa.table({"key": pa.array([], pa.string())})


def _check_version(path: Path, pf: pq.ParquetFile) -> None:
    meta = pf.schema_arrow.metadata or {}
    version = meta.get(b"sida_store", b"1").decode()
    if version not in READABLE_VERSIONS:
        raise UserError(f"{path}: prediction store format {version} is not supported (readable: "
                        f"{', '.join(READABLE_VERSIONS)}; re-run, or re-import the predictions file, with this "
                        "version)")


def _present(pf: pq.ParquetFile, cols: list[str]) -> list[str]:
    """``cols`` without the :data:`ADDED_COLUMNS` an older shard lacks (read back as null by :func:`_complete`)."""
    names = set(pf.schema_arrow.names)
    return [c for c in cols if c in names or c not in ADDED_COLUMNS]


def _complete(table: pa.Table, cols: list[str]) -> pa.Table:
    """``table`` with a null column for each of ``cols`` it lacks (columns an older format did not have)."""
    for c in cols:
        if c not in table.column_names:
            table = table.append_column(SCHEMA.field(c), pa.nulls(table.num_rows, SCHEMA.field(c).type))
    return table


def _with_gt(cols: list[str]) -> list[str]:
    return [*cols, "gt_ref"] if "gt_mask" in cols and "gt_ref" not in cols else cols


def _resolve_gt_from(pf: pq.ParquetFile, table: pa.Table, first_group: dict[str, int]) -> pa.Table:
    """Fill ``gt_mask`` of rows whose reference is stored in another row group of shard ``pf``
    (``first_group``: the row group of each reference's first row, the one holding its bytes)."""
    refs = table.column("gt_ref").to_pylist()
    masks = table.column("gt_mask").to_pylist()
    missing = {r for r, m in zip(refs, masks) if m is None and r is not None and r in first_group}
    if not missing:
        return table
    found: dict[str, bytes] = {}
    for g in sorted({first_group[r] for r in missing}):
        other = pf.read_row_group(g, columns=["gt_ref", "gt_mask"], use_threads=False)
        found.update({r: m for r, m in zip(other.column("gt_ref").to_pylist(), other.column("gt_mask").to_pylist())
                      if r in missing and m is not None})
    filled = [found.get(r) if m is None and r is not None else m for r, m in zip(refs, masks)]
    return table.set_column(table.column_names.index("gt_mask"), "gt_mask", pa.array(filled, pa.binary()))


def _resolve_gt(table: pa.Table, held: dict[str, bytes] | None = None) -> pa.Table:
    """Fill ``gt_mask`` of rows that only hold a reference (same shard). ``held``: the masks of
    the shard's earlier batches, updated with this one's (a mask precedes its references)."""
    if "gt_mask" not in table.column_names:
        return table
    refs = table.column("gt_ref").to_pylist()
    masks = table.column("gt_mask").to_pylist()
    by_ref = held if held is not None else {}
    by_ref.update({r: m for r, m in zip(refs, masks) if r is not None and m is not None})
    filled = [by_ref.get(r) if m is None and r is not None else m for r, m in zip(refs, masks)]
    return table.set_column(table.column_names.index("gt_mask"), "gt_mask", pa.array(filled, pa.binary()))
