"""Streaming scoring equals one in-memory pass over decoded masks, for every convention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import bench.evaluation.scorer as scorer
import tests.runner_fixtures as fx
from bench.cli.compose import run_and_score
from bench.errors import UserError
from bench.evaluation.metric_feed import NO_PIXEL_COLUMNS, NO_PIXELS, metric_from_rows, metric_result
from bench.evaluation.protocol import load_protocol
from bench.evaluation.scorer import score_run
from bench.evaluation.store import LIGHT_COLUMNS, PredictionStore, decode_bool_mask, decode_prob_mask, encode_prob_mask
from bench.plugins import create_metric

torch.set_num_threads(1)

PROTOCOL = fx.FAKE_PROTOCOL.replace("options: {n: 12}", "options: {n: 30}").replace(
    "  - name: localization\n",
    "  - name: localization\n  - name: sida_legacy\n").replace("bootstrap: {n: 20, seed: 0}", "bootstrap: {n: 25, seed: 4}")

CONVENTIONS = [
    {},
    {"aggregation": "global"},
    {"threshold": "best"},
    {"threshold": "best", "aggregation": "global", "bins": 50},
    {"polarity": "double", "threshold": 0.3},
    {"polarity": "reverse", "images": "tampered_and_real"},
    {"threshold": float(np.float32(128) / np.float32(255))},  # exactly a quantisation level: p > t is strict
    {"border_exclusion": 1},  # pixel path: masks decoded from the store, row group by row group
    {"border_exclusion": [2, 1], "aggregation": "global", "polarity": "best_of", "threshold": "best", "bins": 64},
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("stream")
    out = folder / "run"
    run_and_score(fx.write_protocol(folder, PROTOCOL), "runner_test", out, flush_every=7, batch_size=4, tables=False)
    assert len(PredictionStore(out / "predictions").shards()) >= 10
    return out


def in_memory(run_dir: Path, name: str, params: dict, perturbation: str) -> dict:
    """The reference: all rows of a group read at once, masks decoded, one ``update``."""
    proto = load_protocol(run_dir.parent / "fake.yaml")
    rows = [r for r in PredictionStore(run_dir / "predictions").read().to_pylist()
            if r["perturbation"] == perturbation and r["error"] is None]
    metric = create_metric(name, **params)
    gts = [decode_bool_mask(r["gt_mask"], r["gt_mask_h"], r["gt_mask_w"]) if r["gt_mask"] else None for r in rows]
    preds = [decode_prob_mask(r["pred_mask"], r["pred_mask_h"], r["pred_mask_w"]) for r in rows]
    labels = [r["label"] for r in rows]
    ids = [r["sample_id"] for r in rows]
    if name == "localization":
        metric.update(gts, preds, labels, sample_ids=ids)
    else:
        metric.update(labels, np.array([r["probs"] for r in rows]), gts, preds, sample_ids=ids)
    return metric_result(metric, proto).model_dump()


@pytest.mark.parametrize("params", CONVENTIONS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "default")
def test_localization_streamed_equals_in_memory(run_dir: Path, params: dict) -> None:
    results = score_run(run_dir, metric_options={"localization": params} if params else None)
    for entry in results.entries:
        got = entry.metrics["localization"].model_dump()
        want = in_memory(run_dir, "localization", params, entry.perturbation.key)
        extra = {k: got["values"].pop(k) for k in ("n_no_gt_mask", "n_no_pred_mask")}
        assert got == want  # values and bootstrap intervals, bit for bit
        assert extra["n_no_pred_mask"]["value"] == 0


def test_legacy_and_detection_streamed_equal_in_memory(run_dir: Path) -> None:
    results = score_run(run_dir)
    for entry in results.entries:
        got = entry.metrics["sida_legacy"].model_dump()
        assert got == in_memory(run_dir, "sida_legacy", {}, entry.perturbation.key)


def test_batch_size_of_the_stream_does_not_matter(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = score_run(run_dir)
    monkeypatch.setattr(scorer, "FEED_ROWS", 2)
    small = score_run(run_dir)
    assert [e.model_dump() for e in full.entries] == [e.model_dump() for e in small.entries]


def test_sorting_by_sample_id_makes_feed_order_irrelevant() -> None:
    from bench.evaluation.bootstrap import bootstrap_ci

    rng = np.random.default_rng(3)
    labels, probs = rng.integers(0, 3, 40), rng.dirichlet(np.ones(3), 40)
    ids = [f"s{i:03d}" for i in range(40)]
    ordered = create_metric("ternary_detection")
    ordered.update(labels, probs, sample_ids=ids)
    shuffled = create_metric("ternary_detection")
    perm = rng.permutation(40)
    for part in np.array_split(perm, 5):
        shuffled.update(labels[part], probs[part], sample_ids=[ids[i] for i in part])
    assert bootstrap_ci(shuffled, 30, seed=1) != bootstrap_ci(ordered, 30, seed=1)
    shuffled.sort_by_sample_id()
    assert shuffled.sample_ids() == ids
    assert bootstrap_ci(shuffled, 30, seed=1) == bootstrap_ci(ordered, 30, seed=1)


def test_binned_auc_of_stored_masks_is_the_exact_auc() -> None:
    """With 1000 bins every 8-bit code has its own bin, so the binned AUC of a stored mask equals
    scikit-learn's exact AUC of the quantised scores (the only AUC error is the quantisation's)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    for _ in range(5):
        gt = rng.random((37, 41)) > 0.6
        pred = decode_prob_mask(encode_prob_mask(rng.random(gt.shape) * 0.7 + 0.3 * gt), *gt.shape)
        metric = create_metric("localization")
        metric.update([gt], [pred], [2])
        assert metric.compute()["pixel_auc"] == pytest.approx(roc_auc_score(gt.ravel(), pred.ravel()), abs=1e-12)


