"""``sida-bench predict``: the four per-image outputs, per-image errors, generic models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from bench.cli import main
from bench.figures import overlay
from bench.plugins import MODELS


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "astronaut.png"
    Image.fromarray(data.astronaut()[::2, ::2].copy()).save(path)
    return path


def test_sida_tiny_writes_the_four_outputs(photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["predict", "--model", "sida:tiny", "--explain", "--option", "always_mask=true",
               "--out", str(tmp_path), str(photo)])
    assert rc == 0
    record = json.loads((tmp_path / "astronaut.json").read_text())
    probs = record["probabilities"]
    assert list(probs) == ["real", "full_synthetic", "tampered"]
    assert abs(sum(probs.values()) - 1.0) < 1e-9 and record["verdict"] == max(probs, key=probs.get)
    logits = np.array(record["logits"])  # the [CLS] head's 3 class logits
    np.testing.assert_allclose(np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum(),
                               list(probs.values()), atol=1e-12)
    image = np.asarray(Image.open(photo))
    mask = np.asarray(Image.open(tmp_path / "astronaut_mask.png"))
    assert mask.shape == image.shape[:2] and mask.dtype == np.uint8
    assert record["mask_fraction"] == pytest.approx(float((mask >= 128).mean()), abs=0.01)
    expected = overlay(image, mask.astype(np.float32) / 255.0)
    got = np.asarray(Image.open(tmp_path / "astronaut_overlay.png"))
    assert np.mean(np.abs(got.astype(int) - expected.astype(int)) > 0) < 0.01  # 8-bit rounding at p ≈ 0.5 only
    text = (tmp_path / "astronaut_explanation.txt").read_text()
    assert text.startswith("[CLS] This image is classified as")
    assert record["verdict"].replace("_", " ") in text
    assert "astronaut: " not in capsys.readouterr().err


def test_honest_default_makes_a_mask_only_for_a_tampered_verdict(photo: Path, tmp_path: Path) -> None:
    assert main(["predict", "--model", "sida:tiny", "--out", str(tmp_path), str(photo)]) == 0
    record = json.loads((tmp_path / "astronaut.json").read_text())
    assert (tmp_path / "astronaut_mask.png").exists() == (record["verdict"] == "tampered")
    assert not (tmp_path / "astronaut_explanation.txt").exists()


def test_a_bad_image_is_reported_and_the_others_still_run(photo: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    out = tmp_path / "out"
    rc = main(["predict", "--model", "sida:tiny", "--out", str(out), str(bad), str(photo)])
    assert rc == 1
    assert "error" in json.loads((out / "broken.json").read_text())
    assert "verdict" in json.loads((out / "astronaut.json").read_text())
    assert "broken.jpg" in capsys.readouterr().err


def test_generic_model_and_explain_refused_without_the_capability(photo: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    from tests.dummy_plugins import DummyDetector

    if "dummy" not in MODELS:
        MODELS.register("dummy", DummyDetector)
    assert main(["predict", "--model", "dummy", "--out", str(tmp_path), str(photo), str(photo)]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {
        "astronaut.json", "astronaut_mask.png", "astronaut_overlay.png",
        "astronaut-2.json", "astronaut-2_mask.png", "astronaut-2_overlay.png",
    }
    assert json.loads((tmp_path / "astronaut.json").read_text())["label_space"] == "binary"
    assert main(["predict", "--model", "dummy", "--explain", "--out", str(tmp_path), str(photo)]) == 2
    assert "cannot explain" in capsys.readouterr().err
    assert main(["predict", "--model", "sida:tiny", "--option", "oops", "--out", str(tmp_path), str(photo)]) == 2


def test_json_lines_with_raw_logits_and_the_float_mask(photo: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    """--json prints one record per image on stdout with the raw logits (sigmoid(logit) = P(fake) for the
    single-logit baselines); --save-mask-npy writes the unrounded float mask the PNG is made from."""
    import os

    raw = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.png"))
    raw.write_bytes(photo.read_bytes())
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    capsys.readouterr()
    rc = main(["predict", "--model", "cnnspot:tiny", "--json", "--out", str(tmp_path / "o"), str(photo), str(raw), str(bad)])
    assert rc == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3 and lines[2]["error"].endswith("not a recognised image format")
    first = lines[0]
    (logit,) = first["logits"]
    assert first["probabilities"]["fake"] == pytest.approx(1.0 / (1.0 + np.exp(-logit)), abs=1e-6)
    assert lines[1]["image"].endswith("caf\\xe9.png") and lines[1]["probabilities"] == first["probabilities"]
    assert (tmp_path / "o" / "caf\\xe9.json").is_file()

    out = tmp_path / "m"
    assert main(["predict", "--model", "pscc_net:tiny", "--json", "--save-mask-npy", "--out", str(out), str(photo)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert len(record["logits"]) == 2 and record["mask_npy"] == "astronaut_mask.npy"
    mask = np.load(out / "astronaut_mask.npy")
    png = np.asarray(Image.open(out / "astronaut_mask.png"))
    assert mask.dtype == np.float32 and mask.shape == png.shape
    np.testing.assert_array_equal(png, np.clip(np.round(mask * 255.0), 0, 255).astype(np.uint8))
    assert record["mask_fraction"] == pytest.approx(float((mask >= 0.5).mean()))
