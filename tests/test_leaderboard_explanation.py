"""The explanation board: columns and intervals equal to results.json, ROUGE-L ranking with
paired-bootstrap ties, "not applicable" (never zeros) for a model without text, the
no-reference layout, and CSS only when the protocol's embedder was found."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

import tests.leaderboard_fixtures as lf
from bench.evaluation.bootstrap import paired_bootstrap
from bench.evaluation.metric_feed import NOT_APPLICABLE
from bench.evaluation.protocol import CLEAN
from bench.evaluation.results import MetricValue
from bench.leaderboard.entries import load_entries, rebuild_streamed
from bench.leaderboard.ranking import Board, Row, build_boards, paired_p_value
from bench.leaderboard.site import build_site

N = 24
LABELS = np.arange(N) % 3
TEXTS = lf.explanation_texts(N)


def scored(tmp_path: Path, name: str, texts: list[str | None] | None, protocol: str = "lb_fake_explanation",
           masks: bool = False) -> Path:
    return lf.score_explanation(tmp_path, name, texts, N, protocol, masks)


def one_board(tmp_path: Path) -> Board:
    boards, skipped = build_boards(load_entries([tmp_path / "results"]))
    assert not skipped
    [board] = boards
    return board


def recorded(row: Row) -> dict[str, MetricValue]:
    """The explanation values of the row's entry as results.json records them (clean)."""
    clean = next(e for e in row.entry.results.entries if e.perturbation.key == CLEAN)
    return clean.metrics["explanation"].values


def assert_equal_to_results_json(board: Board) -> None:
    for row in board.rows:
        values = recorded(row)
        for column, stat in zip(board.columns, row.columns):
            (key,) = column.keys
            assert stat.value == pytest.approx(values[key].value), (row.entry.label, key)
            if column.count:
                assert stat.ci is None and values[key].ci is None
            else:
                assert stat.ci == pytest.approx(values[key].ci), (row.entry.label, key)


@pytest.fixture
def explained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    lf.bundle(monkeypatch, tmp_path / "protocols", n=N)
    scored(tmp_path, "Echo", TEXTS["Echo"], masks=True)
    for name in ("Twin", "Half", "Template"):
        scored(tmp_path, name, TEXTS[name])
    scored(tmp_path, "Silent", None)
    return tmp_path


def test_board_columns_equal_results_json_and_rank_by_rouge_l(explained: Path) -> None:
    board = one_board(explained)
    labels = [c.label for c in board.columns]
    assert board.kind == "explanation" and labels[0] == "ROUGE-L"
    assert {"BLEU-1", "BLEU-2", "BLEU-4", "chrF", "Parsed", "Slot Type", "Class = pred", "Region = pred",
            "n no reference", "n unparseable"} <= set(labels)
    assert "CSS" not in labels  # the protocol names no embedder: the optional column is left off
    assert_equal_to_results_json(board)
    by = {r.entry.label: r for r in board.rows}
    assert by["Echo 1"].main.value == pytest.approx(1.0)
    assert 0.0 < by["Template 1"].main.value < by["Half 1"].main.value < 1.0
    values = {label: recorded(r) for label, r in by.items()}
    assert values["Echo 1"]["region_vs_pred"].value == 1.0 and values["Half 1"]["region_vs_pred"].value is None
    assert values["Echo 1"]["n_no_reference"].value == N / 2 and values["Template 1"]["n_unparseable"].value == N
    assert [r.entry.label for r in board.rows[:2]] == ["Echo 1", "Twin 1"]
    assert [r.entry.label for r in board.rows[2:]] == ["Half 1", "Template 1"]
    assert [r.rank for r in board.rows] == [1, 1, 3, 4] and [r.tied for r in board.rows] == [True, True, False, False]


