"""Hostile inputs through `run`, the dataset listings and the file readers: no run dies on one sample,
no file is silently unlisted, and every refusal is one line that says what is wrong."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import tests.runner_fixtures as fx
from bench.cli.compose import run_and_score, score_predictions_file
from bench.datasets.manifest import read_table
from bench.errors import UserError
from bench.evaluation.predictions_import import read_table as read_predictions
from bench.evaluation.store import PredictionStore
from bench.plugins import create_dataset
from bench.safe_text import printable
from tests.data_fixtures import png_bytes, rgb, write_sid_set_tree

RAW_NAME = b"caf\xe9.png"  # Latin-1 bytes: not valid UTF-8

LOCALIZATION_PROTOCOL = """\
version: 1
name: hostile_sid_set
label_space: ternary
seed: 0
datasets:
  - {name: sid_set, split: test}
perturbations:
  - {name: none, label: Clean}
metrics:
  - name: localization
  - name: sida_legacy
bootstrap: {n: 0}
tables: []
"""


def hostile_tree(root: Path) -> Path:
    """The fixture SID-Set tree plus a non-UTF-8 name, a broken symlink and a symlink loop in real/."""
    write_sid_set_tree(root, "test")
    real = root / "test" / "real"
    Path(os.fsdecode(os.fsencode(real) + b"/" + RAW_NAME)).write_bytes(png_bytes(rgb(9)))
    os.symlink(root / "nowhere.png", real / "broken.png")
    os.symlink(real / "loop.png", real / "loop.png")
    (real / "notes.txt").write_text("not an image")
    return root


def test_run_survives_non_utf8_names_broken_links_and_tampered_without_mask(tmp_path: Path) -> None:
    """The three whole-run failures of the outside check: a tampered image without a mask (sida_legacy
    aborted scoring), a non-UTF-8 file name (UnicodeEncodeError in the store) and unreadable entries
    (silently unlisted)."""
    root = hostile_tree(tmp_path / "sid")
    proto = fx.write_protocol(tmp_path, LOCALIZATION_PROTOCOL, "hostile.yaml")
    results = run_and_score(proto, "runner_test", tmp_path / "run", data_roots={"sid_set": root}, tables=False)
    assert (tmp_path / "run" / "results.json").is_file()
    entry = results.entries[0]
    assert entry.n == 17  # 14 fixture files (one is a text file named .png) + 3 image-like names
    legacy = {k: v.value for k, v in entry.metrics["sida_legacy"].values.items()}
    assert legacy["n_tampered_without_gt_mask"] == 1  # t_nomask.png
    assert entry.metrics["localization"].values["n_no_gt_mask"].value == 1
    assert "broken symbolic link" in entry.errors["real/broken"]
    assert "symbolic link loop" in entry.errors["real/loop"]
    listing = entry.dataset_info["listing"]
    assert listing["unreadable_files"] == 2 and listing["skipped_not_image"] == 1
    assert [Path(n).name for n in entry.dataset_info["listing_names"]["unreadable_files"]] == ["broken.png", "loop.png"]

    rows = {r["sample_id"]: r for r in PredictionStore(tmp_path / "run" / "predictions").read().to_pylist()}
    row = rows["real/caf\\xe9"]
    assert row["error"] is None
    # the exact bytes of the name survive in the row's meta (JSON keeps the surrogate escapes)
    assert os.fsencode(json.loads(row["meta"])["path"]).endswith(b"/real/" + RAW_NAME)
    json.loads((tmp_path / "run" / "results.json").read_text(encoding="utf-8"))


def test_dataset_listing_and_ids(tmp_path: Path) -> None:
    root = hostile_tree(tmp_path / "sid")
    ds = create_dataset("sid_set", root=root, split="test")
    ids = [e.id for e in ds.entries]
    assert "real/caf\\xe9" in ids and "real/broken" in ids and "real/loop" in ids
    assert all(i.encode("utf-8") for i in ids) and len(set(ids)) == len(ids)
    broken = next(s for s in ds.iter_samples() if s.id == "real/broken")
    assert broken.image is None and "broken symbolic link" in (broken.error or "")


def test_sid_set_names_what_it_cannot_pair(tmp_path: Path) -> None:
    """Orphan masks, descriptions of absent images and tampered images without a mask are counted and named."""
    root = tmp_path / "sid"
    write_sid_set_tree(root, "test")
    (root / "test" / "masks" / "gone_mask.png").write_bytes(png_bytes(rgb(3)))
    (root / "test" / "description" / "tampered_GT.json").write_text(json.dumps({"t_ok.png": "a", "gone.png": "b"}))
    info = create_dataset("sid_set", root=root, split="test")
    _ = info.entries
    described = info.describe()
    assert described["listing"]["masks_without_image"] == 1 and described["listing"]["descriptions_without_image"] == 1
    assert described["listing"]["tampered_without_mask"] == 1
    names = described["listing_names"]
    assert Path(names["masks_without_image"][0]).name == "gone_mask.png"
    assert names["descriptions_without_image"][0].endswith("tampered_GT.json: gone.png")
    assert Path(names["tampered_without_mask"][0]).name == "t_nomask.png"


def test_printable_escapes_only_undecodable_bytes() -> None:
    assert printable("plain/é") == "plain/é"
    assert printable(os.fsdecode(b"a\xff\xe9b")) == "a\\xff\\xe9b"
    assert printable("x\ud800") == "x\\ud800"


def test_absent_split_lists_the_splits_found(tmp_path: Path) -> None:
    root = tmp_path / "sid"
    write_sid_set_tree(root, "validation")
    write_sid_set_tree(root, "train")
    with pytest.raises(UserError, match=r"no split 'test'.*splits found: train, validation"):
        _ = create_dataset("sid_set", root=root, split="test").entries


def test_jsonl_manifest_with_raw_non_utf8_name(tmp_path: Path) -> None:
    """One raw Latin-1 name in a JSONL manifest: the manifest loads, the file opens, the id is escaped."""
    Path(os.fsdecode(os.fsencode(tmp_path) + b"/" + RAW_NAME)).write_bytes(png_bytes(rgb(1)))
    (tmp_path / "ok.png").write_bytes(png_bytes(rgb(2)))
    lines = [b'{"path": "ok.png", "label": 0}', b'{"path": "' + RAW_NAME + b'", "label": 1}']
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    ds = create_dataset("manifest", root=manifest)
    samples = {s.id: s for s in ds.iter_samples()}
    assert set(samples) == {"ok", "caf\\xe9"}
    assert samples["caf\\xe9"].error is None and samples["caf\\xe9"].image.shape == (20, 30, 3)


def test_csv_manifest_with_raw_non_utf8_name(tmp_path: Path) -> None:
    Path(os.fsdecode(os.fsencode(tmp_path) + b"/" + RAW_NAME)).write_bytes(png_bytes(rgb(1)))
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b"path,label\n" + RAW_NAME + b",1\n")
    (sample,) = list(create_dataset("manifest", root=manifest).iter_samples())
    assert sample.id == "caf\\xe9" and sample.error is None


@pytest.mark.parametrize("reader", [read_table, read_predictions])
def test_broken_jsonl_line_is_named_by_number(tmp_path: Path, reader) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"sample_id": "a", "path": "a.png", "label": 0}\n\n{"sample_id": "b", "path": \n')
    with pytest.raises(UserError, match=r"line 3 is not valid JSON"):
        reader(path)
    path.write_text('{"sample_id": "a"}\n[1, 2]\n')
    with pytest.raises(UserError, match=r"line 2: expected a JSON object"):
        reader(path)


def test_predictions_ids_with_raw_bytes_match_dataset_ids(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"sample_id": "real/' + RAW_NAME[:-4] + b'", "prob_fake": 0.5}\n')
    frame = read_predictions(path)
    assert frame["sample_id"].tolist() == ["real/caf\\xe9"]
    assert np.isclose(frame["prob_fake"][0], 0.5)


SIZE_PROTOCOL = """\
version: 1
name: hostile_sizes
label_space: binary
seed: 0
datasets:
  - {name: manifest, split: test}
