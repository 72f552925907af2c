"""`sida-bench score RUN_DIR`: re-scoring a finished run with other conventions, without the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tests.runner_fixtures as fx
from bench.cli import main
from bench.cli.compose import run_and_score
from bench.errors import UserError
from bench.evaluation.results import load_results
from bench.evaluation.scorer import score_run

torch.set_num_threads(1)

PROTOCOL = fx.FAKE_PROTOCOL.replace("  - name: localization\n", "  - name: localization\n    params: {threshold: 0.5}\n")


def entries(results) -> list[dict]:
    return [e.model_dump() for e in results.entries]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rescore")
    run_and_score(fx.write_protocol(folder, PROTOCOL), "runner_test", folder / "run", flush_every=5, tables=False)
    return folder


def forbid_models(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("re-scoring called the model")

    monkeypatch.setattr(fx.RunnerTestModel, "forward", boom)
    monkeypatch.setattr(fx.RunnerTestModel, "predict_preprocessed", boom)
    monkeypatch.setattr("bench.plugins.create_model", boom)


def test_rescore_with_another_threshold_equals_a_fresh_run(finished: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = fx.write_protocol(finished, PROTOCOL.replace("threshold: 0.5", "threshold: 0.3"), "other.yaml")
    fresh = run_and_score(other, "runner_test", finished / "fresh", tables=False)
    forbid_models(monkeypatch)
    code = main(["score", str(finished / "run"), "--metric-option", "localization.threshold=0.3",
                 "--out", str(finished / "rescored")])
    assert code == 0
    rescored = load_results(finished / "rescored")
    assert entries(rescored) == entries(fresh)
    assert rescored.protocol.resolved["metrics"] == fresh.protocol.resolved["metrics"]
    assert (finished / "rescored" / "tables" / "robustness.md").is_file()
    assert entries(rescored) != entries(load_results(finished / "run"))


def test_rescore_with_a_subset_protocol(finished: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean_only = PROTOCOL.replace('  - {name: runner_noise, params: {sigma: 6}, label: "Noise 6"}\n', "").replace(
        '  - {name: runner_half, label: "Half"}\n', "").replace("  - name: localization\n    params: {threshold: 0.5}\n", "")
    forbid_models(monkeypatch)
    sub = score_run(finished / "run", fx.write_protocol(finished, clean_only, "clean.yaml"))
    full = load_results(finished / "run")
    assert [e.perturbation.key for e in sub.entries] == ["none"]
    assert sub.entries[0].metrics["ternary_detection"] == full.entries[0].metrics["ternary_detection"]
    assert "localization" not in sub.entries[0].metrics


@pytest.mark.parametrize("argv,message", [
    (["--metric-option", "threshold=0.3"], "must be METRIC.KEY=VALUE"),
    (["--metric-option", "nosuch.threshold=0.3"], "metric 'nosuch' is not in protocol"),
    (["--metric-option", "localization.threshold=2"], "threshold must be"),
    (["--metric-option", "localization.colour=red"], "localization"),
])
def test_bad_metric_options_exit_2(finished: Path, argv: list[str], message: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", str(finished / "run"), *argv, "--out", str(finished / "bad")]) == 2
    assert message in capsys.readouterr().err


def test_unfinished_or_foreign_runs_are_refused(finished: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a run directory"):
        score_run(tmp_path)
    other = fx.FAKE_PROTOCOL.replace("name: runner_fake, split: test", "name: runner_fake, split: validation")
    with pytest.raises(UserError, match="no stored predictions for"):
        score_run(finished / "run", fx.write_protocol(tmp_path, other))


@pytest.mark.parametrize("argv,message", [
    (["score", "--out", "x"], "Give either RUN_DIR"),
    (["score", "runs/a", "--predictions", "p.csv", "--out", "x"], "Give either RUN_DIR"),
    (["score", "--predictions", "p.csv", "--out", "x"], "needs --protocol"),
    (["run", "sid_mini_detection", "--model", "runner_test", "--out", "x", "--shard", "2/2"], "0 <= I < K"),
    (["run", "sid_mini_detection", "--model", "runner_test", "--out", "x", "--shard", "1of2"], "must be I/K"),
])
def test_cli_mistakes_exit_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
