"""`sida-bench score`: a predictions file from outside the plugin system, validated row by row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, recall_score

import tests.runner_fixtures as fx
from bench.errors import UserError
from bench.cli.compose import score_predictions_file as score_file

PROTO = fx.FAKE_PROTOCOL.replace("""  - {name: runner_noise, params: {sigma: 6}, label: "Noise 6"}
  - {name: runner_half, label: "Half"}
""", "").replace("  - name: localization\n", "")
IDS = [f"{('real', 'full_synthetic', 'tampered')[i % 3]}/{i:04d}" for i in range(12)]


def frame(seed: int = 0) -> pd.DataFrame:
    p = np.random.default_rng(seed).dirichlet(np.ones(3), size=12)
    return pd.DataFrame({"sample_id": IDS, "prob_real": p[:, 0], "prob_full_synthetic": p[:, 1], "prob_tampered": p[:, 2]})


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_scores_match_scikit_learn(tmp_path: Path, suffix: str) -> None:
    df = frame()
    path = tmp_path / f"preds{suffix}"
    {".csv": lambda: df.to_csv(path, index=False), ".jsonl": lambda: df.to_json(path, orient="records", lines=True),
     ".parquet": lambda: df.to_parquet(path)}[suffix]()
    res = score_file(path, fx.write_protocol(tmp_path, PROTO), tmp_path / "out", name="mine")
    values = res.entries[0].metrics["ternary_detection"].values
    y = np.arange(12) % 3
    pred = df[["prob_real", "prob_full_synthetic", "prob_tampered"]].to_numpy().argmax(1)
    assert values["accuracy"].value == pytest.approx(np.mean(pred == y))
    assert values["macro_f1"].value == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    assert values["acc_tampered"].value == pytest.approx(recall_score(y, pred, labels=[2], average="macro"))
    assert (tmp_path / "out" / "results.json").is_file() and res.model["name"] == "mine"


@pytest.mark.parametrize("edit,message", [
    (lambda df: df.assign(sample_id=df.sample_id.where(df.index != 4, "real/9999")),
     r"row 5: sample_id 'real/9999' is not in runner_fake/test"),
    (lambda df: pd.concat([df, df.iloc[[2]]], ignore_index=True), r"row 13: duplicate prediction for sample_id 'tampered/0002'.*first at row 3"),
    (lambda df: df.drop(index=[7]), r"1 samples of runner_fake/test have no prediction"),
    (lambda df: df.assign(prob_real=df.prob_real.where(df.index != 3, np.nan)), r"row 4: prob_real is NaN"),
    (lambda df: df.assign(prob_real=df.prob_real.where(df.index != 5, 1.5)), r"row 6: prob_real = 1.5 is outside \[0, 1\]"),
    (lambda df: df.assign(prob_tampered=df.prob_tampered.where(df.index != 1, 0.0) + 0.0), r"row 2: probabilities sum to"),
    (lambda df: df.drop(columns=["prob_tampered"]), r"expected probability columns prob_real, prob_full_synthetic, prob_tampered"),
    (lambda df: df.rename(columns={"sample_id": "id"}), r"no 'sample_id' column"),
])
def test_validation_errors_name_the_row(tmp_path: Path, edit, message: str) -> None:
    path = tmp_path / "preds.csv"
    edit(frame()).to_csv(path, index=False)
    with pytest.raises(UserError, match=message):
        score_file(path, fx.write_protocol(tmp_path, PROTO), tmp_path / "out")


def test_binary_file_on_ternary_protocol_uses_binary_on_ternary(tmp_path: Path) -> None:
    path = tmp_path / "preds.csv"
    pd.DataFrame({"sample_id": IDS, "prob_fake": np.linspace(0, 1, 12)}).to_csv(path, index=False)
    res = score_file(path, fx.write_protocol(tmp_path, PROTO), tmp_path / "out")
    entry = res.entries[0]
    assert entry.adapter.startswith("BinaryOnTernary")
    fake = np.linspace(0, 1, 12) >= 0.5
    y = np.arange(12) % 3
    assert entry.metrics["ternary_detection"].values["accuracy"].value == pytest.approx(np.mean(fake == (y != 0)))


def test_unsupported_format(tmp_path: Path) -> None:
    path = tmp_path / "preds.txt"
    path.write_text("x")
    with pytest.raises(UserError, match="unsupported predictions format"):
        score_file(path, fx.write_protocol(tmp_path, PROTO), tmp_path / "out")