perturbations:
  - {name: none, label: Clean}
  - {name: crop, params: {size: 8}, label: "Crop 8"}
metrics:
  - name: binary_detection
bootstrap: {n: 0}
tables: []
"""


def test_size_errors_name_the_step_the_minimum_and_the_clean_condition(tmp_path: Path) -> None:
    """A 1x1 image through NPR: a per-sample error saying which step needs what, under 'clean image'
    (not the condition key 'none', not a bare ValueError); the other samples are scored."""
    from PIL import Image

    for name, (h, w) in {"tiny": (1, 1), "ok0": (20, 24), "ok1": (24, 20)}.items():
        Image.fromarray(rgb(h * w, h, w)).save(tmp_path / f"{name}.png")
    (tmp_path / "m.csv").write_text("path,label\ntiny.png,1\nok0.png,0\nok1.png,1\n")
    proto = fx.write_protocol(tmp_path, SIZE_PROTOCOL, "sizes.yaml")
    results = run_and_score(proto, "npr:tiny", tmp_path / "run", data_roots={"manifest": tmp_path / "m.csv"},
                           tables=False)
    clean, crop = results.entries
    assert clean.n_errors == 1 and clean.errors["tiny"] == (
        "clean image: NPR input (crop to even height and width, 2x2 down/up-sampling) cannot handle a 1x1 (HxW) "
        "image: it needs at least 2x2 pixels")
    assert crop.errors["tiny"] == ("perturbation crop(position=center,size=[8, 8]): crop 8x8 cannot handle a 1x1 (HxW) "
                                   "image: it needs at least 8x8 pixels")
    assert clean.metrics["binary_detection"].values["n"].value == 2


def test_sida_preprocessing_size_limits() -> None:
    from bench.errors import ImageSizeError
    from sida.preprocess import clip_input, preprocess_image

    with pytest.raises(ImageSizeError, match=r"SIDA SAM input \(ResizeLongestSide 1024\) cannot handle a 1x4000 .*"
                                             r"short side of at least 2 pixels"):
        preprocess_image(np.zeros((1, 4000, 3), np.uint8), 1024, 336)
    with pytest.raises(ImageSizeError, match=r"SIDA CLIP input .* cannot handle a 1x3000 .*aspect ratio"):
        clip_input(np.zeros((1, 3000, 3), np.uint8), 336)
    assert preprocess_image(np.zeros((4, 4000, 3), np.uint8), 1024, 336).resize_size == (1, 1024)


class NanModel(fx.RunnerTestModel):
    """runner_test, but sample 0003 gets NaN probabilities and sample 0005 a NaN mask pixel."""

    name = "runner_nan"

    def predict_preprocessed(self, items, sizes):
        preds = super().predict_preprocessed(items, sizes)
        for item, pred in zip(items, preds):
            key = round(float(item.sum()), 3)
            if key in NanModel.bad_probs:
                pred.probs = np.full(3, np.nan)
            if key in NanModel.bad_masks and pred.mask is not None:
                pred.mask[0, 0] = np.nan
        return preds

    bad_probs: set = set()
    bad_masks: set = set()


def test_a_model_returning_nan_is_a_per_sample_error(tmp_path: Path) -> None:
    """NaN probabilities or masks from a model used to abort scoring after every prediction was made."""
    from bench.plugins import MODELS, create_dataset

    if NanModel.name not in MODELS:
        MODELS.register(NanModel.name, NanModel)
    model = fx.RunnerTestModel()
    samples = {s.id: s for s in create_dataset("runner_fake", n=6).iter_samples()}
    NanModel.bad_probs = {round(float(model.preprocess(samples["real/0003"].image).sum()), 3)}
    NanModel.bad_masks = {round(float(model.preprocess(samples["tampered/0005"].image).sum()), 3)}
    proto = fx.write_protocol(tmp_path, fx.FAKE_PROTOCOL.replace("{n: 12}", "{n: 6}").replace("{n: 20, seed: 0}", "{n: 0}"))
    results = run_and_score(proto, "runner_nan", tmp_path / "run", tables=False)
    clean = results.entries[0]
    assert clean.errors == {
        "real/0003": "model: returned probabilities [nan, nan, nan] (need finite values in [0, 1] summing to 1)",
        "tampered/0005": "model: returned a mask with values that are not finite probabilities in [0, 1]",
    }
    assert clean.metrics["ternary_detection"].values["n"].value == 4


def test_a_wrong_data_root_fails_before_the_model_is_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.plugins

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the data root was checked")

    monkeypatch.setattr(bench.plugins, "create_model", never)
    write_sid_set_tree(tmp_path / "sid", "validation")
    proto = fx.write_protocol(tmp_path, LOCALIZATION_PROTOCOL, "hostile.yaml")
    with pytest.raises(UserError, match="no split 'test'.*splits found: validation"):
        run_and_score(proto, "sida", tmp_path / "run", data_roots={"sid_set": tmp_path / "sid"})
    with pytest.raises(UserError, match="does not exist"):
        run_and_score(proto, "sida", tmp_path / "run", data_roots={"sid_set": tmp_path / "nowhere"})


def test_a_damaged_parquet_row_group_becomes_per_sample_errors(tmp_path: Path) -> None:
    """Bytes flipped inside one row group's compressed pages: its rows are errors, the others decode."""
    import pyarrow.parquet as pq

    from tests.data_fixtures import folder_rows, write_parquet_shards

    tree = write_sid_set_tree(tmp_path / "tree", "test")
    (path,) = write_parquet_shards(tmp_path / "hf", "test", folder_rows(tree / "test"), shards=1, row_group_size=7)
    meta = pq.ParquetFile(path).metadata
    column = meta.row_group(0).column(0)  # the image column of the first row group
    data = bytearray(path.read_bytes())
    start = column.data_page_offset + 64
    data[start:start + 256] = bytes(256)
    path.write_bytes(bytes(data))
    ds = create_dataset("sid_set_parquet", root=tmp_path / "hf", split="test")
    samples = list(ds.iter_samples())
    assert len(samples) == len(ds) == 14
    broken = [s for s in samples if s.error and "row group 0" in s.error]
    assert len(broken) == 7 and all(s.image is None for s in broken)
    assert ds.describe()["problems"]["decode_errors"] >= 7


