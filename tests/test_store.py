"""Prediction store: mask encodings round-trip, atomic shards, keys that change with identity."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.errors import UserError
from bench.evaluation.store import (PredictionStore, RunIdentity, decode_bool_mask, decode_prob_mask, decode_stats,
                                    encode_bool_mask, encode_prob_mask, level_values, mask_stats, prediction_row,
                                    quantise_mask, row_key)


def test_mask_encodings_round_trip() -> None:
    rng = np.random.default_rng(0)
    p = rng.random((17, 23)).astype(np.float32)
    p[0, :5] = [0.0, 1.0, 0.5, np.nextafter(np.float32(0.5), np.float32(1)), 127.5 / 255]
    back = decode_prob_mask(encode_prob_mask(p), 17, 23)
    assert back.dtype == np.float32 and np.max(np.abs(back - p)) <= 0.5 / 255 + 1e-7
    assert back[0, 0] == 0.0 and back[0, 1] == 1.0
    # round half down: the p > 0.5 decision survives quantisation exactly, ties included
    assert np.array_equal(back > 0.5, p > 0.5)
    g = rng.random((9, 13)) > 0.5
    assert np.array_equal(decode_bool_mask(encode_bool_mask(g), 9, 13), g)


def test_mask_stats_count_pixels_by_truth_and_code() -> None:
    rng = np.random.default_rng(1)
    p, g = rng.random((31, 17)), rng.random((31, 17)) > 0.7
    codes = quantise_mask(p)
    stats = mask_stats(codes, g)
    for c in (0, 77, 128, 255):
        assert stats[1, c] == np.count_nonzero(g & (codes == c)) and stats[0, c] == np.count_nonzero(~g & (codes == c))
    assert stats.sum() == p.size
    assert np.array_equal(mask_stats(None, g)[:, 0], [np.count_nonzero(~g), np.count_nonzero(g)])
    assert mask_stats(codes, None)[1].sum() == 0
    assert np.array_equal(level_values()[codes], decode_prob_mask(encode_prob_mask(p), 31, 17).astype(np.float64))


def _mask_row(sample_id: str, perturbation: str, gt: np.ndarray, store_masks: str = "full") -> dict:
    rng = np.random.default_rng(len(perturbation))
    return prediction_row(RunIdentity("m:x", None, "pol", 0), dataset="d", split="test", sample_id=sample_id,
                          perturbation=perturbation, params_json="{}", label=2, probs=[0.2, 0.3, 0.5],
                          probs_space="ternary", size=gt.shape, pred_mask=rng.random(gt.shape), gt_mask=gt,
                          meta={}, error=None, text=None, store_masks=store_masks)


def test_ground_truth_is_stored_once_per_shard_and_resolved_on_read(tmp_path: Path) -> None:
    gt = np.zeros((40, 50), dtype=bool)
    gt[5:20, 10:30] = True
    store = PredictionStore(tmp_path / "p", flush_every=10)
    for pert in ("none", "jpeg(quality=70)", "noise(sigma=2)"):
        store.add(_mask_row("s1", pert, gt))
    store.add(_mask_row("s1", "resize(scale=0.5)", gt[::2, ::2]))
    store.flush()
    raw = pq.read_table(store.shards()[0], columns=["gt_mask", "gt_ref"]).to_pylist()
    assert sum(r["gt_mask"] is not None for r in raw) == 2  # one per distinct (geometry) mask
    rows = store.read().to_pylist()
    for r in rows:
        want = gt[::2, ::2] if r["perturbation"].startswith("resize") else gt
        assert np.array_equal(decode_bool_mask(r["gt_mask"], r["gt_mask_h"], r["gt_mask_w"]), want)
        pred = decode_prob_mask(r["pred_mask"], r["pred_mask_h"], r["pred_mask_w"])
        assert np.array_equal(decode_stats(r["mask_stats"]), mask_stats(quantise_mask(pred), want))


def test_streamed_batches_resolve_ground_truth_references_across_batches(tmp_path: Path) -> None:
    """One row per batch: the rows that hold only a reference still get the mask, also when the row
    holding it lost its key to a later shard."""
    gt = np.zeros((12, 9), dtype=bool)
    gt[2:7, 1:4] = True
    store = PredictionStore(tmp_path / "p", flush_every=10)
    for pert in ("none", "jpeg(quality=70)", "noise(sigma=2)"):
        store.add(_mask_row("s1", pert, gt))
    store.flush()
    later = PredictionStore(tmp_path / "p", writer="r9")
    later.add({**_mask_row("s1", "none", gt), "gt_mask": None, "gt_ref": None, "gt_mask_h": None, "gt_mask_w": None})
    later.flush()
    batches = list(store.iter_batches(["perturbation", "gt_mask", "gt_mask_h", "gt_mask_w"], rows=1))
    rows = [r for b in batches for r in b.to_pylist()]
    assert all(b.column_names == ["perturbation", "gt_mask", "gt_mask_h", "gt_mask_w"] for b in batches)
    assert sorted(r["perturbation"] for r in rows) == ["jpeg(quality=70)", "noise(sigma=2)", "none"]
    for r in rows:
        if r["perturbation"] == "none":  # the later shard's row: no ground truth
            assert r["gt_mask"] is None
        else:
            assert np.array_equal(decode_bool_mask(r["gt_mask"], r["gt_mask_h"], r["gt_mask_w"]), gt)


def test_a_non_finite_predicted_mask_is_a_recorded_error() -> None:
    gt = np.zeros((8, 8), dtype=bool)
    run = RunIdentity("m:x", None, "pol", 0)
    pred = np.full((8, 8), 0.2)
    pred[3, 3] = np.nan
    row = prediction_row(run, dataset="d", split="test", sample_id="s", perturbation="none", params_json="{}",
                         label=2, probs=[0.2, 0.3, 0.5], probs_space="ternary", size=(8, 8), pred_mask=pred,
                         gt_mask=gt, meta={}, error=None, text=None)
    assert row["error"] == "model: the predicted mask has NaN or infinite values"
    assert row["probs"] is None and row["pred_mask"] is None and row["gt_mask"] is not None


def test_stats_rows_keep_no_mask_bytes(tmp_path: Path) -> None:
    gt = np.zeros((256, 256), dtype=bool)
    gt[40:90, 60:200] = True
    row = _mask_row("s1", "none", gt, store_masks="stats")
    assert row["pred_mask"] is None and row["gt_mask"] is None and row["mask_stats"] is not None
    assert row["pred_mask_h"] == 256 and row["gt_mask_h"] == 256
    with pytest.raises(UserError, match="store_masks must be one of"):
        _mask_row("s1", "none", gt, store_masks="some")


def test_a_corrupt_shard_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "part-x-000000.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(UserError, match="unreadable prediction shard"):
        PredictionStore(tmp_path / "p").stored_keys()


def test_shards_of_another_format_are_refused(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    pq.write_table(pa.table({"key": ["k"]}), tmp_path / "p" / "part-old-000000.parquet")
    with pytest.raises(UserError, match="store format 1 is not supported"):
        PredictionStore(tmp_path / "p").read()


def test_row_key_changes_with_every_identity_field() -> None:
    run = RunIdentity("m:default", "abc", "pol", 0)
    base = row_key(run, "d", "test", "s1", "none", "{}")
    variants = [row_key(RunIdentity("m:tiny", "abc", "pol", 0), "d", "test", "s1", "none", "{}"),
                row_key(RunIdentity("m:default", "abd", "pol", 0), "d", "test", "s1", "none", "{}"),
                row_key(RunIdentity("m:default", "abc", "po2", 0), "d", "test", "s1", "none", "{}"),
                row_key(RunIdentity("m:default", "abc", "pol", 1), "d", "test", "s1", "none", "{}"),
                row_key(run, "d", "validation", "s1", "none", "{}"), row_key(run, "d", "test", "s2", "none", "{}"),
                row_key(run, "d", "test", "s1", "jpeg(quality=70)", '{"quality": 70}')]
    assert len({base, *variants}) == 8


def row(i: int) -> dict:
    return {"key": f"k{i}", "dataset": "d", "split": "test", "sample_id": f"s{i:02d}", "perturbation": "none",
            "label": i % 2, "probs": [0.5, 0.5], "probs_space": "binary", "seed": 0}


def test_shards_are_atomic_reads_sorted_and_the_last_write_wins(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path / "p", flush_every=3)
    for i in reversed(range(7)):
        store.add(row(i))
    assert len(store.shards()) == 2  # 6 rows flushed, 1 buffered
    (tmp_path / "p" / ".tmp-part-x.parquet").write_bytes(b"half-written")  # left by a killed run
    store.flush()
    table = store.read()
    assert table.column("sample_id").to_pylist() == [f"s{i:02d}" for i in range(7)]
    assert store.stored_keys() == {f"k{i}" for i in range(7)}
    later = PredictionStore(tmp_path / "p", flush_every=3, writer="r9")
    later.add({**row(3), "probs": [0.1, 0.9]})
    later.flush()
    table = store.read()
    assert table.num_rows == 7 and table.column("probs").to_pylist()[3] == [0.1, 0.9]
    batches = list(store.iter_batches(["key", "probs"], rows=2))
    assert sum(b.num_rows for b in batches) == 7 and max(b.num_rows for b in batches) <= 2


def test_read_samples_resolves_shared_ground_truth_and_read_groups_leave_out_mask_bytes(tmp_path: Path) -> None:
    gt = np.zeros((12, 16), dtype=bool)
    gt[2:6, 3:9] = True
    store = PredictionStore(tmp_path / "p", flush_every=10)
    for sid in ("a", "b", "c"):  # same mask content: one stored copy, held by sample a's row
        for pert in ("none", "noise(sigma=2)"):
            store.add(_mask_row(sid, pert, gt))
    store.flush()
    store.add(_mask_row("b", "none", ~gt))  # a later shard: its row wins
    store.flush()
    raw = pa.concat_tables([pq.read_table(s) for s in store.shards()])
    assert sum(m is not None for m in raw.column("gt_mask").to_pylist()) == 2
    got = store.read_samples("d", "test", ["c", "b"]).to_pylist()
    assert [(r["perturbation"], r["sample_id"]) for r in got] == [("noise(sigma=2)", "b"), ("noise(sigma=2)", "c"),
                                                                    ("none", "b"), ("none", "c")]  # as read()
    expected = {("b", "none"): ~gt, ("b", "noise(sigma=2)"): gt, ("c", "none"): gt, ("c", "noise(sigma=2)"): gt}
    for r in got:
        assert np.array_equal(decode_bool_mask(r["gt_mask"], 12, 16), expected[(r["sample_id"], r["perturbation"])])
    assert store.read_samples("d", "test", ["zzz"]).num_rows == 0
    groups = store.read_groups()
    assert list(groups) == [("d", "test", "noise(sigma=2)"), ("d", "test", "none")]
    assert groups[("d", "test", "none")].column("sample_id").to_pylist() == ["a", "b", "c"]
    assert "pred_mask" not in groups[("d", "test", "none")].column_names
    assert decode_stats(groups[("d", "test", "none")].column("mask_stats")[1].as_py())[1].sum() == (~gt).sum()


def _conf_row(sample_id: str, conf: np.ndarray | None, pred: np.ndarray | None, store_masks: str = "full") -> dict:
    shape = (pred if pred is not None else conf).shape
    return prediction_row(RunIdentity("m:x", None, "pol", 0), dataset="d", split="test", sample_id=sample_id,
                          perturbation="none", params_json="{}", label=2, probs=[0.2, 0.3, 0.5], probs_space="ternary",
                          size=shape, pred_mask=pred, gt_mask=np.zeros(shape, bool), meta={}, error=None, text=None,
                          store_masks=store_masks, confidence=conf)


def test_confidence_maps_round_trip_within_half_a_code(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    conf = rng.random((19, 27)).astype(np.float32)
    conf[0, :3] = [0.0, 1.0, 0.5]
    store = PredictionStore(tmp_path / "p", flush_every=2)
    store.add(_conf_row("with", conf, rng.random((19, 27))))
    store.add(_conf_row("without", None, rng.random((19, 27))))
    store.add(_conf_row("stats", conf, rng.random((19, 27)), store_masks="stats"))
    store.flush()
    rows = {r["sample_id"]: r for r in store.read().to_pylist()}
    back = decode_prob_mask(rows["with"]["confidence"], rows["with"]["pred_mask_h"], rows["with"]["pred_mask_w"])
    assert back.dtype == np.float32 and back.shape == conf.shape
    assert np.max(np.abs(back - conf)) <= 0.5 / 255 + 1e-7 and back[0, 0] == 0.0 and back[0, 1] == 1.0
    assert np.array_equal(back, quantise_mask(conf) / np.float32(255))
    assert rows["without"]["confidence"] is None and rows["stats"]["confidence"] is None  # no model map / no bytes
    batches = [r for b in store.iter_row_groups(["sample_id", "confidence"]) for r in b.to_pylist()]
    assert {r["sample_id"]: r["confidence"] for r in batches} == {k: r["confidence"] for k, r in rows.items()}
    assert "confidence" not in store.read_groups()[("d", "test", "none")].column_names  # light columns: no bytes


def test_a_bad_confidence_map_is_a_recorded_error() -> None:
    pred = np.full((6, 7), 0.3)
    assert "needs a predicted mask" in _conf_row("s", np.ones((6, 7)), None)["error"]
    assert "needs a predicted mask of that shape" in _conf_row("s", np.ones((6, 6)), pred)["error"]
    bad = np.ones((6, 7))
    bad[1, 1] = np.inf
    row = _conf_row("s", bad, pred)
    assert row["error"] == "model: the confidence map has NaN or infinite values"
    assert row["confidence"] is None and row["pred_mask"] is None


def as_format_2(store: PredictionStore) -> None:
    """Rewrite every shard as store format 2 wrote it: no ``confidence`` column, version "2"."""
    for shard in store.shards():
        pf = pq.ParquetFile(shard)
        sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
        table = pf.read().drop_columns(["confidence"]).replace_schema_metadata({"sida_store": "2"})
        pq.write_table(table, shard, row_group_size=max(sizes))


def test_format_2_shards_read_with_a_null_confidence(tmp_path: Path) -> None:
    gt = np.zeros((12, 16), dtype=bool)
    gt[2:6, 3:9] = True
    store = PredictionStore(tmp_path / "p", flush_every=10)
    for sid in ("a", "b"):
        store.add({**_mask_row(sid, "none", gt), "confidence": encode_prob_mask(np.ones((12, 16)))})
    store.flush()
    before = store.read().drop_columns(["confidence"])
    as_format_2(store)
    assert "confidence" not in pq.read_schema(store.shards()[0]).names
    after = store.read()
    assert after.drop_columns(["confidence"]).equals(before) and after.column("confidence").null_count == 2
    for batch in (*store.iter_batches(["sample_id", "confidence", "gt_mask"]),
                  *store.iter_row_groups(["sample_id", "confidence", "gt_mask"]),
                  store.read_samples("d", "test", ["a"], ["sample_id", "confidence"])):
        assert batch.column("confidence").null_count == batch.num_rows and batch.num_rows
    assert store.index(["confidence"]).table.column("confidence").null_count == 2
