"""MVSS-Net's training recipe (IMDLBenCo's, non-official): loss, edge targets, schedule, optimizer
groups, Bayar projection, augmentation labels, selection metric, fit / resume / CLI; HiFi-Net refused."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from baselines.mvss_training import (
    RECIPES,
    MVSSRecipe,
    augment,
    edge_target,
    lr_at,
    mvss_loss,
    parameter_groups,
    pixel_f1,
    training_item,
)
from bench.errors import UserError
from bench.model import TrainOptions
from bench.plugins import create_dataset, create_model
from bench.types import Sample

torch.set_num_threads(1)


# ---------------------------------------------------------------------- independent references
def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def bilinear_align_corners(x: np.ndarray, out: int) -> np.ndarray:
    """(h, w) → (out, out), bilinear with align_corners=True, written with explicit loops."""
    h, w = x.shape
    res = np.zeros((out, out))
    for i in range(out):
        sy = i * (h - 1) / (out - 1)
        y0 = int(math.floor(sy))
        y1, wy = min(y0 + 1, h - 1), sy - y0
        for j in range(out):
            sx = j * (w - 1) / (out - 1)
            x0 = int(math.floor(sx))
            x1, wx = min(x0 + 1, w - 1), sx - x0
            res[i, j] = ((1 - wy) * ((1 - wx) * x[y0, x0] + wx * x[y0, x1])
                         + wy * ((1 - wx) * x[y1, x0] + wx * x[y1, x1]))
    return res


def imdlbenco_loss(edge: np.ndarray, seg: np.ndarray, mask: np.ndarray, edge_gt: np.ndarray,
                   label: np.ndarray) -> tuple[float, float, float, float]:
    """mvssnet.py ``predict_loss`` (if_label=True) by hand: alpha 0.16, beta 0.04, dice smooth 1."""
    s = seg.shape[-1]
    p = sigmoid(seg[:, 0])
    e = sigmoid(np.stack([bilinear_align_corners(x[0], s) for x in edge]))

    def dice(x: np.ndarray, g: np.ndarray) -> float:
        return 1.0 - (2.0 * np.sum(x * g) + 1.0) / (np.sum(g**2) + np.sum(x**2) + 1.0)

    gmp = p.reshape(len(p), -1).max(axis=1)  # MaxPool2d(S) on the probabilities
    q = sigmoid(gmp)  # BCEWithLogitsLoss applied to them
    clf = float(np.mean(-(label * np.log(q) + (1 - label) * np.log(1 - q))))
    seg_l, edge_l = dice(p, mask), dice(e, edge_gt)
    return 0.16 * seg_l + 0.04 * clf + 0.8 * edge_l, seg_l, edge_l, clf


def test_loss_equals_the_imdlbenco_formula_by_hand() -> None:
    rng = np.random.default_rng(3)
    edge = rng.normal(size=(2, 1, 3, 3))
    seg = rng.normal(scale=2.0, size=(2, 1, 9, 9))
    mask = np.zeros((2, 9, 9))
    mask[0, 2:6, 3:7] = 1
    edge_gt = np.zeros((2, 9, 9))
    edge_gt[0, 1:7, 2:8] = 1
    edge_gt[0, 3:5, 4:6] = 0
    label = np.array([1.0, 0.0])
    got = mvss_loss(*(torch.tensor(a, dtype=torch.float64) for a in (edge, seg, mask, edge_gt, label)), MVSSRecipe())
    expected = imdlbenco_loss(edge, seg, mask, edge_gt, label)
    assert [float(v) for v in got] == pytest.approx(list(expected), rel=1e-6)  # fp32 inside
    assert MVSSRecipe().edge_weight == pytest.approx(0.8)


def test_edge_target_is_the_cross_dilation_band_by_brute_force() -> None:
    mask = np.zeros((20, 23), bool)
    mask[5:14, 6:17] = True
    mask[0:2, 19:23] = True  # touches the top and right borders
    mask[17, 2] = True  # a single pixel
    got = edge_target(mask, 7)
    h, w = mask.shape
    expected = np.zeros_like(mask)
    for y in range(h):
        for x in range(w):
            reach = [(y + d, x) for d in range(-3, 4)] + [(y, x + d) for d in range(-3, 4)]
            inside = [mask[a, b] for a, b in reach if 0 <= a < h and 0 <= b < w]
            expected[y, x] = any(inside) and not all(inside)
    assert np.array_equal(got, expected)
    assert got[5, 6] and got[8, 3] and not got[8, 2]  # 3 px outside is edge, 4 px is not
    assert got[9, 11] == False  # noqa: E712 - the rectangle's centre is 4+ px from its boundary
    assert not edge_target(np.zeros((9, 9), bool), 7).any() and not edge_target(np.ones((9, 9), bool), 7).any()
    with pytest.raises(UserError, match="odd"):
        edge_target(mask, 6)


def test_border_is_no_edge() -> None:
    mask = np.zeros((12, 12), bool)
    mask[:, :6] = True  # touches three borders; only the boundary between columns 5 and 6 is an edge
    got = edge_target(mask, 7)
    assert np.array_equal(np.flatnonzero(got.any(axis=0)), np.arange(3, 9))  # 3 px on each side
    assert got[:, 3:9].all()


def test_schedule_is_warmup_then_half_cosine() -> None:
    r = MVSSRecipe()
    assert lr_at(r, 0.0, 200, 2e-5) == 0.0
    assert lr_at(r, 1.0, 200, 2e-5) == pytest.approx(1e-5)
    assert lr_at(r, 2.0, 200, 2e-5) == pytest.approx(2e-5)
    assert lr_at(r, 101.0, 200, 2e-5) == pytest.approx(5e-7 + (2e-5 - 5e-7) * 0.5)
    assert lr_at(r, 200.0, 200, 2e-5) == pytest.approx(5e-7)
    assert (r.epochs, r.lr, r.min_lr, r.batch_size, r.accum_iter, r.edge_width, r.weight_decay) == (
        200, 2e-5, 5e-7, 1, 8, 7, 0.05)  # demo_train_mvss.sh
    assert "non-official" in r.name and "non-official" in RECIPES["tiny"].name


def test_weight_decay_groups_follow_timm_and_skip_the_frozen_sobel() -> None:
    net = create_model("mvss_net:tiny").net
    decay, no_decay = (set(map(id, g["params"])) for g in parameter_groups(net, 0.05))
    named = dict(net.named_parameters())
    assert id(named["constrain_conv.kernel"]) in decay and id(named["model.conv1.weight"]) in decay
    for name in ("model.bn1.weight", "head.pam.alpha", "head.cam.beta", "head.out.1.bias", "erb_db_1.conv1.bias"):
        assert id(named[name]) in no_decay, name
    assert id(named["sobel_x1.0.weight"]) not in decay | no_decay
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert decay | no_decay == trainable and not decay & no_decay


def test_bayar_projection_gives_the_official_gradient() -> None:
    """Official: ``kernel.data ← kernel / sum`` in every forward, then the kernel is used as is."""
    conv = create_model("mvss_net:tiny").net.constrain_conv
    x = torch.randn(2, 1, 9, 9)
    weight = torch.randn(2, 3, 9, 9)
    official = conv.kernel.detach().clone()
    official = (official / official.sum(dim=2, keepdim=True)).requires_grad_(True)
    full = torch.cat([official[:, :, :12], -torch.ones(1, 3, 1), official[:, :, 12:]], dim=2).reshape(3, 1, 5, 5)
    (torch.nn.functional.conv2d(x, full, padding=2) * weight).sum().backward()
    conv.project_()
    (conv(x) * weight).sum().backward()
    assert torch.allclose(conv.kernel.detach(), official.detach(), atol=1e-6)
    assert torch.allclose(conv.kernel.grad, official.grad, rtol=1e-5, atol=1e-5)


def test_pixel_f1_by_hand() -> None:
    gt = np.zeros((4, 5), bool)
    gt[0, :4] = True
    pred = np.zeros((4, 5), np.float32)
    pred[0, :2] = 0.9
    pred[1, 0] = 0.7
    pred[0, 2] = 0.5  # not above the threshold
    p, r = 2 / 3, 2 / 4
    assert pixel_f1(pred, gt) == pytest.approx(2 * p * r / (p + r), rel=1e-6)
    assert pixel_f1(np.zeros((4, 5)), gt) == 0.0


# ---------------------------------------------------------------------- targets of one sample
STILL = MVSSRecipe(scale_limit=0.0, copy_move_p=0.0, inpaint_p=0.0, hflip_p=0.0, vflip_p=0.0, brightness_limit=0.0,
                   contrast_limit=0.0, jpeg_p=0.0, rot90_p=0.0, blur_p=0.0)


def test_labels_follow_the_mask_after_augmentation() -> None:
    model = create_model("mvss_net:tiny")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    mask = np.zeros((40, 48), bool)
    mask[10:20, 8:30] = True
    synthetic = training_item(model, Sample("s", image, 1, None), STILL, rng)
    assert synthetic.label == 0.0 and not synthetic.mask.any() and not synthetic.edge.any()
    tampered = training_item(model, Sample("t", image, 2, mask), STILL, rng)
    assert tampered.label == 1.0 and tampered.mask.shape == (64, 64) and tampered.edge.any()
    assert torch.equal(tampered.image, model.preprocess(image))  # the plugin's own input policy
    copied = training_item(model, Sample("r", image, 0, None), replace(STILL, copy_move_p=1.0), rng)
    assert copied.label == 1.0 and copied.mask.any()  # a copy-move augmentation makes a real image fake


def test_geometric_augmentations_move_image_and_mask_together() -> None:
    rng = np.random.default_rng(1)
    image = np.zeros((30, 40, 3), np.uint8)
    mask = np.zeros((30, 40), np.uint8)
    image[2:9, 3:12] = 200
    mask[2:9, 3:12] = 255
    for recipe in (replace(STILL, hflip_p=1.0), replace(STILL, vflip_p=1.0), replace(STILL, rot90_p=1.0)):
        for _ in range(3):
            img, m = augment(image, mask, recipe, rng)
            assert img.shape[:2] == m.shape
            assert np.array_equal(img[:, :, 0] > 100, m > 127)
    for _ in range(3):  # rescale: bilinear image, nearest mask, same size, forged area kept
        img, m = augment(image, mask, replace(STILL, scale_limit=0.2), rng)
        assert img.shape[:2] == m.shape and 0.8 * 40 - 1 <= m.shape[1] <= 1.2 * 40
        assert abs(np.mean(m > 127) - np.mean(mask > 127)) < 0.02


# ---------------------------------------------------------------------- fit, resume, CLI
@pytest.fixture(scope="module")
def sid_mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.sidmini import SMALL_PER_CLASS, SMALL_SIZE, build_sid_mini

    return build_sid_mini(tmp_path_factory.mktemp("sidmini"), per_class=SMALL_PER_CLASS, size=SMALL_SIZE)


def splits(root: Path) -> tuple[Any, Any]:
    train = create_dataset("sid_mini", root=root, split="train")
    return train, create_dataset("sid_mini", root=root, split="validation")


def test_tiny_fit_saves_strict_checkpoints_and_refuses_misuse(tmp_path: Path, sid_mini_root: Path) -> None:
    train, val = splits(sid_mini_root)
    model = create_model("mvss_net:tiny")
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    report = model.fit(train, val, TrainOptions(out_dir=tmp_path, epochs=2, batch_size=4))
    assert report["steps"] == 2 * (len(train) // 4) and report["stopped"] == "epochs"
    assert report["recipe_name"] == "imdlbenco (non-official), tiny budget" and report["init"] == "random (seed 0)"
    assert [h["val_images"] for h in report["history"]] == [3.0, 3.0]  # the 3 tampered validation images
    assert 0.0 <= report["best_val_score"] <= 1.0 and report["best_epoch"] in (0, 1)
    changed = [k for k, v in model.net.state_dict().items() if not torch.equal(v, before[k])]
    assert "head.out.1.weight" in changed and "sobel_x1.0.weight" not in changed
    saved = json.loads((tmp_path / "best" / "config.json").read_text())
    assert saved["model"] == "mvss_net" and "non-official" in saved["training"]["recipe_name"]
    reloaded = create_model("mvss_net:tiny", weights=tmp_path / "last")
    assert reloaded.describe()["weights_format"] == "safetensors"
    for k, v in reloaded.net.state_dict().items():
        assert torch.equal(v, model.net.state_dict()[k]), k
    with pytest.raises(UserError, match="--resume"):
        model.fit(train, val, TrainOptions(out_dir=tmp_path, epochs=1))
    with pytest.raises(UserError, match="test split"):
        model.fit(train, create_dataset("sid_mini", root=sid_mini_root, split="test"),
                  TrainOptions(out_dir=tmp_path / "x", epochs=1))
    with pytest.raises(UserError, match="at least"):
        model.fit(train, val, TrainOptions(out_dir=tmp_path / "y", batch_size=64))
    create_model("pscc_net:tiny").save(tmp_path / "pscc", {})
    with pytest.raises(UserError, match="holds a 'pscc_net' checkpoint"):
        create_model("mvss_net:tiny", weights=tmp_path / "pscc")


def test_resume_mid_epoch_equals_an_uninterrupted_run(tmp_path: Path, sid_mini_root: Path) -> None:
    train, val = splits(sid_mini_root)

    def run(out: Path, steps: int, resume: bool = False) -> dict[str, torch.Tensor]:
        model = create_model("mvss_net:tiny")
        model.fit(train, val, TrainOptions(out_dir=out, epochs=2, batch_size=4, max_steps=steps, resume=resume, seed=5))
        return model.net.state_dict()

    full = run(tmp_path / "full", 6)
    run(tmp_path / "split", 2)
    resumed = run(tmp_path / "split", 6, resume=True)
    for k, v in full.items():
        assert torch.equal(v, resumed[k]), k


def test_imagenet_resnet_initialises_both_streams(tmp_path: Path) -> None:
    source = create_model("mvss_net:tiny")
    imagenet = {k: v.clone() for k, v in source.net.model.state_dict().items()}  # torchvision key names
    torch.save(imagenet, tmp_path / "resnet50.pth")
    model = create_model("mvss_net:tiny", weights=tmp_path / "resnet50.pth")
    assert model.describe()["weights_format"] == "imagenet_resnet50"
    for stream in (model.net.model, model.net.noise_extractor.model):
        for k, v in stream.state_dict().items():
            assert torch.equal(v, imagenet[k]), k
    del imagenet["layer4.1.conv2.weight"]
    torch.save(imagenet, tmp_path / "partial.pth")
    with pytest.raises(UserError, match="layer4.1.conv2.weight"):
        create_model("mvss_net:tiny", weights=tmp_path / "partial.pth")


def test_cli_train_then_predict(tmp_path: Path, sid_mini_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.cli import main

    out = tmp_path / "train"
    args = ["train", "--model", "mvss_net:tiny", "--dataset", "sid_mini", "--root", str(sid_mini_root),
            "--out", str(out), "--max-steps", "2", "--batch-size", "4"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"] == 2 and report["recipe"]["name"] == "imdlbenco (non-official), tiny budget"
    model = create_model("mvss_net:tiny", weights=out / "best")
    pred = model.predict([np.zeros((33, 35, 3), np.uint8)])[0]
    assert pred.mask.shape == (33, 35) and pred.probs.sum() == pytest.approx(1.0)


def test_hifi_net_is_refused_in_one_line(tmp_path: Path, sid_mini_root: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from bench.cli import main

    args = ["train", "--model", "hifi_net:tiny", "--dataset", "sid_mini", "--root", str(sid_mini_root),
            "--out", str(tmp_path / "h")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no official training recipe" in err and "hifi_net" in err
    assert not (tmp_path / "h").exists()