def test_pixel_path_resolves_ground_truths_stored_in_other_row_groups(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Row groups of 4 rows: most rows reference a ground truth stored in an earlier row group of
    their shard; the border-excluded score still equals the metric on the fully decoded masks."""
    import pyarrow.parquet as pq

    import bench.evaluation.store as store_module

    monkeypatch.setattr(store_module, "ROW_GROUP", 4)
    out = tmp_path / "run"
    run_and_score(fx.write_protocol(tmp_path, PROTOCOL), "runner_test", out, flush_every=45, batch_size=4, tables=False)
    crossing = 0
    for shard in PredictionStore(out / "predictions").shards():
        pf = pq.ParquetFile(shard)
        holder = {}
        for g in range(pf.num_row_groups):
            t = pf.read_row_group(g, columns=["gt_ref", "gt_mask"]).to_pylist()
            holder.update({r["gt_ref"]: g for r in t if r["gt_mask"] is not None and r["gt_ref"] not in holder})
            crossing += sum(r["gt_mask"] is None and r["gt_ref"] is not None and holder[r["gt_ref"]] < g for r in t)
    assert crossing >= 5
    params = {"border_exclusion": [2, 1], "polarity": "best_of"}
    for entry in score_run(out, metric_options={"localization": params}).entries:
        got = entry.metrics["localization"].model_dump()
        for k in ("n_no_gt_mask", "n_no_pred_mask"):
            got["values"].pop(k)
        assert got == in_memory(out, "localization", params, entry.perturbation.key)
        assert got["values"]["n_images"]["value"] == 10


def test_stats_only_store_records_a_skip_for_metrics_needing_pixels(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_and_score(fx.write_protocol(tmp_path, PROTOCOL + "store_masks: stats\n"), "runner_test", out, tables=False)
    plain = score_run(out).entries[0].metrics["localization"]
    assert plain.skipped is None and plain.values["n_images"].value == 10
    for params in ({"border_exclusion": 3}, {"pred_resize": "nearest"}):
        for entry in score_run(out, metric_options={"localization": params}).entries:
            result = entry.metrics["localization"]
            assert result.skipped == NO_PIXELS.format(name="localization") and not result.values
            assert "border_exclusion" in result.convention
            assert entry.metrics["ternary_detection"].skipped is None


def test_metric_from_rows_without_mask_columns_gives_the_reason(run_dir: Path) -> None:
    proto = load_protocol(run_dir.parent / "fake.yaml")
    rows = PredictionStore(run_dir / "predictions").read_groups(LIGHT_COLUMNS)[("runner_fake", "test", "none")]
    state = metric_from_rows(proto, "localization", rows, {"border_exclusion": 1})
    assert state == NO_PIXEL_COLUMNS.format(name="localization")
    full = PredictionStore(run_dir / "predictions").read_groups(None)[("runner_fake", "test", "none")]
    metric = metric_from_rows(proto, "localization", full, {"border_exclusion": 1})
    want = in_memory(run_dir, "localization", {"border_exclusion": 1}, "none")
    assert metric_result(metric, proto).model_dump() == want


def test_imported_masks_of_another_size_are_scored_only_with_pred_resize(tmp_path: Path) -> None:
    """A 6x5 predicted mask on a larger ground truth: stored as given, no ``mask_stats``; with
    ``pred_resize`` it is resized to the ground truth and scored; without, one line naming it."""
    import pandas as pd

    from bench.cli.compose import score_predictions_file

    ids = [f"{('real', 'full_synthetic', 'tampered')[i % 3]}/{i:04d}" for i in range(12)]
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(3), size=12)
    df = pd.DataFrame({"sample_id": ids, "prob_real": p[:, 0], "prob_full_synthetic": p[:, 1],
                       "prob_tampered": p[:, 2], "mask_path": None})
    for i in range(2, 12, 3):
        np.save(tmp_path / f"m{i}.npy", rng.random((6, 5)))
        df.loc[i, "mask_path"] = f"m{i}.npy"
    df.to_csv(tmp_path / "preds.csv", index=False)
    base = fx.FAKE_PROTOCOL.replace("""  - {name: runner_noise, params: {sigma: 6}, label: "Noise 6"}
  - {name: runner_half, label: "Half"}
""", "")
    resized = base.replace("  - name: localization\n", "  - name: localization\n    params: {pred_resize: bilinear}\n")
    res = score_predictions_file(tmp_path / "preds.csv", fx.write_protocol(tmp_path, resized, "r.yaml"), tmp_path / "a")
    rows = PredictionStore(tmp_path / "a" / "predictions").read().to_pylist()
    tampered = [r for r in rows if r["label"] == 2]
    assert all(r["mask_stats"] is None and (r["pred_mask_h"], r["pred_mask_w"]) == (6, 5) for r in tampered)
    assert all(r["gt_mask_h"] > 6 for r in tampered)
    metric = create_metric("localization", pred_resize="bilinear")
    metric.update([decode_bool_mask(r["gt_mask"], r["gt_mask_h"], r["gt_mask_w"]) for r in tampered],
                  [decode_prob_mask(r["pred_mask"], 6, 5) for r in tampered], [2] * len(tampered),
                  sample_ids=[r["sample_id"] for r in tampered])
    got = res.entries[0].metrics["localization"].model_dump()
    for k in ("n_no_gt_mask", "n_no_pred_mask"):
        got["values"].pop(k)
    assert got == metric_result(metric, load_protocol(tmp_path / "r.yaml")).model_dump()
    assert got["values"]["n_images"]["value"] == 4
    with pytest.raises(UserError, match=r"sample 'tampered/0002'.*differ in size.*pred_resize"):
        score_predictions_file(tmp_path / "preds.csv", fx.write_protocol(tmp_path, base, "b.yaml"), tmp_path / "b")
    legacy = base.replace("  - name: localization\n", "  - name: sida_legacy\n")
    scored = score_predictions_file(tmp_path / "preds.csv", fx.write_protocol(tmp_path, legacy, "c.yaml"), tmp_path / "c")
    values = scored.entries[0].metrics["sida_legacy"].values  # issue 15: a recorded rule, never an abort
    assert values["n_tampered_mask_shape_mismatch"].value == len(tampered) and values["n_tampered"].value == 0


def by_hand_weighted_f1(out: Path, perturbation: str) -> float:
    """Mean over tampered images of the confidence-weighted F1 at p > 0.5, from the stored masks."""
    f1s = []
    for r in PredictionStore(out / "predictions").read().to_pylist():
        if r["perturbation"] != perturbation or r["label"] != 2 or r["error"] is not None:
            continue
        gt = decode_bool_mask(r["gt_mask"], r["gt_mask_h"], r["gt_mask_w"])
        pred = decode_prob_mask(r["pred_mask"], r["pred_mask_h"], r["pred_mask_w"]) > 0.5
        c = decode_prob_mask(r["confidence"], r["pred_mask_h"], r["pred_mask_w"]).astype(np.float64)
        tp, fp, fn = c[pred & gt].sum(), c[pred & ~gt].sum(), c[~pred & gt].sum()
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


def test_confidence_weighting_scores_the_stored_confidence_maps(tmp_path: Path) -> None:
    """A model with confidence maps: they are stored, the weighted F1 equals a hand computation from
    the store (and differs from the plain one); the option is recorded; a model without maps stores
    null and the weighted metric is a recorded skip, never an unweighted number."""
    from bench.evaluation.metric_feed import NO_CONFIDENCE

    proto = fx.write_protocol(tmp_path, PROTOCOL)
    out = tmp_path / "conf"
    plain = run_and_score(proto, "runner_test:confident", out, flush_every=7, batch_size=4, tables=False)
    rows = PredictionStore(out / "predictions").read().to_pylist()
    assert all(r["confidence"] is not None for r in rows)
    model = fx.RunnerTestModel("confident")
    first = next(r for r in rows if r["perturbation"] == "none")
    image = next(s for s in fx.FakeSidDataset(n=30).iter_samples() if s.id == first["sample_id"]).image
    stored = decode_prob_mask(first["confidence"], first["pred_mask_h"], first["pred_mask_w"])
    assert np.abs(stored - model.predict([image])[0].confidence).max() <= 0.5 / 255 + 1e-6
    weighted = score_run(out, metric_options={"localization": {"confidence_weighting": True}})
    for entry, unweighted in zip(weighted.entries, plain.entries):
        got = entry.metrics["localization"]
        assert got.values["pixel_f1"].value == pytest.approx(by_hand_weighted_f1(out, entry.perturbation.key))
        before = unweighted.metrics["localization"].values["pixel_f1"].value
        assert got.values["pixel_f1"].value != pytest.approx(before)
        assert "confidence_weighting" in got.convention and got.values["n_zero_confidence"].value == 0
    assert "confidence_weighting" not in plain.entries[0].metrics["localization"].convention  # never a default

    none = tmp_path / "none"
    run_and_score(proto, "runner_test", none, tables=False)
    assert all(r["confidence"] is None for r in PredictionStore(none / "predictions").read().to_pylist())
    result = score_run(none, metric_options={"localization": {"confidence_weighting": True}}).entries[0]
    skipped = result.metrics["localization"]
    assert skipped.skipped is not None and skipped.skipped.startswith(NO_CONFIDENCE.split("{sample")[0].format(
        name="localization")) and not skipped.values


def test_an_old_format_store_without_confidence_still_scores(tmp_path: Path) -> None:
    """Shards of store format 2 (no confidence column) score exactly as before; the weighted metric is
    a recorded skip there."""
    from tests.test_store import as_format_2

    out = tmp_path / "run"
    first = run_and_score(fx.write_protocol(tmp_path, PROTOCOL), "runner_test:confident", out, flush_every=9,
                          tables=False)
    store = PredictionStore(out / "predictions")
    as_format_2(store)
    assert all(pq_version(s) == "2" for s in store.shards())
    again = score_run(out)
    assert [e.model_dump() for e in again.entries] == [e.model_dump() for e in first.entries]
    weighted = score_run(out, metric_options={"localization": {"confidence_weighting": True}}).entries[0]
    assert "confidence_weighting needs" in str(weighted.metrics["localization"].skipped)


def pq_version(shard: Path) -> str:
    import pyarrow.parquet as pq

    return (pq.read_schema(shard).metadata or {})[b"sida_store"].decode()
