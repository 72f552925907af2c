"""Leaderboard boards: intervals equal to results.json, paired ties on constructed cases,
protocol identity (versions, conventions never ranked together), byte-identical rebuilds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tests.leaderboard_fixtures as lf
from bench.evaluation.bootstrap import paired_bootstrap
from bench.leaderboard.entries import load_entries, rebuild_metric
from bench.leaderboard.ranking import build_boards, paired_p_value
from bench.leaderboard.site import build_site
from bench.leaderboard.submit import score_submission
from bench.evaluation.protocol import CLEAN


@pytest.fixture
def protos(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Path]:
    return lf.bundle(monkeypatch, tmp_path / "protocols", n=60)


def scored(tmp_path: Path, name: str, p: np.ndarray, protocol: str = "lb_fake", version: int = 1,
           binary: bool = False) -> Path:
    df = lf.frame(p, n=len(p))
    if binary:
        df = pd.DataFrame({"sample_id": df.sample_id, "perturbation": df.perturbation,
                           "prob_fake": 1.0 - df.prob_real})
    man = lf.manifest(method={"name": name, "version": "1", "authors": ["T"], "code": "https://example.org/x"},
                      predictions=[{"protocol": protocol, "version": version, "file": "preds.csv"}])
    sub = lf.write_submission(tmp_path / "subs" / name, df, man)
    [out] = score_submission(sub, tmp_path / "results" / name)
    return out


def board_of(tmp_path: Path):
    boards, skipped = build_boards(load_entries([tmp_path / "results"]))
    assert not skipped
    return boards


def test_identical_predictions_tie_and_a_clearly_better_one_does_not(protos: dict[str, Path], tmp_path: Path) -> None:
    weak = lf.probs(0.4, seed=1, n=60)
    scored(tmp_path, "Twin A", weak)
    scored(tmp_path, "Twin B", weak)
    scored(tmp_path, "Strong", lf.probs(0.95, seed=2, n=60))
    [board] = board_of(tmp_path)
    order = [(r.entry.label, r.rank, r.tied) for r in board.rows]
    assert order == [("Strong 1", 1, False), ("Twin A 1", 2, True), ("Twin B 1", 2, True)]
    slugs = {r.entry.label: r.entry.slug for r in board.rows}
    assert board.p_values[(slugs["Twin A 1"], slugs["Twin B 1"])] == 1.0
    assert board.p_values[(slugs["Strong 1"], slugs["Twin A 1"])] < 0.05
    assert board.rows[1].behind == [slugs["Strong 1"]]


def test_close_entries_are_tied(protos: dict[str, Path], tmp_path: Path) -> None:
    base = lf.probs(0.6, seed=3, n=60)
    other = base.copy()
    other[[0, 1]] = other[[0, 1]][:, [1, 2, 0]]  # two predictions changed
    scored(tmp_path, "A", base)
    scored(tmp_path, "B", other)
    [board] = board_of(tmp_path)
    assert [r.rank for r in board.rows] == [1, 1] and all(r.tied for r in board.rows)


def test_intervals_and_values_equal_results_json_and_paired_bootstrap(protos: dict[str, Path], tmp_path: Path) -> None:
    a = scored(tmp_path, "A", lf.probs(0.7, seed=4, n=60))
    scored(tmp_path, "B", lf.probs(0.5, seed=5, n=60))
    [board] = board_of(tmp_path)
    entries = {r.entry.folder: r for r in board.rows}
    row_a = entries[a.resolve()]
    clean = next(e for e in row_a.entry.results.entries if e.perturbation.key == CLEAN)
    recorded = clean.metrics["ternary_detection"].values
    for column, stat in zip(board.columns, row_a.columns):
        (key,) = column.keys
        assert stat.value == pytest.approx(recorded[key].value)
        assert stat.ci == pytest.approx(recorded[key].ci)
    ma, mb = (rebuild_metric("ternary_detection", r.entry.rows("runner_fake", "test", CLEAN), r.entry.protocol)
              for r in board.rows)
    ref = paired_bootstrap(ma, mb, "accuracy", n_resamples=200, seed=0)
    assert paired_p_value(board.rows[0].draws, board.rows[1].draws) == pytest.approx(ref["p_value"])
    assert board.bootstrap == {"method": "percentile bootstrap over samples", "n_resamples": 200,
                               "confidence": 0.95, "seed": 0}


def test_versions_and_conventions_are_never_ranked_together(protos: dict[str, Path], tmp_path: Path) -> None:
    scored(tmp_path, "A", lf.probs(0.7, seed=4, n=60))
    scored(tmp_path, "B", lf.probs(0.6, seed=5, n=60))
    scored(tmp_path, "New", lf.probs(0.9, seed=6, n=60), protocol="lb_fake_v2", version=2)
    scored(tmp_path, "Binary", lf.probs(0.9, seed=7, n=60), binary=True)
    boards = board_of(tmp_path)
    by_members = {tuple(sorted(r.entry.label for r in b.rows)): b for b in boards}
    assert set(by_members) == {("A 1", "B 1"), ("New 1",), ("Binary 1",)}
    binary = by_members[("Binary 1",)]
    assert binary.apart is not None and "different metric conventions" in binary.apart
    assert '"mode": "binary_on_ternary"' in binary.apart
    assert by_members[("New 1",)].version == 2 and by_members[("New 1",)].protocol == "lb_fake_v2"


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rebuild_is_byte_identical_and_data_files_agree(protos: dict[str, Path], tmp_path: Path) -> None:
    a = scored(tmp_path, "A", lf.probs(0.7, seed=4, n=60))
    b = scored(tmp_path, "B", lf.probs(0.9, seed=5, n=60))
    data = build_site([a, b], tmp_path / "site")
    one = _tree(tmp_path / "site")
    build_site([tmp_path / "results"], tmp_path / "results" / "site")  # a site below the inputs is not an input
    build_site([tmp_path / "results"], tmp_path / "site")  # in place, inputs found in another order
    two = _tree(tmp_path / "site")
    assert one.keys() == two.keys() and all(one[k] == two[k] for k in one)
    assert {"index.html", "leaderboard.json", "leaderboard.csv", "style.css"} <= set(one)
    assert json.loads(one["leaderboard.json"]) == data
    [board] = data["boards"]
    assert [e["method"] for e in board["entries"]] == ["B 1", "A 1"]
    csv = one["leaderboard.csv"].decode().splitlines()
    main = [line for line in csv if ",Overall Acc," in line]
    assert [line.split(",")[7] for line in main] == ["B 1", "A 1"]
    assert float(main[0].split(",")[10]) == pytest.approx(board["entries"][0]["columns"]["Overall Acc"]["value"])


def test_refuses_to_overwrite_a_folder_that_is_not_a_site(protos: dict[str, Path], tmp_path: Path) -> None:
    from bench.errors import UserError

    a = scored(tmp_path, "A", lf.probs(0.7, seed=4, n=60))
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("x")
    with pytest.raises(UserError, match="is not a leaderboard site"):
        build_site([a], tmp_path / "precious")
    assert (tmp_path / "precious" / "thesis.tex").read_text() == "x"


def test_cli_build_and_unranked_entries(protos: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from bench.cli import main

    scored(tmp_path, "A", lf.probs(0.7, seed=4, n=60))
    df = lf.frame(lf.probs(0.7, seed=4, n=60), n=60)
    man = lf.manifest(predictions=[{"protocol": "lb_fake", "version": 1, "file": "preds.csv"}])
    lf.write_submission(tmp_path / "subs" / "cli", df, man)
    assert main(["submit", "score", str(tmp_path / "subs" / "cli"), "--out", str(tmp_path / "results" / "cli")]) == 0
    assert main(["leaderboard", "build", str(tmp_path / "results"), "--out", str(tmp_path / "site")]) == 0
    assert "1 boards, 2 ranked entries, 0 not ranked" in capsys.readouterr().out
    assert main(["leaderboard", "build", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s2")]) == 2
    assert "No results folder at" in capsys.readouterr().err


def test_undefined_differences_give_no_p_value() -> None:
    nan = np.full(5, np.nan)
    assert np.isnan(paired_p_value(nan, nan))
    assert paired_p_value(np.ones(9), np.zeros(9)) == pytest.approx(2 / 10)
    assert paired_p_value(np.zeros(9), np.zeros(9)) == 1.0


def test_robustness_board_ranks_the_mean_over_conditions(protos: dict[str, Path], tmp_path: Path) -> None:
    for name, quality in (("A", 0.8), ("B", 0.5)):
        scored(tmp_path, name, lf.probs(quality, seed=len(name), n=60), protocol="lb_fake_robustness")
    [board] = board_of(tmp_path)
    assert board.kind == "robustness" and [r.entry.label for r in board.rows] == ["A 1", "B 1"]
    for row in board.rows:
        recorded = {e.perturbation.label: e.metrics["ternary_detection"].values["accuracy"]
                    for e in row.entry.results.entries}
        assert [label for label, _ in row.conditions] == ["Clean", "Half"]
        for label, stat in row.conditions:
            assert stat.value == pytest.approx(recorded[label].value)
            assert stat.ci == pytest.approx(recorded[label].ci)
        assert row.main.value == pytest.approx(np.mean([v.value for v in recorded.values()]))
        lo, hi = row.main.ci
        assert lo <= row.main.value <= hi


def test_localization_board_uses_pixel_f1_from_the_masks(protos: dict[str, Path], tmp_path: Path) -> None:
    for name, fill in (("Good", 0.5), ("Off", 0.9)):
        df = lf.add_masks(tmp_path / "subs" / name, lf.frame(lf.probs(0.7, n=60), n=60), n=60, fill=fill)
        man = lf.manifest(method={"name": name, "version": "1", "authors": ["T"], "code": "https://example.org/x"},
                          predictions=[{"protocol": "lb_fake_localization", "version": 1, "file": "preds.csv"}])
        lf.write_submission(tmp_path / "subs" / name, df, man)
        score_submission(tmp_path / "subs" / name, tmp_path / "results" / name)
    [board] = board_of(tmp_path)
    assert board.kind == "localization" and [r.entry.label for r in board.rows] == ["Good 1", "Off 1"]
    for row in board.rows:
        clean = next(e for e in row.entry.results.entries if e.perturbation.key == CLEAN)
        recorded = clean.metrics["localization"].values
        for column, stat in zip(board.columns, row.columns):
            assert stat.value == pytest.approx(recorded[column.keys[0]].value)
            assert stat.ci == pytest.approx(recorded[column.keys[0]].ci)
    assert board.rows[0].rank == 1 and board.rows[1].rank == 2
