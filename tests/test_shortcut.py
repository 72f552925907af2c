"""Shortcut check (``sida-bench data audit``): cues read back, a planted cue found, none on clean data."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from bench.audit.cues import read_cues
from bench.audit.jpeg_quality import estimate_quality
from bench.audit.shortcut import audit_dataset, check_cues, out_of_fold_scores
from bench.cli import main
from bench.errors import UserError
from bench.plugins import create_dataset

N_PER_CLASS = 30


def noise(seed: int, h: int = 24, w: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_dmimage(root: Path, real_format: str, fake_format: str) -> Path:
    """A DMImage-layout binary fixture: ``real/`` and one generator folder, images of pure noise."""
    for folder, fmt, offset in (("real", real_format, 0), ("gen_a", fake_format, 1000)):
        (root / folder).mkdir(parents=True)
        for i in range(N_PER_CLASS):
            ext = "jpg" if fmt == "JPEG" else "png"
            kwargs = {"quality": 90} if fmt == "JPEG" else {}
            Image.fromarray(noise(offset + i)).save(root / folder / f"{i:03d}.{ext}", format=fmt, **kwargs)
    return root


@pytest.mark.parametrize("quality", [30, 50, 75, 90, 100])
def test_jpeg_quality_estimate_matches_pillows_encoder(quality: int) -> None:
    buf = io.BytesIO()
    Image.fromarray(noise(0)).save(buf, "JPEG", quality=quality)
    cues = read_cues(buf.getvalue(), "x.JPG")
    assert (cues.format, cues.extension, cues.jpeg_quality) == ("JPEG", "jpg", quality)
    est = estimate_quality({k: list(v) for k, v in Image.open(buf).quantization.items()})
    assert est.exact and est.mean_abs_error == 0


def test_non_ijg_tables_get_the_nearest_quality() -> None:
    flat = {0: [10] * 64, 1: [10] * 64}
    est = estimate_quality(flat)
    assert not est.exact and 1 <= est.quality <= 100
    with pytest.raises(ValueError, match="luminance"):
        estimate_quality({1: [1] * 64})


def test_cues_of_png_with_metadata_and_of_unreadable_bytes(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x010F] = "camera"
    path = tmp_path / "a.png"
    Image.fromarray(noise(1, 10, 40)).save(path, format="PNG", exif=exif.tobytes(), icc_profile=b"fake-icc")
    c = read_cues(path)
    assert (c.format, c.height, c.width, c.has_exif, c.has_icc) == ("PNG", 10, 40, True, True)
    assert c.features("aspect", {}) == [4.0]
    assert c.features("bytes_per_pixel", {}) == [path.stat().st_size / 400]
    bad = read_cues(b"not an image", "b.jpg")
    assert bad.error is not None and bad.format == "unreadable" and bad.extension == "jpg"


def test_planted_format_cue_is_found(tmp_path: Path) -> None:
    ds = create_dataset("dmimage", root=write_dmimage(tmp_path / "d", "JPEG", "PNG"), split="test",
                        generators={"gen_a": ("A", "group_a")})
    report = audit_dataset(ds)
    cues = {c["name"]: c for c in report["cues"]}
    for name in ("format", "jpeg_quality"):
        assert cues[name]["auc"] > 0.97 and cues[name]["ci"][0] > 0.9 and cues[name]["flagged"]
    assert cues["size"]["auc"] == 0.5 and not cues["size"]["flagged"]  # every image is 24 x 32
    assert set(report["flagged"]) >= {"format", "jpeg_quality"}
    assert report["per_class_summary"]["real"]["formats"] == {"JPEG": N_PER_CLASS}
    assert report["per_class_summary"]["fake"]["jpeg_qualities"] == {}


def test_no_cue_on_a_fixture_without_one(tmp_path: Path) -> None:
    ds = create_dataset("dmimage", root=write_dmimage(tmp_path / "d", "PNG", "PNG"), split="test",
                        generators={"gen_a": ("A", "group_a")})
    report = audit_dataset(ds)
    assert report["flagged"] == []
    for cue in report["cues"]:
        lo, hi = cue["ci"]
        assert lo <= 0.5 <= hi, cue
        assert abs(cue["auc"] - 0.5) < 0.2


def test_reported_auc_equals_sklearn_on_the_out_of_fold_scores() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    x = (y + rng.normal(0, 1.0, 80))[:, None]
    scores = out_of_fold_scores(x, y, seed=0)
    from bench.audit.shortcut import cue_auc

    res = cue_auc(x, y, seed=0)
    assert res["auc"] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert res["ci"][0] <= res["auc"] <= res["ci"][1] and res["n"] == 80


def test_per_class_comparisons_find_a_cue_of_one_class_only() -> None:
    from bench.audit.cues import FileCues

    def f(fmt: str, i: int) -> FileCues:
        return FileCues(fmt, fmt.lower(), 32, 32 + (i % 3), 1000 + i, 0, False, False)

    labels = [0] * 20 + [1] * 20 + [2] * 20
    cues = [f("PNG", i) for i in range(40)] + [f("WEBP", i) for i in range(20)]
    report = check_cues(cues, labels, ("real", "full_synthetic", "tampered"))
    fmt = next(c for c in report["cues"] if c["name"] == "format")
    assert fmt["per_class"]["real_vs_tampered"]["auc"] == 1.0
    assert fmt["per_class"]["real_vs_full_synthetic"]["auc"] == 0.5
    assert 0.65 < fmt["auc"] <= 0.75  # half the fakes are WEBP: at best (1 + 0.5) / 2
    assert fmt["flagged"] and fmt["flagged_by"] == ["real_vs_fake", "real_vs_tampered"]


def test_too_few_images_and_bad_threshold_are_user_errors() -> None:
    from bench.audit.cues import FileCues

    c = FileCues("PNG", "png", 8, 8, 10, 0, False, False)
    with pytest.raises(UserError, match="at least 2 images of each class"):
        check_cues([c, c, c], [0, 0, 1], ("real", "fake"))
    with pytest.raises(UserError, match="threshold"):
        check_cues([c] * 4, [0, 0, 1, 1], ("real", "fake"), threshold=1.5)


def test_sid_mini_passes_its_own_shortcut_check(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from bench.sidmini import SMALL_PER_CLASS, SMALL_SIZE, build_sid_mini

    root = build_sid_mini(tmp_path / "mini", per_class=SMALL_PER_CLASS, size=SMALL_SIZE)
    assert main(["data", "audit", "sid_mini", "--root", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["flagged"] == [] and report["n"] == 3 * SMALL_PER_CLASS["test"]
    assert [c["name"] for c in report["cues"]] == ["format", "jpeg_quality", "size", "aspect", "metadata",
                                                   "bytes_per_pixel"]
    assert all(set(c) >= {"name", "auc", "ci", "flagged"} for c in report["cues"])
    sizes = {p.stat().st_size for p in (root / "sid_set" / "test").glob("*/*.png") if p.parent.name != "masks"}
    assert len(sizes) == 1  # uncompressed PNG: the file size depends on the image size only


def test_cli_data_audit_table_warns_on_flagged_cues(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = write_dmimage(tmp_path / "d", "JPEG", "PNG")
    assert main(["data", "audit", "dmimage", "--root", str(root), "-o", 'generators={"gen_a": ["A", "g"]}']) == 0
    out = capsys.readouterr().out
    assert "WARNING" in out and "format" in out


def test_a_decompression_bomb_header_is_a_per_file_error(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.BytesIO()
    Image.fromarray(noise(0, 64, 64)).save(buf, "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 64 x 64 > 2 x 100: Pillow refuses to open it
    cues = read_cues(buf.getvalue(), "bomb.png")
    assert cues.error is not None and "DecompressionBomb" in cues.error
