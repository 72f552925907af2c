"""`sida-bench demo --quick` end to end, compared with the committed reference tables.

If a change moves the numbers on purpose, regenerate the reference with
``sida-bench demo --quick --out /tmp/q && cp /tmp/q/tables/*.md /tmp/q/tables/*.csv results/reference/quick/``
and say why in the commit message.
"""

from pathlib import Path

import pytest
from PIL import Image

from bench.cli import main

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference" / "quick"
TABLES = ("detection", "localization", "robustness", "cross_dataset")
FIGURES = ("roc_sid_mini_detection.png", "roc_dmimage_mini_cross.png", "robustness_detection.png",
           "robustness_localization.png", "masks_tampered.png", "confusion_sida.png", "confusion_cnnspot.png")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("kind", TABLES)
def test_quick_demo_tables_match_reference(demo_dir: Path, kind: str) -> None:
    for ext in ("md", "csv"):
        produced = (demo_dir / "tables" / f"{kind}.{ext}").read_text(encoding="utf-8")
        expected = (REFERENCE / f"{kind}.{ext}").read_text(encoding="utf-8")
        assert produced == expected, f"{kind}.{ext} differs from results/reference/quick (see module docstring)"
    assert (demo_dir / "tables" / f"{kind}.tex").is_file()


def test_quick_demo_writes_figures_and_runs(demo_dir: Path) -> None:
    for name in FIGURES:
        with Image.open(demo_dir / "figures" / name) as im:
            assert im.format == "PNG" and im.size[0] >= 300
    assert (demo_dir / "runs" / "sid_mini_detection" / "sida" / "results.json").is_file()
    assert (demo_dir / "training.json").is_file()
