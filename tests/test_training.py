"""The shared training recipe: augmentations, loss going down, checkpoints, exact resume, CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from scipy.ndimage import gaussian_filter

from baselines.training import TRAINER_STATE, TrainRecipe, augment_crop, eval_geometry, gaussian_blur, jpeg
from bench.cli import main
from bench.errors import UserError
from bench.model import TrainOptions
from bench.plugins import create_dataset, create_model

torch.set_num_threads(1)


def write_sid_layout(root: Path, per_class: int = 6, size: tuple[int, int] = (72, 88), seed: int = 0) -> Path:
    """A small SID-Set-layout tree: smooth 'real' images, nearest-upsampled 'full_synthetic'
    ones (the up-sampling trace NPR and CNNSpot pick up), and real images with a pasted
    synthetic square as 'tampered' (with masks)."""
    rng = np.random.default_rng(seed)
    h, w = size
    for split in ("train", "validation", "test"):
        for folder in ("real", "full_synthetic", "tampered", "masks"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            real = gaussian_filter(rng.normal(128, 60, (h, w, 3)), (1.5, 1.5, 0)).clip(0, 255).astype(np.uint8)
            fake = rng.integers(0, 256, (h // 2, w // 2, 3), dtype=np.uint8).repeat(2, 0).repeat(2, 1)
            tampered, mask = real.copy(), np.zeros((h, w), np.uint8)
            box = (slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4))
            tampered[box], mask[box] = fake[box], 255
            Image.fromarray(real).save(root / split / "real" / f"r{i}.png")
            Image.fromarray(fake).save(root / split / "full_synthetic" / f"f{i}.png")
            Image.fromarray(tampered).save(root / split / "tampered" / f"t{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"t{i}_mask.png")
    return root


@pytest.fixture(scope="module")
def sid_root(tmp_path_factory) -> Path:
    return write_sid_layout(tmp_path_factory.mktemp("sid"))


def _data(root: Path):
    return create_dataset("sid_set", root=root, split="train"), create_dataset("sid_set", root=root, split="validation")


def test_blur_and_jpeg_match_their_references():
    image = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    expected = np.stack([gaussian_filter(image[:, :, c].astype(np.float32), 1.7) for c in range(3)], axis=2)
    np.testing.assert_array_equal(gaussian_blur(image, 1.7), np.clip(np.rint(expected), 0, 255).astype(np.uint8))
    out = jpeg(image, 30)
    assert out.shape == image.shape and 0 < np.abs(out.astype(int) - image).mean() < 60


def test_augment_crop_is_seeded_and_respects_probabilities():
    image = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    plain = TrainRecipe(crop_size=32, flip=False)
    a = augment_crop(image, plain, np.random.default_rng(5))
    b = augment_crop(image, plain, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (32, 32, 3)
    # a crop of the original (no blur/JPEG with p=0): found somewhere in the image
    assert any(np.array_equal(image[t:t + 32, l:l + 32], a) for t in range(9) for l in range(19))
    always = TrainRecipe(crop_size=None, flip=False, blur_prob=1.0, blur_sigma=(2.0, 2.0))
    np.testing.assert_array_equal(augment_crop(image, always, np.random.default_rng(0)), gaussian_blur(image, 2.0))


def _batch_loss(model, dataset) -> float:
    """Loss over the whole split as one batch, BatchNorm on batch statistics (a few steps do not
    yet settle the running averages that eval mode uses)."""
    recipe = model.config.train
    samples = list(dataset.iter_samples())
    x = torch.stack([model.to_input(eval_geometry(s.image, recipe)) for s in samples])
    y = torch.tensor([float(s.label != 0) for s in samples])
    model.network.train()
    with torch.no_grad():
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model.network(x)[:, 0], y)
    model.network.eval()
    return float(loss)


def test_training_lowers_the_loss_and_writes_checkpoints(sid_root, tmp_path):
    train, val = _data(sid_root)
    model = create_model("npr:tiny")
    # square resize before the crop: every fixture image then yields the same crop geometry
    recipe = replace(model.config.train, load_size=72, resize_mode="square", batch_size=8, lr=1e-3)
    model.config = replace(model.config, train=recipe)
    before = _batch_loss(model, train)
    report = model.fit(train, val, TrainOptions(out_dir=tmp_path / "run", epochs=4, seed=1))
    assert _batch_loss(model, train) < 0.7 * before
    assert report["steps"] == 4 * 3 and report["epoch"] == 4 and len(report["history"]) == 4
    for folder in ("best", "last"):
        cfg = json.loads((tmp_path / "run" / folder / "config.json").read_text())
        assert cfg["model"] == "npr" and cfg["config"] == "tiny" and cfg["num_outputs"] == 1
    assert (tmp_path / "run" / "last" / TRAINER_STATE).is_file()
    best = create_model("npr:tiny", weights=tmp_path / "run" / "best")
    assert best.weights_sha256


def test_resume_continues_exactly(sid_root, tmp_path):
    train, val = _data(sid_root)
    straight = create_model("cnnspot:tiny")
    straight.fit(train, val, TrainOptions(out_dir=tmp_path / "a", epochs=2, seed=3))
    first = create_model("cnnspot:tiny")
    first.fit(train, val, TrainOptions(out_dir=tmp_path / "b", epochs=1, seed=3))
    with pytest.raises(UserError, match="--resume"):
        create_model("cnnspot:tiny").fit(train, val, TrainOptions(out_dir=tmp_path / "b", epochs=2, seed=3))
    resumed = create_model("cnnspot:tiny")
    report = resumed.fit(train, val, TrainOptions(out_dir=tmp_path / "b", epochs=2, seed=3, resume=True))
    assert report["epochs_run"] == 1 and report["epoch"] == 2
    a = load_file(str(tmp_path / "a" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "last" / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)


def test_max_steps_then_resume_and_ternary_head(sid_root, tmp_path):
    train, val = _data(sid_root)
    model = create_model("fredect:tiny", num_classes=3)
    report = model.fit(train, val, TrainOptions(out_dir=tmp_path / "r", max_steps=2, batch_size=4, seed=0))
    assert report["steps"] == 2 and report["stopped"] == "max_steps"
    more = create_model("fredect:tiny", num_classes=3).fit(
        train, val, TrainOptions(out_dir=tmp_path / "r", max_steps=3, batch_size=4, seed=0, resume=True))
    assert more["steps"] == 3


def test_univfd_trains_only_the_fc(sid_root, tmp_path):
    train, val = _data(sid_root)
    model = create_model("univfd:tiny")
    visual = {k: v.clone() for k, v in model.network.visual.state_dict().items()}
    fc = model.network.fc.weight.detach().clone()
    model.fit(train, val, TrainOptions(out_dir=tmp_path / "u", max_steps=2, seed=0))
    for k, v in model.network.visual.state_dict().items():
        torch.testing.assert_close(v, visual[k])
    assert not torch.equal(model.network.fc.weight, fc)


def test_selection_on_test_split_is_refused(sid_root, tmp_path):
    train = create_dataset("sid_set", root=sid_root, split="train")
    test = create_dataset("sid_set", root=sid_root, split="test")
    with pytest.raises(UserError, match="test split"):
        create_model("npr:tiny").fit(train, test, TrainOptions(out_dir=tmp_path / "x"))


def test_cli_train(sid_root, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["--device", "cpu", "train", "--model", "cnnspot:tiny", "--dataset", "sid_set", "--root",
                 str(sid_root), "--out", str(out), "--epochs", "1", "--num-classes", "3"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["epoch"] == 1 and Path(report["best"]).is_dir()
    model = create_model("cnnspot:tiny", num_classes=3, weights=out / "best")
    assert model.num_classes == 3
    assert main(["train", "--model", "cnnspot:tiny", "--dataset", "sid_set", "--root", str(sid_root),
                 "--out", str(out), "--epochs", "1"]) == 2  # existing run without --resume: one-line error


def test_cli_train_options_reach_the_recipe_or_are_refused(sid_root, tmp_path, capsys):
    """``--train-option`` goes to ``TrainOptions.extra``; a model that reads none, or an unknown key, is
    refused in one line instead of being ignored."""
    base = ["train", "--dataset", "sid_set", "--root", str(sid_root)]
    code = main([*base, "--model", "cnnspot:tiny", "--out", str(tmp_path / "c"), "--train-option", "stage=2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no training option 'stage'" in err[0] and "no --train-option" in err[0]
    code = main([*base, "--model", "sida:tiny", "--out", str(tmp_path / "s"), "--train-option", "stages=2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "'stages'" in err[0] and "stage" in err[0].split("known:")[1]
    code = main([*base, "--model", "sida:tiny", "--out", str(tmp_path / "ok"), "--max-steps", "1",
                 "--batch-size", "1", "--train-option", "warmup_steps=3", "--train-option", "grad_clip=0.5"])
    assert code == 0
    recipe = json.loads(capsys.readouterr().out)["recipe"]
    assert recipe["warmup_steps"] == 3 and recipe["grad_clip"] == 0.5
