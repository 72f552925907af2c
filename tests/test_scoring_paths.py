"""SIDA legacy metrics through the runner: checked against a hand computation from the store."""

from pathlib import Path

import numpy as np

import tests.runner_fixtures as fx
from bench.cli.compose import run_and_score
from bench.evaluation.store import PredictionStore, decode_bool_mask, decode_prob_mask

LEGACY_PROTOCOL = """\
version: 1
name: runner_fake_legacy
label_space: ternary
seed: 0
datasets:
  - {name: runner_fake, split: test, options: {n: 12}}
perturbations:
  - {name: none, label: Clean}
metrics:
  - name: sida_legacy
bootstrap: {n: 0}
tables: []
"""


def test_sida_legacy_scored_from_store(tmp_path: Path) -> None:
    proto = fx.write_protocol(tmp_path, LEGACY_PROTOCOL, "legacy.yaml")
    results = run_and_score(proto, "runner_test", tmp_path / "run", tables=False)
    values = {k: v.value for k, v in results.entries[0].metrics["sida_legacy"].values.items()}

    rows = PredictionStore(tmp_path / "run" / "predictions").read().to_pylist()
    labels = np.array([r["label"] for r in rows])
    preds = np.array([int(np.argmax(r["probs"])) for r in rows])
    inter = union = 0
    per_image = []
    for r in rows:
        if r["label"] != 2:
            continue
        gt = decode_bool_mask(r["gt_mask"], r["gt_mask_h"], r["gt_mask_w"])
        pm = decode_prob_mask(r["pred_mask"], r["pred_mask_h"], r["pred_mask_w"]) > 0.5
        i, u = np.count_nonzero(gt & pm), np.count_nonzero(gt | pm)
        inter, union = inter + i, union + u
        per_image.append(i / (u + 1e-5) + (u == 0))
    acc = float((labels == preds).mean())
    ciou = inter / union
    assert values["n_tampered"] == 4
    np.testing.assert_allclose(values["legacy_accuracy"], acc)
    np.testing.assert_allclose(values["legacy_ciou"], ciou, rtol=1e-6)
    np.testing.assert_allclose(values["legacy_giou"], np.mean(per_image), rtol=1e-6)
    np.testing.assert_allclose(values["legacy_f1"], 2 * ciou * acc / (ciou + acc), rtol=1e-6)
    assert values["n_tampered_without_pred_mask"] == 0


BINARY_PROTOCOL = """\
version: 1
name: manifest_binary
label_space: binary
seed: 0
datasets:
  - {name: manifest, split: test}
perturbations:
  - {name: none, label: Clean}
metrics:
  - name: binary_detection
bootstrap: {n: 0}
tables: []
"""


def test_ternary_model_on_binary_data_uses_ternary_to_binary(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    lines = ["path,label"]
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
        lines.append(f"im{i}.png,{i % 2}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    proto = fx.write_protocol(tmp_path, BINARY_PROTOCOL, "binary.yaml")
    results = run_and_score(proto, "runner_test", tmp_path / "run", data_roots={"manifest": tmp_path / "manifest.csv"},
                           tables=False)
    entry = results.entries[0]
    assert entry.adapter.startswith("TernaryToBinary")
    rows = PredictionStore(tmp_path / "run" / "predictions").read().to_pylist()
    y = np.array([r["label"] for r in rows])
    p_fake = np.array([r["probs"][1] + r["probs"][2] for r in rows])
    from sklearn.metrics import roc_auc_score

    np.testing.assert_allclose(entry.metrics["binary_detection"].values["auc"].value, roc_auc_score(y, p_fake))