def test_predictions_with_unknown_or_missing_ids_fail_before_any_image_is_decoded(tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd

    def never(self, *args, **kwargs):
        raise AssertionError("images were decoded before the sample ids were checked")

    monkeypatch.setattr(fx.FakeSidDataset, "iter_samples", never)
    proto = fx.write_protocol(tmp_path, fx.FAKE_PROTOCOL.replace("{n: 12}", "{n: 3}"))
    ids = ["real/0000", "full_synthetic/0001", "tampered/0002"]
    p = np.full((3, 3), 1 / 3)
    frame = pd.DataFrame({"sample_id": ids, "prob_real": p[:, 0], "prob_full_synthetic": p[:, 1], "prob_tampered": p[:, 2]})
    frame.assign(sample_id=["real/0000", "full_synthetic/0001", "tampered/0009"]).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(UserError, match=r"row 3: sample_id 'tampered/0009' is not in runner_fake/test"):
        score_predictions_file(tmp_path / "a.csv", proto, tmp_path / "out_a")
    frame.iloc[:2].to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(UserError, match=r"1 samples of runner_fake/test have no prediction.*'tampered/0002'"):
        score_predictions_file(tmp_path / "b.csv", proto, tmp_path / "out_b")


def test_a_data_root_for_a_dataset_the_protocol_does_not_use_is_refused(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """A typo in --data-root used to be ignored silently (the run then read the protocol's own root)."""
    from bench.cli import main

    proto = fx.write_protocol(tmp_path, LOCALIZATION_PROTOCOL, "hostile.yaml")
    (tmp_path / "p.csv").write_text("sample_id,prob_fake\nx,0.5\n")
    for argv in (["run", str(proto), "--model", "runner_test", "--out", str(tmp_path / "run")],
                 ["score", "--predictions", str(tmp_path / "p.csv"), "--protocol", str(proto), "--out", str(tmp_path / "s")]):
        assert main([*argv, "--data-root", f"sid_sett={tmp_path}"]) == 2
        assert ("error: --data-root names 'sid_sett', which protocol 'hostile_sid_set' does not use; its datasets: "
                "sid_set") in capsys.readouterr().err


def test_run_command_lists_the_data_before_creating_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    import bench.plugins
    from bench.cli import main

    def never(*args, **kwargs):
        raise AssertionError("the model was created before the data root was checked")

    monkeypatch.setattr(bench.plugins, "create_model", never)
    proto = fx.write_protocol(tmp_path, LOCALIZATION_PROTOCOL, "hostile.yaml")
    argv = ["run", str(proto), "--model", "sida", "--out", str(tmp_path / "run"), "--data-root", f"sid_set={tmp_path}"]
    assert main(argv) == 2
    assert "SID-Set has no split 'test'" in capsys.readouterr().err
