"""The sample-size tolerance and the demo's claims, on constructed tables (no model runs)."""

import json
import math
from pathlib import Path

import pytest

from bench.reproducibility.claims import AucSummary, demo_claims
from bench.reproducibility.tolerance import ROUNDING, Z, compare_tables, tolerance

DETECTION = ("Method,Real Acc,Real F1,Fully synthetic Acc,Fully synthetic F1,Tampered Acc,Tampered F1,Overall Acc,Overall F1\n"
             "a:tiny,90.0,80.0,95.0,90.0,60.0,70.0,81.7,80.0\n"
             "b:tiny,50.0,,40.0,,30.0,,40.0,\n")
ROBUSTNESS = ("Method,Detection ACC,Detection F1,Localization AUC,Localization F1,Localization IoU\n"
              "a:tiny,81.7,80.0,,,\n"
              "a:tiny · JPEG 70,45.0,40.0,,,\n")
SIZES = {"detection": {"Fully synthetic": 300, "Overall": 900, "Real": 300, "Tampered": 300},
         "robustness": {"Detection": 900}}


def write(root: Path, sizes: dict = SIZES, detection: str = DETECTION, robustness: str = ROBUSTNESS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "detection.csv").write_text(detection, encoding="utf-8")
    (root / "robustness.csv").write_text(robustness, encoding="utf-8")
    (root / "sizes.json").write_text(json.dumps(sizes), encoding="utf-8")
    return root


def test_tolerance_is_the_stated_binomial_bound() -> None:
    assert tolerance(50.0, 50.0, 100) == pytest.approx(100 * 4 * math.sqrt(2 * 0.25 / 100) + 0.1)
    assert tolerance(0.0, 0.0, 30) == pytest.approx(ROUNDING)  # both at 0: only the rounding
    assert tolerance(10.0, 3.3, 30) == pytest.approx(100 * Z * math.sqrt(2 * 0.0665 * 0.9335 / 30) + 0.1)
    assert tolerance(60.0, 40.0, 900) < tolerance(60.0, 40.0, 90)
    with pytest.raises(ValueError, match="positive"):
        tolerance(1.0, 2.0, 0)


def test_identical_tables_pass(tmp_path: Path) -> None:
    comparison = compare_tables(write(tmp_path / "p"), write(tmp_path / "r"), ("detection", "robustness"))
    assert comparison.ok and len(comparison.cells) == 2 * 8 + 2 * 5


# Hand-computed at n = 300 against a reference of 90.0: 80.0 → tol 11.76 (inside); 75.0 → 12.5 and
# 100.0 → 7.22 (outside).
@pytest.mark.parametrize("value, ok", [(90.0, True), (80.0, True), (75.0, False), (100.0, False)])
def test_a_number_moved_beyond_the_tolerance_fails(tmp_path: Path, value: float, ok: bool) -> None:
    produced = write(tmp_path / "p", detection=DETECTION.replace("a:tiny,90.0", f"a:tiny,{value:.1f}"))
    comparison = compare_tables(produced, write(tmp_path / "r"), ("detection",))
    assert comparison.ok is ok
    if not ok:
        (failure,) = comparison.failures
        assert (failure.row, failure.column, failure.n) == ("a:tiny", "Real Acc", 300)
        report = comparison.report()
        assert f"✗ a:tiny | Real Acc: {value:.1f} vs ref 90.0" in report and "b:tiny | Overall Acc" in report


def test_empty_cell_on_one_side_fails(tmp_path: Path) -> None:
    produced = write(tmp_path / "p", detection=DETECTION.replace("50.0,,40.0", "50.0,33.0,40.0"))
    comparison = compare_tables(produced, write(tmp_path / "r"), ("detection",))
    (failure,) = comparison.failures
    assert failure.column == "Real F1" and failure.reference is None and "one side empty" in failure.line()


def test_structural_differences_are_reported(tmp_path: Path) -> None:
    ref = write(tmp_path / "r")
    other_sizes = write(tmp_path / "s", sizes={**SIZES, "detection": {**SIZES["detection"], "Real": 30}})
    problems = compare_tables(other_sizes, ref, ("detection",)).problems
    assert problems == ["detection/Real: sample size 30 differs from the reference's 300 in sizes.json "
                        "(another data build; no tolerance applies)"]
    missing_row = write(tmp_path / "m", detection=DETECTION.rsplit("b:tiny", 1)[0])
    assert "rows ['a:tiny'] differ" in compare_tables(missing_row, ref, ("detection",)).problems[0]
    only_a = compare_tables(missing_row, ref, ("detection", "robustness"), rows=("a:tiny",))
    assert only_a.ok and {c.row for c in only_a.cells} == {"a:tiny", "a:tiny · JPEG 70"}


def test_claims_hold_and_fail_by_their_margins(tmp_path: Path) -> None:
    aucs = {"in_domain": {"a:tiny": AucSummary(0.95, 300, 600)}, "held_out": {"a:tiny": AucSummary(0.80, 300, 600)}}
    claims = {c.name: c for c in demo_claims(write(tmp_path / "t"), aucs)}
    assert all(c.holds and c.subject == "a:tiny" for c in claims.values())  # b has no F1: binary rule, skipped
    assert claims["in_domain_above_chance"].value == pytest.approx(81.7 - 100 / 3)
    assert claims["in_domain_above_chance"].margin == pytest.approx(400 * math.sqrt(2 / 9 / 900) + 0.1)
    assert claims["jpeg70_lowers_accuracy"].value == pytest.approx(36.7)
    sd = math.hypot(math.sqrt(0.95 * 0.05 / 300), math.sqrt(0.8 * 0.2 / 300))
    assert claims["held_out_not_easier"].margin == pytest.approx(4 * sd, abs=1e-6)
    assert claims["held_out_not_easier"].value == pytest.approx(0.15)
    slightly = {"in_domain": {"a:tiny": AucSummary(0.95, 300, 600)}, "held_out": {"a:tiny": AucSummary(0.96, 300, 600)}}
    assert {c.name: c.holds for c in demo_claims(write(tmp_path / "s"), slightly)}["held_out_not_easier"]


def test_jpeg_claim_without_robustness_rows_is_recorded_as_failing(tmp_path: Path) -> None:
    """The best detector ran no robustness suite: the claim is written and fails, never silently left out."""
    other = "\n".join(line for line in ROBUSTNESS.splitlines() if not line.startswith("a:tiny")) + "\n"
    for tables in (write(tmp_path / "r", robustness=other), write(tmp_path / "none")):
        if tables.name == "none":
            (tables / "robustness.csv").unlink()
        claim = {c.name: c for c in demo_claims(tables, {})}["jpeg70_lowers_accuracy"]
        assert claim.subject == "a:tiny" and not claim.holds and "not measured" in claim.statement

    weak = write(tmp_path / "w", robustness=ROBUSTNESS.replace("45.0,40.0", "79.0,78.0"))
    easier = {"in_domain": {"a:tiny": AucSummary(0.80, 300, 600)}, "held_out": {"a:tiny": AucSummary(0.95, 300, 600)}}
    failed = {c.name: c.holds for c in demo_claims(weak, easier)}
    assert failed == {"in_domain_above_chance": True, "jpeg70_lowers_accuracy": False, "held_out_not_easier": False}