def test_ties_are_the_paired_bootstrap_of_per_sample_rouge_l(explained: Path) -> None:
    board = one_board(explained)
    by = {r.entry.label: r for r in board.rows}
    slugs = {label: r.entry.slug for label, r in by.items()}
    assert board.p_values[(slugs["Echo 1"], slugs["Twin 1"])] == 1.0  # identical texts always tie
    group = ("runner_fake", "test", CLEAN)
    half, template = (rebuild_streamed(by[k].entry, "explanation", group) for k in ("Half 1", "Template 1"))
    ref = paired_bootstrap(half, template, "rouge_l", n_resamples=200, seed=0)
    assert paired_p_value(by["Half 1"].draws, by["Template 1"].draws) == pytest.approx(ref["p_value"])
    assert ref["p_value"] < 0.05 and by["Template 1"].behind == [slugs[k] for k in ("Echo 1", "Twin 1", "Half 1")]


def test_a_model_without_text_is_not_applicable_never_zero(explained: Path) -> None:
    board = one_board(explained)
    [(entry, reason)] = board.not_applicable
    assert entry.label == "Silent 1" and reason == NOT_APPLICABLE
    assert all(r.entry.label != "Silent 1" for r in board.rows) and len(board.rows) == 4
    clean = next(e for e in entry.results.entries if e.perturbation.key == CLEAN)
    assert clean.metrics["explanation"].skipped == NOT_APPLICABLE and not clean.metrics["explanation"].values

    data = build_site([explained / "results"], explained / "site")
    [b] = data["boards"]
    assert [e["method"] for e in b["not_applicable"]] == ["Silent 1"]
    assert "Silent 1" not in [e["method"] for e in b["entries"]] and data["unranked"] == []
    assert [c["keys"] for c in b["columns"]][0] == ["rouge_l"]
    rows = list(csv.DictReader(io.StringIO((explained / "site" / "leaderboard.csv").read_text())))
    silent = [r for r in rows if r["method"] == "Silent 1"]
    assert len(silent) == len(b["columns"]) and all(r["rank"] == "n/a" and r["value"] == "" for r in silent)
    html = (explained / "site" / "index.html").read_text()
    row = html[html.index(f'data-slug="{entry.slug}"'):]
    row = row[:row.index("</tr>")]
    assert row.count(">n/a</td>") == 1 + len(b["columns"]) and "0.0" not in row
    page = (explained / "site" / "entries" / entry.slug / "index.html").read_text()
    assert "not ranked, not applicable" in page


def test_a_split_without_references_ranks_by_class_consistency(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    lf.bundle(monkeypatch, tmp_path / "protocols", n=N)
    wrong = [lf.TEMPLATE.format(lf.VERDICT[(int(LABELS[i]) + (i % 2)) % 3]) for i in range(N)]  # half contradict
    scored(tmp_path, "Faithful", TEXTS["Template"], protocol="lb_fake_explanation_noref")
    scored(tmp_path, "Unfaithful", wrong, protocol="lb_fake_explanation_noref")
    board = one_board(tmp_path)
    assert board.kind == "explanation_no_reference" and board.columns[0].label == "Class = pred"
    assert "ROUGE-L" not in [c.label for c in board.columns]
    assert_equal_to_results_json(board)
    assert [(r.entry.label, r.main.value, r.rank) for r in board.rows] == [("Faithful 1", 1.0, 1),
                                                                           ("Unfaithful 1", 0.5, 2)]
    assert recorded(board.rows[0])["n_no_reference"].value == N


def test_css_column_when_the_embedder_is_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests.test_explanation_metric import _tiny_bert

    folder = _tiny_bert(tmp_path / "tiny-bert")
    lf.bundle(monkeypatch, tmp_path / "protocols", n=N, explanation_params=f"css_embedder: tiny-bert, "
                                                                           f"css_path: {json.dumps(str(folder))}")
    scored(tmp_path, "Echo", TEXTS["Echo"])
    scored(tmp_path, "Half", TEXTS["Half"])
    board = one_board(tmp_path)
    assert "CSS" in [c.label for c in board.columns]
    assert_equal_to_results_json(board)
    css = board.columns.index(next(c for c in board.columns if c.label == "CSS"))
    assert board.rows[0].columns[css].value == pytest.approx(1.0, abs=1e-5)
