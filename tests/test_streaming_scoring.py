"""Streaming scoring equals one in-memory pass over decoded masks, for every convention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import bench.evaluation.scorer as scorer
import tests.runner_fixtures as fx
from bench.cli.compose import run_and_score
from bench.evaluation.metric_feed import metric_result
from bench.evaluation.protocol import load_protocol
from bench.evaluation.scorer import score_run
from bench.evaluation.store import PredictionStore, decode_bool_mask, decode_prob_mask, encode_prob_mask
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
