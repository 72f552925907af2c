"""sid-mini builder: determinism, split by photograph, fingerprints, tampering regions, cache reuse."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from bench.cli import main
from bench.errors import UserError
from bench.plugins import create_dataset
from bench.sidmini import SMALL_PER_CLASS, SMALL_SIZE, build_sid_mini, default_cache_dir, ensure_sid_mini
from bench.sidmini.build import families, make_item
from bench.sidmini.generator import make_fingerprint, synthesize
from bench.sidmini.photos import SPLIT_PHOTOS, load_photos
from bench.sidmini.tamper import AREA_RANGE, blend, object_region

SMALL = {"per_class": SMALL_PER_CLASS, "size": SMALL_SIZE}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_sid_mini(tmp_path_factory.mktemp("mini") / "sid-mini", **SMALL)


def provenance(root, name):
    with open(root / "provenance" / f"{name}.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_cli_build_twice_gives_identical_hashes(tmp_path, capsys):
    hashes = []
    for name in ("a", "b"):
        assert main(["data", "build", "sid-mini", "--small", "--out", str(tmp_path / name)]) == 0
        hashes.append(json.loads(capsys.readouterr().out)["tree_sha256"])
    assert hashes[0] == hashes[1]
    files_a = json.loads((tmp_path / "a" / "manifest.json").read_text())["files"]
    files_b = json.loads((tmp_path / "b" / "manifest.json").read_text())["files"]
    assert files_a == files_b and len(files_a) > 50


def test_seed_changes_the_samples():
    photos = load_photos(SPLIT_PHOTOS["test"])
    family = families(0)["train"]
    a = make_item(2, 1, 0, SMALL_SIZE, 0, photos, family)
    assert np.array_equal(a.image, make_item(2, 1, 0, SMALL_SIZE, 0, photos, family).image)
    assert not np.array_equal(a.image, make_item(2, 1, 0, SMALL_SIZE, 1, photos, family).image)


def test_layouts_and_counts(built):
    for split, n in SMALL_PER_CLASS.items():
        folders = create_dataset("sid_mini", root=built, split=split)
        parquet = create_dataset("sid_set_parquet", root=built / "parquet", split=split)
        assert len(folders) == len(parquet) == 3 * n
        a = [(s.id, s.label, s.image.tobytes(), None if s.mask is None else s.mask.tobytes()) for s in folders]
        b = [(s.id, s.label, s.image.tobytes(), None if s.mask is None else s.mask.tobytes()) for s in parquet]
        assert a == b
        assert all(s.image.shape == (SMALL_SIZE, SMALL_SIZE, 3) for s in folders)
        described = [int(s.id.rsplit("_", 1)[1]) % 3 == 0 for s in folders]  # the description subset
        assert [("explanation" in s.meta) for s in folders] == described
        assert [("explanation" in s.meta) for s in parquet] == described
    dm = create_dataset("dmimage_mini", root=built)
    groups = {s.meta["group"] for s in dm}
    assert groups == {"real", "same_architecture", "other_architecture"}
    assert sum(s.label == 0 for s in dm) == SMALL_PER_CLASS["test"]


def test_split_by_photograph_and_reals_are_exact_crops(built):
    used = {split: {row["photo"] for row in provenance(built, split)} for split in SMALL_PER_CLASS}
    assert used["train"].isdisjoint(used["test"]) and used["train"].isdisjoint(used["validation"])
    assert used["validation"].isdisjoint(used["test"])
    assert used["test"] <= set(SPLIT_PHOTOS["test"])
    photos = load_photos(SPLIT_PHOTOS["test"])
    real = {s.id: s for s in create_dataset("sid_mini", root=built, split="test") if s.label == 0}
    for row in provenance(built, "test"):
        if row["folder"] == "real":
            top, left = int(row["top"]), int(row["left"])
            crop = photos[row["photo"]][top:top + SMALL_SIZE, left:left + SMALL_SIZE]
            np.testing.assert_array_equal(real[f"real/{row['stem']}"].image, crop)


def test_tampered_masks_cover_2_to_40_percent(built):
    areas = [s.mask.mean() for s in create_dataset("sid_mini", root=built, split="train") if s.label == 2]
    assert len(areas) == SMALL_PER_CLASS["train"]
    assert all(AREA_RANGE[0] <= a <= AREA_RANGE[1] for a in areas)


def test_generator_fingerprint_is_periodic_and_colour_neutral():
    flat = np.full((64, 64, 3), 128, np.uint8)
    fp = make_fingerprint("tconv", 3)
    np.testing.assert_array_equal(synthesize(flat, fp, 0.0), flat)  # bilinear base reproduces flat input
    out = synthesize(flat, fp, 1.0).astype(float)
    phases = np.array([out[py::2, px::2].mean() for py in (0, 1) for px in (0, 1)])
    assert np.ptp(phases) > 2  # a period-2 trace of a few grey levels
    np.testing.assert_allclose(out.mean(axis=(0, 1)), 128, atol=0.5)  # no colour cast
    other = synthesize(flat, make_fingerprint("tconv", 4), 1.0).astype(float)
    assert not np.array_equal(out, other)
    with pytest.raises(ValueError, match="kind"):
        make_fingerprint("pixelshuffle", 0)  # type: ignore[arg-type]


def test_object_region_and_blend():
    image = load_photos(("chelsea",))["chelsea"][:96, :96].copy()
    for i in range(5):
        mask = object_region(image, np.random.default_rng(i))
        assert mask.dtype == np.bool_ and AREA_RANGE[0] <= mask.mean() <= AREA_RANGE[1]
    black = np.zeros_like(image)
    out = blend(image, black, mask)
    assert (out[mask] == 0).all()
    near = binary_dilation(mask, iterations=4)  # the feather (sigma 1, 4-sigma support) reaches 4 px
    np.testing.assert_array_equal(out[~near], image[~near])
    assert (out[near & ~mask] != image[near & ~mask]).any()


def test_ensure_reuses_a_valid_build_and_rebuilds_a_modified_one(tmp_path, monkeypatch):
    monkeypatch.setenv("SIDA_BENCH_CACHE", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache"
    root = ensure_sid_mini(**SMALL)
    assert root.parent == tmp_path / "cache"
    marker = root / "manifest.json"
    stamp = marker.stat().st_mtime_ns
    assert ensure_sid_mini(**SMALL) == root and marker.stat().st_mtime_ns == stamp
    victim = next((root / "sid_set" / "test" / "real").iterdir())
    victim.write_bytes(b"tampered with")
    assert ensure_sid_mini(**SMALL) == root
    assert victim.read_bytes() != b"tampered with"


def test_build_refuses_a_foreign_folder_and_bad_parameters(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a sid-mini build"):
        build_sid_mini(tmp_path, **SMALL)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    with pytest.raises(UserError, match="even"):
        build_sid_mini(tmp_path / "x", size=33)
    with pytest.raises(UserError, match="per_class"):
        build_sid_mini(tmp_path / "x", per_class={"tset": 3})
