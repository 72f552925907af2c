"""``run sid_mini_explanation`` end to end: SIDA template answers are scored and tabulated, class
consistency of a template equals the detection accuracy vs the ground truth, and a model without
text gets "not applicable"."""

from __future__ import annotations

from pathlib import Path

import pytest

import protocols
import tests.runner_fixtures  # noqa: F401  (registers runner_test)
from bench.cli import main
from bench.results import load_results


@pytest.fixture(scope="module")
def sid_mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.sidmini import SMALL_PER_CLASS, SMALL_SIZE, build_sid_mini

    return build_sid_mini(tmp_path_factory.mktemp("sidmini"), per_class=SMALL_PER_CLASS, size=SMALL_SIZE)


@pytest.fixture(scope="module")
def protocol(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundled = Path(protocols.__file__).parent / "sid_mini_explanation.yaml"
    path = tmp_path_factory.mktemp("proto") / "explanation_fast.yaml"
    path.write_text(f"include: {bundled}\nname: explanation_fast\nbootstrap: {{n: 20}}\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_sida_template_answers_are_scored_into_the_explanation_table(tmp_path: Path, sid_mini_root: Path,
                                                                       protocol: Path) -> None:
    out = tmp_path / "run"
    assert main(["run", str(protocol), "--model", "sida:tiny", "--option", "explain=true",
                 "--data-root", f"sid_mini={sid_mini_root}", "--out", str(out)]) == 0
    entry = load_results(out).entries[0]
    values = entry.metrics["explanation"].values
    assert values["n"].value == 18 and values["n_scored"].value == 6 and values["n_no_reference"].value == 12
    assert values["class_vs_pred"].value == 1.0  # a template states the predicted class
    assert values["class_vs_gt"].value == pytest.approx(entry.metrics["ternary_detection"].values["accuracy"].value)
    assert values["parse_rate"].value == 0.0 and values["rouge_l"].ci is not None
    table = (out / "tables" / "explanation.md").read_text()
    assert "| sida:tiny |" in table and "CSS not available" in table
    assert (out / "tables" / "explanation.tex").is_file() and (out / "tables" / "explanation.csv").is_file()


def test_a_model_without_text_is_not_applicable(tmp_path: Path, sid_mini_root: Path, protocol: Path) -> None:
    out = tmp_path / "run"
    assert main(["run", str(protocol), "--model", "runner_test", "--data-root", f"sid_mini={sid_mini_root}",
                 "--out", str(out)]) == 0
    result = load_results(out).entries[0].metrics["explanation"]
    assert result.skipped is not None and result.skipped.startswith("not applicable") and not result.values
    table = (out / "tables" / "explanation.md").read_text()
    assert "not applicable" in table and "| runner_test | – |" in table
