"""`sida-bench demo --quick` end to end, compared with the committed reference tables within the
sample-size tolerance of :mod:`bench.reproducibility.tolerance` (numbers differ across CPUs and
kernel builds; see ``results/reference/README.md``), plus exact equality of a rerun on this machine
and the demo's claims (:mod:`bench.reproducibility.claims`) on the full sid-mini build.

If a change moves the numbers on purpose, regenerate the references as
``results/reference/README.md`` says and give the reason in the commit message.
"""

import json
from pathlib import Path

import pytest
from PIL import Image

from bench.cli import main
from bench.demo import DEMO_MODELS, PROTOCOLS, run_demo
from bench.reproducibility.claims import CLAIMS_FILE, best_in_domain
from bench.reproducibility.tolerance import SIZES_FILE, compare_tables, read_table

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference"
TABLES = ("detection", "localization", "robustness", "cross_dataset")
FIGURES = ("roc_sid_mini_detection.png", "roc_dmimage_mini_cross.png", "robustness_detection.png",
           "masks_tampered.png", "confusion_sida.png", "confusion_cnnspot.png")
RERUN = ("cnnspot", "fredect")  # a cheap subset (no audit, no localizer), rerun to check same-machine exactness


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    return out


def test_quick_demo_tables_within_tolerance_of_reference(demo_dir: Path) -> None:
    comparison = compare_tables(demo_dir / "tables", REFERENCE / "quick", TABLES)
    assert comparison.cells, "nothing was compared"
    assert comparison.ok, "quick demo vs results/reference/quick:\n" + comparison.report()
    for kind in TABLES:
        assert (demo_dir / "tables" / f"{kind}.tex").is_file()
        assert (demo_dir / "tables" / f"{kind}.md").is_file()


def _entries(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "results.json").read_text(encoding="utf-8"))["entries"]


def test_quick_demo_rerun_is_exact_on_this_machine(demo_dir: Path, tmp_path: Path) -> None:
    models = [m for m in DEMO_MODELS if m.key in RERUN]
    run_demo(tmp_path, quick=True, models=models)
    runs = sorted((demo_dir / "runs").glob("*/*"))
    compared = 0
    for run in runs:
        if run.name in RERUN:
            again = tmp_path / "runs" / run.parent.name / run.name
            assert _entries(again) == _entries(run), f"{run.parent.name}/{run.name}: a rerun gave other metrics"
            compared += 1
    assert compared >= 2 * len(RERUN)
    for kind in ("detection", "robustness", "cross_dataset"):
        _, first = read_table(demo_dir / "tables" / f"{kind}.csv")
        _, second = read_table(tmp_path / "tables" / f"{kind}.csv")
        assert second and all(first[row] == values for row, values in second.items())


def test_quick_demo_writes_figures_runs_and_claims(demo_dir: Path) -> None:
    for name in FIGURES:
        with Image.open(demo_dir / "figures" / name) as im:
            assert im.format == "PNG" and im.size[0] >= 300
    # the localization robustness curve is drawn exactly when the robustness table has a localization score
    # (in --quick, SIDA may predict no image tampered, so it has none)
    _, rob = read_table(demo_dir / "tables" / "robustness.csv")
    has_loc = any(v is not None for row in rob.values() for k, v in row.items() if k.startswith("Localization"))
    assert (demo_dir / "figures" / "robustness_localization.png").is_file() == has_loc
    assert (demo_dir / "runs" / "sid_mini_detection" / "sida" / "results.json").is_file()
    assert (demo_dir / "training.json").is_file()
    assert (demo_dir / "leaderboard" / "index.html").is_file() and (demo_dir / "audit" / "report.html").is_file()
    assert (demo_dir / "tables" / "explanation.csv").is_file()
    claims = json.loads((demo_dir / "tables" / CLAIMS_FILE).read_text(encoding="utf-8"))
    assert {c["name"] for c in claims} == {"in_domain_above_chance", "jpeg70_lowers_accuracy", "held_out_not_easier"}


def test_quick_demo_covers_every_model_and_labels_the_untrained_one(demo_dir: Path) -> None:
    """Every demo model has its runs; a model without a training recipe is named "(untrained)" in its
    table rows and in training.json, never passed off as trained."""
    untrained = [m for m in DEMO_MODELS if m.untrained]
    assert [m.key for m in untrained] == ["hifi_net"]
    training = json.loads((demo_dir / "training.json").read_text(encoding="utf-8"))
    assert training["hifi_net"] == {"untrained": "no official training recipe"}
    assert not (demo_dir / "checkpoints" / "hifi_net").exists()
    _, table = read_table(demo_dir / "tables" / "localization.csv")
    assert "hifi_net:tiny (untrained)" in table and "hifi_net:tiny" not in table
    for m in DEMO_MODELS:
        for kind in ("detection", "localization", "robustness", "cross_dataset"):
            expected = {"detection": m.detects, "cross_dataset": m.detects, "localization": m.localizes,
                        "robustness": m.robustness}[kind]
            assert (demo_dir / "runs" / PROTOCOLS[kind] / m.key / "results.json").is_file() == expected, (m.key, kind)


def test_full_reference_claims_hold_and_match_its_tables() -> None:
    full = REFERENCE / "full"
    claims = {c["name"]: c for c in json.loads((full / CLAIMS_FILE).read_text(encoding="utf-8"))}
    assert set(claims) == {"in_domain_above_chance", "jpeg70_lowers_accuracy", "held_out_not_easier"}
    assert all(c["holds"] for c in claims.values()), claims
    row, acc = best_in_domain(full)
    assert claims["in_domain_above_chance"]["subject"] == row
    assert claims["in_domain_above_chance"]["value"] == pytest.approx(acc - 100 / 3, abs=1e-6)
    _, rob = read_table(full / "robustness.csv")
    drop = rob[row]["Detection ACC"] - rob[f"{row} · JPEG 70"]["Detection ACC"]
    assert claims["jpeg70_lowers_accuracy"]["value"] == pytest.approx(drop, abs=1e-6)
    assert json.loads((full / SIZES_FILE).read_text(encoding="utf-8"))["detection"]["Overall"] == 900


@pytest.mark.slow
def test_full_build_claims_hold_for_fredect(tmp_path: Path) -> None:
    """The claims checked as claims on the full sid-mini build (n = 900), with FreDect, the
    cheapest model whose recipe learns it (their margins hold on any machine's kernels)."""
    result = run_demo(tmp_path, models=[m for m in DEMO_MODELS if m.key == "fredect"])
    assert len(result.claims) == 3 and all(c.holds for c in result.claims), result.claims
