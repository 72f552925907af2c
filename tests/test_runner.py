"""Runner: invariance to batch size / workers, per-sample errors, adapters, kill + resume on sid_mini."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tests.runner_fixtures as fx
from bench.cli.compose import run_and_score
from bench.errors import UserError
from bench.evaluation.results import load_results
from bench.evaluation.store import PredictionStore

REPO = Path(__file__).resolve().parent.parent
torch.set_num_threads(1)


def metrics_of(results) -> dict:
    return {(e.dataset, e.split, e.perturbation.key): (e.n, e.n_errors, e.model_dump()["metrics"]) for e in results.entries}


@pytest.fixture(scope="module")
def protocol(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fx.write_protocol(tmp_path_factory.mktemp("proto"))


def test_batch_size_and_workers_do_not_change_results(tmp_path: Path, protocol: Path) -> None:
    a = run_and_score(protocol, "runner_test", tmp_path / "a", batch_size=1, workers=0, tables=False)
    b = run_and_score(protocol, "runner_test", tmp_path / "b", batch_size=8, workers=2, tables=False)
    assert metrics_of(a) == metrics_of(b)
    assert [e.perturbation.label for e in a.entries] == ["Clean", "Noise 6", "Half"]
    assert all(e.n == 12 and e.n_errors == 0 for e in a.entries)
    acc = a.entries[0].metrics["ternary_detection"].values["accuracy"]
    assert 0.0 < acc.value < 1.0 and acc.ci is not None and acc.ci[0] <= acc.value <= acc.ci[1]


def test_decode_and_model_errors_are_stored_and_counted(tmp_path: Path) -> None:
    text = fx.FAKE_PROTOCOL.replace("options: {n: 12}", "options: {n: 12, broken: [real/0003]}")
    proto = fx.write_protocol(tmp_path, text)
    res = run_and_score(proto, "runner_test:flaky", tmp_path / "out", batch_size=4, tables=False)
    rows = PredictionStore(tmp_path / "out" / "predictions").read().to_pylist()
    assert len(rows) == 36  # nothing dropped
    errors = {(r["sample_id"], r["perturbation"]): r["error"] for r in rows if r["error"]}
    broken = {p: e for (sid, p), e in errors.items() if sid == "real/0003"}
    assert broken == {p: "decode: truncated file" for p in ("none", "runner_noise(sigma=6.0)", "runner_half()")}
    model_errors = [e for e in errors.values() if e.startswith("model: ValueError: odd red mean")]
    assert model_errors and len(model_errors) < 33  # the one-by-one retry isolated the failing images
    assert sum(e.n_errors for e in res.entries) == len(errors)
    assert res.entries[0].errors["real/0003"] == "decode: truncated file"


def test_binary_model_on_ternary_data_uses_binary_on_ternary(tmp_path: Path, protocol: Path) -> None:
    res = run_and_score(protocol, "runner_test:binary", tmp_path / "out", tables=False)
    entry = res.entries[0]
    assert entry.adapter.startswith("BinaryOnTernary")
    assert entry.metrics["ternary_detection"].convention["mode"] == "binary_on_ternary"


def test_localizer_without_detection_is_scored_through_its_mask(tmp_path: Path, protocol: Path) -> None:
    res = run_and_score(protocol, "runner_test:localizer", tmp_path / "out", tables=False)
    assert "LocalizerAsDetector" in res.model["adapters"]["detection"]
    assert res.entries[0].metrics["localization"].values["pixel_auc"].value is not None


def test_existing_predictions_need_resume(tmp_path: Path, protocol: Path) -> None:
    run_and_score(protocol, "runner_test", tmp_path / "out", tables=False)
    with pytest.raises(UserError, match="pass --resume"):
        run_and_score(protocol, "runner_test", tmp_path / "out", tables=False)


def test_limit_spreads_evenly_through_dataset_order(tmp_path: Path, protocol: Path) -> None:
    res = run_and_score(protocol, "runner_test", tmp_path / "out", limit=5, tables=False)
    ids = sorted({r["sample_id"] for r in PredictionStore(tmp_path / "out" / "predictions").read(["sample_id"]).to_pylist()})
    # 12 samples, limit 5: positions 0, 2, 4, 7, 9 (floor(i * 12 / 5))
    assert ids == sorted(["real/0000", "tampered/0002", "full_synthetic/0004", "full_synthetic/0007", "real/0009"])
    assert res.run["limit"] == 5 and res.entries[0].n_requested == 5
    assert "evenly spaced" in res.run["limit_rule"]


def test_spread_subset_by_hand() -> None:
    from bench.evaluation.runner import spread_subset

    ids = [f"c{i // 4}/{i}" for i in range(12)]  # three classes of four, ordered by class
    assert spread_subset(ids, 3) == ["c0/0", "c1/4", "c2/8"]
    assert spread_subset(ids, 20) == ids


@pytest.fixture(scope="module")
def sid_mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.sidmini import SMALL_PER_CLASS, SMALL_SIZE, build_sid_mini

    return build_sid_mini(tmp_path_factory.mktemp("sidmini"), per_class=SMALL_PER_CLASS, size=SMALL_SIZE)


def test_sid_mini_robustness_killed_and_resumed_equals_uninterrupted(tmp_path: Path, sid_mini_root: Path) -> None:
    out = tmp_path / "killed"
    args = ["run", "sid_mini_robustness", "--model", "runner_test", "--data-root", f"sid_mini={sid_mini_root}",
            "--out", str(out), "--flush-every", "4", "--batch-size", "2"]
    code = ("import torch; torch.set_num_threads(1); import tests.runner_fixtures; from bench.cli import main; "
            f"raise SystemExit(main({args!r}))")
    env = {**os.environ, "RUNNER_TEST_DELAY": "0.05"}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = PredictionStore(out / "predictions")
    deadline = time.time() + 120
    while len(store.shards()) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = len(store.read(["key"]))
    assert 0 < partial < 126 and not (out / "results.json").exists()

    resumed = run_and_score("sid_mini_robustness", "runner_test", out, data_roots={"sid_mini": sid_mini_root},
                           resume=True, batch_size=8, tables=False)
    keys = store.read(["key"]).column("key").to_pylist()
    assert len(keys) == len(set(keys)) == 126  # 18 samples × 7 conditions, none predicted twice
    full = run_and_score("sid_mini_robustness", "runner_test", tmp_path / "full", data_roots={"sid_mini": sid_mini_root},
                        tables=False)
    assert metrics_of(resumed) == metrics_of(full)
    loc = full.entries[0].metrics["localization"].values["pixel_auc"].value
    assert loc is not None and 0.0 <= loc <= 1.0
    assert load_results(out).entries[3].perturbation.label == "Resize 0.5"
