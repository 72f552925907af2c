"""`sida-bench table` on hand-made results files, against golden files (md, LaTeX, CSV)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import UserError
from bench.evaluation.results import MetricResult, MetricValue, PerturbationInfo, ProtocolInfo, ResultEntry, ResultsFile, load_results
from bench.tables import build_table, render

GOLDEN = Path(__file__).parent / "golden"
CLEAN = PerturbationInfo(key="none", name="none", label="Clean")
JPEG = PerturbationInfo(key="jpeg(quality=70)", name="jpeg", params={"quality": 70}, label="JPEG 70")


def values(**kv: float | None) -> MetricResult:
    return MetricResult(values={k: MetricValue(value=v) for k, v in kv.items()})


def results(model: str, kind: str, entries: list[ResultEntry]) -> ResultsFile:
    resolved = {"tables": [{"kind": kind, "caption": ""}]}
    return ResultsFile(created="2025-01-01T00:00:00+00:00",
                       protocol=ProtocolInfo(name=kind, version=1, source="", sha256="0", resolved=resolved),
                       model={"name": model, "config": "default"}, environment={}, run={}, entries=entries)


def entry(pert: PerturbationInfo, n_errors: int = 0, **metrics: MetricResult) -> ResultEntry:
    return ResultEntry(dataset="sid_set", split="validation", perturbation=pert, n=100, n_errors=n_errors, metrics=metrics)


TERN_A = values(acc_real=0.891, f1_real=0.910, acc_full_synthetic=0.987, f1_full_synthetic=0.986,
                acc_tampered=0.912, f1_tampered=0.910, accuracy=0.935, macro_f1=0.935)
TERN_B = values(acc_real=0.648, f1_real=0.786, acc_full_synthetic=0.938, f1_full_synthetic=0.968,
                acc_tampered=0.308, f1_tampered=0.472, accuracy=0.631, macro_f1=0.693)
LOC_A = values(pixel_auc=0.873, pixel_f1=0.739, pixel_iou=0.438)
LOC_B = values(pixel_auc=0.821, pixel_f1=0.713, pixel_iou=None)
BIN_A = values(acc_real=0.929, f1_real=0.931, acc_fake=0.907, f1_fake=0.910, accuracy=0.918)
BIN_B = values(acc_real=0.878, f1_real=0.884, acc_fake=0.284, f1_fake=0.442, accuracy=0.406)


@pytest.fixture()
def run_dirs(tmp_path: Path) -> list[Path]:
    runs = {
        "sida_det": results("sida", "detection", [entry(CLEAN, ternary_detection=TERN_A)]),
        "afp_det": results("antifake_prompt", "detection", [entry(CLEAN, n_errors=2, ternary_detection=TERN_B)]),
        "sida_loc": results("sida", "localization", [entry(CLEAN, localization=LOC_A)]),
        "pscc_loc": results("pscc_net", "localization", [entry(CLEAN, localization=LOC_B)]),
        "sida_rob": results("sida", "robustness", [entry(CLEAN, ternary_detection=TERN_A, localization=LOC_A),
                                                  entry(JPEG, ternary_detection=TERN_B, localization=LOC_B)]),
        "sida_dm": results("sida", "cross_dataset", [entry(CLEAN, binary_detection=BIN_A)]),
        "cnn_dm": results("cnnspot", "cross_dataset", [entry(CLEAN, binary_detection=BIN_B)]),
    }
    dirs = []
    for name, res in runs.items():
        res.write(tmp_path / name)
        dirs.append(tmp_path / name)
    return dirs


@pytest.mark.parametrize("fmt,ext", [("md", "md"), ("latex", "tex"), ("csv", "csv")])
def test_table_command_matches_golden(run_dirs: list[Path], capsys: pytest.CaptureFixture[str], fmt: str, ext: str) -> None:
    assert main(["table", *map(str, run_dirs), "--format", fmt]) == 0
    out = capsys.readouterr().out
    golden = GOLDEN / f"tables.{ext}"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(out, encoding="utf-8")
    assert out == golden.read_text(encoding="utf-8")


def test_bold_marks_the_best_value_per_column(run_dirs: list[Path]) -> None:
    runs = [(p.name, load_results(p)) for p in run_dirs[:2]]
    md = render(build_table("detection", runs), "md")
    assert "| sida | **89.1** | **91.0** |" in md and "| antifake_prompt | 64.8 | 78.6 |" in md
    assert "antifake_prompt: 2 of 100 samples failed" in md


def test_out_writes_every_format(run_dirs: list[Path], tmp_path: Path) -> None:
    assert main(["table", str(run_dirs[5]), str(run_dirs[6]), "--out", str(tmp_path / "t")]) == 0
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["cross_dataset.csv", "cross_dataset.md", "cross_dataset.tex"]


def test_bad_results_files_are_user_errors(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"schema_version": 99}')
    with pytest.raises(UserError, match="schema_version 99 is not supported"):
        load_results(tmp_path)
    assert main(["table", str(tmp_path / "missing")]) == 2


def test_adapter_notes_only_in_tables_with_detection_columns() -> None:
    adapted = entry(CLEAN, detection=TERN_A, localization=LOC_A)
    adapted.adapter = "BinaryOnTernary (rule)"
    run = results("pscc", "detection", [adapted])
    assert any("scored with BinaryOnTernary" in n for n in build_table("detection", [("r", run)]).notes)
    assert not any("scored with" in n for n in build_table("localization", [("r", run)]).notes)
