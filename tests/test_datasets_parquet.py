"""sid_set_parquet: same samples as the folder copy, skip before decoding, bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.datasets.sid_set_parquet import SidSetParquet, find_shards
from bench.errors import UserError
from bench.plugins import create_dataset
from tests.data_fixtures import (
    EXPECTED_ERRORS,
    HF_SCHEMA,
    folder_rows,
    png_bytes,
    write_parquet_shards,
    write_sid_set_tree,
)


@pytest.fixture()
def both(tmp_path):
    tree = write_sid_set_tree(tmp_path / "sid")
    write_parquet_shards(tmp_path / "hf", "test", folder_rows(tree / "test"), shards=3, row_group_size=2)
    return tree, tmp_path / "hf"


def summary(ds):
    return {s.id: (s.label, s.error is None, None if s.mask is None else s.mask.tolist(),
                   None if s.image is None else s.image.tolist()) for s in ds.iter_samples()}


def test_parquet_matches_folders_sample_by_sample(both):
    tree, hf = both
    folders = create_dataset("sid_set", root=tree)
    parquet = create_dataset("sid_set_parquet", root=hf)
    assert len(parquet) == len(folders) == 14
    assert len(parquet.shards) == 3 and parquet.shards[0].name == "test-00000-of-00003.parquet"
    assert summary(parquet) == summary(folders)
    errors = {s.id for s in parquet.iter_samples() if s.error}
    assert errors == EXPECTED_ERRORS
    a, b = folders.describe()["problems"], parquet.describe()["problems"]
    assert a == b and b["masks_missing"] == 1 and b["masks_resized"] == 1


def test_sharding_and_skip_ids_before_decoding(both):
    _, hf = both
    ds = create_dataset("sid_set_parquet", root=hf)
    order = [s.id for s in ds.iter_samples()]
    for k in range(4):
        assert [s.id for s in ds.iter_samples(k, 4)] == order[k::4]
    fresh = create_dataset("sid_set_parquet", root=hf)
    skip = {"real/r_trunc", "real/r_zero", "full_synthetic/f_text"}
    kept = [s.id for s in fresh.iter_samples(skip_ids=skip)]
    assert kept == [i for i in order if i not in skip]
    assert fresh.describe()["problems"]["decode_errors"] == 0  # none of the broken rows was decoded


def test_layouts_missing_columns_and_bad_labels(tmp_path):
    rows = [{"image": {"bytes": png_bytes(np.zeros((4, 4, 3), np.uint8)), "path": None}, "label": 0}] * 2
    schema = pa.schema([HF_SCHEMA.field("image"), HF_SCHEMA.field("label")])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "validation-x.parquet")
    assert find_shards(tmp_path, "validation") == [tmp_path / "validation-x.parquet"]
    ds = create_dataset("sid_set_parquet", root=tmp_path, split="validation")
    assert [s.id for s in ds] == ["validation-x/0", "validation-x/1"]
    with pytest.raises(UserError, match="No parquet shards"):
        create_dataset("sid_set_parquet", root=tmp_path, split="test")
    bad = [{"image": rows[0]["image"], "label": 7}]
    pq.write_table(pa.Table.from_pylist(bad, schema=schema), tmp_path / "bad.parquet")
    with pytest.raises(UserError, match="label 7"):
        list(create_dataset("sid_set_parquet", root=tmp_path / "bad.parquet"))
    dup = [{"img_id": "a.png", "image": rows[0]["image"], "mask": None, "width": 4, "height": 4, "label": 1}] * 2
    pq.write_table(pa.Table.from_pylist(dup, schema=HF_SCHEMA), tmp_path / "dup.parquet")
    assert [s.id for s in create_dataset("sid_set_parquet", root=tmp_path / "dup.parquet")] == [
        "full_synthetic/a#dup:0", "full_synthetic/a#dup:1"]
    with pytest.raises(UserError, match="folder layout"):
        SidSetParquet(tmp_path, "validation", missing_mask="official")


def test_memory_stays_flat_streaming_a_file_much_larger_than_a_row_group(tmp_path):
    rng = np.random.default_rng(0)
    n, size = 600, 40  # random pixels do not compress: ~5 KB per PNG, ~3 MB per file
    rows = [{"img_id": f"i{i:04d}", "image": {"bytes": png_bytes(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)),
                                               "path": None},
             "mask": None, "width": size, "height": size, "label": i % 2} for i in range(n)]
    path = tmp_path / "data" / "test-00000-of-00001.parquet"
    path.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=HF_SCHEMA), path, row_group_size=10, compression="none")
    del rows
    file_size = path.stat().st_size
    assert pq.ParquetFile(path).num_row_groups == 60

    def peak_while(consume):
        pool = pa.default_memory_pool()
        base_arrow = pool.bytes_allocated()
        tracemalloc.start()
        peak_arrow = consume(pool, base_arrow)
        _, peak_py = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return peak_arrow, peak_py

    def stream(pool, base):
        peak, count = 0, 0
        for sample in create_dataset("sid_set_parquet", root=tmp_path).iter_samples():
            peak = max(peak, pool.bytes_allocated() - base)
            count += sample.image is not None
        assert count == n
        return peak

    def read_all(pool, base):  # control: the measurement does see a whole-file read
        table = pq.read_table(path)
        cells = table.column("image").to_pylist()
        return max(pool.bytes_allocated() - base, sum(len(c["bytes"]) for c in cells))

    stream_arrow, stream_py = peak_while(stream)
    all_arrow, all_py = peak_while(read_all)
    assert all_arrow > 0.9 * file_size and all_py > 0.9 * file_size
    assert stream_arrow < file_size / 10, (stream_arrow, file_size)
    assert stream_py < file_size / 10, (stream_py, file_size)
