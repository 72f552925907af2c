"""SID-Set as Hugging Face parquet shards (``saberzl/SID_Set``, ``saberzl/SID_Set_description``).

Columns: ``img_id`` (str), ``image`` (HF Image: struct ``{bytes, path}`` or plain binary),
``mask`` (same, null for real/full-synthetic and possibly for tampered), ``width``, ``height``,
``label`` (0 real, 1 full synthetic, 2 tampered); optional ``description`` (explanation text).

Shards are found, in this order of preference, as ``<root>/data/<split>-*.parquet`` (the HF
layout), ``<root>/<split>-*.parquet``, ``<root>/<split>/*.parquet``, or ``root`` itself when it
is a ``.parquet`` file; they are read in file-name order, row by row, so positions are stable.

Streaming: ids and labels of all rows are read once (a cheap column projection, a few bytes per
row); images are then read one row group at a time, rows outside the shard or in ``skip_ids`` are
never decoded, and a row group with no wanted row is never read. Image memory is bounded by one
row group, not by the dataset.

Ids are ``"<class>/<img_id stem>"`` (the same ids as :mod:`bench.datasets.sid_set` gives for the
folder copy of the same images), or ``"<shard stem>/<row>"`` when there is no ``img_id`` column.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Set
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bench.datasets.base import Dataset
from bench.datasets.common import IMAGE_EXTENSIONS, Entry, SampleDecoder, check_shard, split_options
from bench.datasets.sid_set import CLASS_FOLDERS
from bench.errors import UserError
from bench.types import TAMPERED, LabelSpace, Sample


def find_shards(root: Path, split: str) -> list[Path]:
    """Parquet shard files of ``split`` under ``root`` (see module docstring), sorted by name."""
    if root.is_file() and root.suffix == ".parquet":
        return [root]
    for pattern in (f"data/{split}-*.parquet", f"{split}-*.parquet", f"{split}/*.parquet", f"data/{split}/*.parquet"):
        found = sorted(root.glob(pattern), key=lambda p: p.name)
        if found:
            return found
    return []


def available_splits(root: Path) -> list[str]:
    """Split names that have shards under ``root`` (by the same patterns as :func:`find_shards`)."""
    names = {p.name.split("-", 1)[0] for pattern in ("data/*-*.parquet", "*-*.parquet") for p in root.glob(pattern)}
    names |= {p.parent.name for pattern in ("*/*.parquet", "data/*/*.parquet") for p in root.glob(pattern)
              if p.parent.name != "data"}
    return sorted(names)


def _bytes_of(cell: Any) -> bytes | None:
    """Encoded bytes from an HF Image cell (struct with ``bytes``) or a plain binary cell."""
    if cell is None:
        return None
    if isinstance(cell, dict):
        cell = cell.get("bytes")
    if cell is None or len(cell) == 0:
        return None
    return bytes(cell)


def _stem(img_id: str) -> str:
    name = PurePosixPath(img_id).name
    suffix = PurePosixPath(name).suffix
    return name[: -len(suffix)] if suffix.lower() in IMAGE_EXTENSIONS else name


def _num_rows(path: Path) -> int:
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"SID-Set shard {path} is not a readable parquet file ({exc})") from None


class SidSetParquet(Dataset):
    """SID-Set from parquet shards, streamed by row group (see module docstring)."""

    name = "sid_set_parquet"
    label_space = LabelSpace.TERNARY

    def __init__(self, root: str | Path | None = None, split: str = "test", **options: Any) -> None:
        if root is None:
            raise UserError("Dataset 'sid_set_parquet' needs a root (folder of parquet shards or a .parquet file)")
        super().__init__(root, split, **options)
        decoder_opts, _ = split_options(options)
        if decoder_opts.get("missing_mask") == "official":
            raise UserError("missing_mask='official' (drop at listing time) needs the folder layout; "
                            "use 'keep' or 'error' with parquet shards")
        self.decoder = SampleDecoder(**decoder_opts)
        if not self.root.exists():
            raise UserError(f"Dataset 'sid_set_parquet': root {self.root} does not exist")
        self.shards = find_shards(self.root, split)
        if not self.shards:
            found = available_splits(self.root)
            raise UserError(f"No parquet shards for split {split!r} under {self.root} "
                            f"(looked for data/{split}-*.parquet, {split}-*.parquet, {split}/*.parquet); "
                            + (f"splits found: {', '.join(found)}" if found else "no split has shards there"))
        self._num_rows = [_num_rows(p) for p in self.shards]
        self._index: list[list[tuple[str, int]]] | None = None

    def __len__(self) -> int:
        return sum(self._num_rows)

    def index(self) -> list[list[tuple[str, int]]]:
        """(id, label) of every row, per shard; read once from the ``img_id``/``label`` columns only.

        Ids repeated within the split get ``"#<shard stem>:<row>"`` appended, so ids stay unique.
        """
        if self._index is None:
            index = []
            for path in self.shards:
                pf = pq.ParquetFile(path)
                names = set(pf.schema_arrow.names)
                if "label" not in names or "image" not in names:
                    raise UserError(f"{path}: expected columns 'image' and 'label', found {sorted(names)}")
                cols = ["label"] + (["img_id"] if "img_id" in names else [])
                table = pf.read(columns=cols)
                labels = table.column("label").to_pylist()
                img_ids = table.column("img_id").to_pylist() if "img_id" in names else [None] * len(labels)
                rows = []
                for r, (img_id, label) in enumerate(zip(img_ids, labels, strict=True)):
                    if label not in (0, 1, 2):
                        raise UserError(f"{path}: row {r} has label {label!r}; expected 0, 1 or 2")
                    cls = CLASS_FOLDERS[int(label)]
                    sid = f"{cls}/{_stem(str(img_id))}" if img_id is not None else f"{path.stem}/{r}"
                    rows.append((sid, int(label)))
                index.append(rows)
            counts = Counter(sid for rows in index for sid, _ in rows)
            self._index = [
                [(sid if counts[sid] == 1 else f"{sid}#{path.stem}:{r}", label) for r, (sid, label) in enumerate(rows)]
                for path, rows in zip(self.shards, index, strict=True)
            ]
        return self._index

    def iter_samples(
        self, shard: int = 0, num_shards: int = 1, skip_ids: Set[str] = frozenset()
    ) -> Iterator[Sample]:
        check_shard(shard, num_shards)
        position = 0
        for shard_path, ids in zip(self.shards, self.index(), strict=True):
            pf = pq.ParquetFile(shard_path)
            data_cols = ["image"] + [c for c in ("mask", "description") if c in pf.schema_arrow.names]
            first_row = 0
            for rg in range(pf.num_row_groups):
                n = pf.metadata.row_group(rg).num_rows
                wanted = [r for r in range(n) if (position + r) % num_shards == shard
                          and ids[first_row + r][0] not in skip_ids]
                if wanted:
                    try:
                        data = pf.read_row_group(rg, columns=data_cols)
                    except (pa.ArrowException, OSError) as exc:  # a damaged row group: its rows are errors
                        for r in wanted:
                            yield self._unreadable(ids[first_row + r], shard_path, first_row + r, rg, exc)
                        data = None
                    for r in wanted if data is not None else []:
                        yield self._sample(data, r, ids[first_row + r], shard_path, first_row + r)
                    del data
                position += n
                first_row += n

    def _sample(self, data: pa.Table, r: int, id_label: tuple[str, int], shard_path: Path, row: int) -> Sample:
        sid, label = id_label
        meta: dict[str, Any] = {"source": CLASS_FOLDERS[label], "path": f"{shard_path}#row={row}"}
        if "description" in data.column_names:
            text = data.column("description")[r].as_py()
            if text:
                meta["explanation"] = str(text)
        image = _bytes_of(data.column("image")[r].as_py()) or b""
        mask = _bytes_of(data.column("mask")[r].as_py()) if "mask" in data.column_names else None
        return self.decoder.decode(Entry(sid, label, image, mask, meta), wants_mask=label == TAMPERED)

    def _unreadable(self, id_label: tuple[str, int], shard_path: Path, row: int, group: int,
                    exc: Exception) -> Sample:
        sid, label = id_label
        meta: dict[str, Any] = {"source": CLASS_FOLDERS[label], "path": f"{shard_path}#row={row}", "original_size": None}
        self.decoder._note("decode_errors", sid, meta)
        return Sample(sid, None, label, None, meta,
                      error=f"image: row group {group} of {shard_path} cannot be read ({exc})")

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            label_space=self.label_space.value,
            shards=[str(p) for p in self.shards],
            policies=self.decoder.policies(),
            listing={},
            problems=self.decoder.problem_counts(),
        )
        return info
