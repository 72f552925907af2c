"""Prediction store: mask encodings round-trip, atomic shards, keys that change with identity."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.evaluation.store import (PredictionStore, RunIdentity, decode_bool_mask, decode_prob_mask, encode_bool_mask,
                         encode_prob_mask, row_key)


def test_mask_encodings_round_trip() -> None:
    rng = np.random.default_rng(0)
    p = rng.random((17, 23)).astype(np.float32)
    p[0, :3] = [0.0, 1.0, 0.5]
    back = decode_prob_mask(encode_prob_mask(p), 17, 23)
    assert back.dtype == np.float32 and np.max(np.abs(back - p)) <= 0.5 / 65535 + 1e-7
    assert back[0, 0] == 0.0 and back[0, 1] == 1.0
    g = rng.random((9, 13)) > 0.5
    assert np.array_equal(decode_bool_mask(encode_bool_mask(g), 9, 13), g)


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


def test_shards_are_atomic_and_reads_are_sorted(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path / "p", flush_every=3)
    for i in reversed(range(7)):
        store.add(row(i))
    assert len(store.shards()) == 2  # 6 rows flushed, 1 buffered
    (tmp_path / "p" / ".tmp-part-x.parquet").write_bytes(b"half-written")  # left by a killed run
    store.flush()
    table = store.read()
    assert table.column("sample_id").to_pylist() == [f"s{i:02d}" for i in range(7)]
    assert store.stored_keys() == {f"k{i}" for i in range(7)}
