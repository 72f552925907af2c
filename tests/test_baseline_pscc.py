"""PSCC-Net plugin: architecture vs the official key layout, loaders, conventions, training."""

from __future__ import annotations

import json
from collections.abc import Iterator, Set
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

from baselines.pscc_heads import NonLocalMask, resize_features
from baselines.pscc_net import OFFICIAL_PARTS, PSCCNet
from baselines.pscc_training import (
    RECIPES,
    PSCCRecipe,
    balanced_bce,
    batches,
    class_weights,
    dihedral,
    lr_at,
    mask_pyramid,
    train_pscc,
    training_item,
    validate,
)
from bench.datasets.base import Dataset
from bench.errors import UserError
from bench.model import Capability, TrainOptions
from bench.plugins import create_model
from bench.types import LabelSpace, Sample

torch.set_num_threads(1)

# Keys and shapes of the official checkpoint/NLCDetection_checkpoint/NLCDetection.pth and
# DetectionHead.pth (read from the files committed in proteus1991/PSCC-Net), and of HRNet.pth as
# implied by models/seg_hrnet.py (stride-1 stem, stage1 bottleneck 64→256, stage4 widths 18/36/72/144).
OFFICIAL_KEYS = {
    "HRNet": {
        "module.conv1.weight": (64, 3, 3, 3),
        "module.bn2.running_var": (64,),
        "module.layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "module.layer1.1.conv3.weight": (256, 64, 1, 1),
        "module.transition1.0.0.weight": (18, 256, 3, 3),
        "module.transition1.1.0.0.weight": (36, 256, 3, 3),
        "module.transition3.3.0.0.weight": (144, 72, 3, 3),
        "module.stage4.0.branches.3.1.conv2.weight": (144, 144, 3, 3),
        "module.stage4.0.fuse_layers.0.3.0.weight": (18, 144, 1, 1),
        "module.stage4.0.fuse_layers.3.0.1.0.weight": (18, 18, 3, 3),
        "module.stage4.0.fuse_layers.3.0.2.0.weight": (144, 18, 3, 3),
    },
    "NLCDetection": {
        "module.getmask1.g.weight": (288, 288, 1, 1),
        "module.getmask1.W_s.weight": (18, 18, 1, 1),
        "module.getmask1.getmask.0.weight": (16, 18, 3, 3),
        "module.getmask2.theta.weight": (144, 144, 1, 1),
        "module.getmask3.phi.bias": (288,),
        "module.getmask4.gamma_c": (1,),
        "module.getmask4.getmask.2.weight": (1, 16, 3, 3),
    },
    "DetectionHead": {
        "module.incre_modules.0.0.conv3.weight": (36, 18, 1, 1),
        "module.incre_modules.3.0.downsample.1.running_mean": (288,),
        "module.downsamp_modules.2.0.weight": (288, 144, 3, 3),
        "module.final_layer.0.weight": (128, 288, 1, 1),
        "module.classifier.0.weight": (16, 128),
        "module.classifier.2.weight": (2, 16),
    },
}
# Entries in the official files (NLCDetection 64, DetectionHead 128 counted in the files) and
# trainable parameters (NLCDetection 719,824 and DetectionHead 919,546 summed from the files;
# HRNet 2,028,572 = the ImageNet hrnet_w18_small_v2 minus its head and extra stage-3/4 modules).
OFFICIAL_KEY_COUNTS = {"HRNet": 444, "NLCDetection": 64, "DetectionHead": 128}
OFFICIAL_PARAMS = {"backbone": 2_028_572, "localization_head": 719_824, "detection_head": 919_546}


@pytest.fixture(scope="module")
def default_model() -> PSCCNet:
    return create_model("pscc_net")


@pytest.fixture()
def tiny() -> PSCCNet:
    torch.manual_seed(0)
    return create_model("pscc_net:tiny")


def write_official(model: PSCCNet, folder: Path, nested: bool = True) -> Path:
    """Save the network as three DataParallel-style (``module.``) raw state dicts."""
    for stem, attr in OFFICIAL_PARTS.items():
        state = {f"module.{k}": v for k, v in getattr(model.net, attr).state_dict().items()}
        target = folder / f"{stem}_checkpoint" / f"{stem}.pth" if nested else folder / f"{stem}.pth"
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, target)
    return folder


def randomize_bn(model: PSCCNet) -> None:
    """Non-trivial BatchNorm statistics, so that a load that forgets buffers is visible."""
    g = torch.Generator().manual_seed(1)
    for m in model.net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def images(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (72, 96, 3), dtype=np.uint8), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)]


# ---------------------------------------------------------------------- architecture
def test_plugin_declares_binary_detector_and_localizer(tiny: PSCCNet) -> None:
    assert tiny.label_space is LabelSpace.BINARY
    assert tiny.capabilities == {Capability.DETECT, Capability.LOCALIZE}
    assert {"default", "tiny"} <= set(PSCCNet.configs)


def test_default_keys_and_shapes_match_the_official_layout(default_model: PSCCNet) -> None:
    for stem, attr in OFFICIAL_PARTS.items():
        state = {f"module.{k}": tuple(v.shape) for k, v in getattr(default_model.net, attr).state_dict().items()}
        assert len(state) == OFFICIAL_KEY_COUNTS[stem], stem
        for key, shape in OFFICIAL_KEYS[stem].items():
            assert state.get(key) == shape, key


def test_default_parameter_count_matches_official(default_model: PSCCNet) -> None:
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in default_model.net.named_children()}
    assert counts == OFFICIAL_PARAMS
    assert sum(counts.values()) == 3_667_942


def test_backbone_keys_equal_timm_imagenet_hrnet_subset(default_model: PSCCNet) -> None:
    """Independent reference: timm's HRNet-W18-small-v2 (the ImageNet init) has the same names;
    PSCC-Net keeps one module in stages 3 and 4 and drops the classification head."""
    reference = timm.create_model("hrnet_w18_small_v2", pretrained=False).state_dict()
    dropped = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.",
               "stage3.1.", "stage3.2.", "stage4.1.")
    expected = {k: tuple(v.shape) for k, v in reference.items() if not k.startswith(dropped)}
    ours = {k: tuple(v.shape) for k, v in default_model.net.backbone.state_dict().items()}
    assert ours == expected


def test_backbone_is_stride_one(tiny: PSCCNet) -> None:
    feats = tiny.net.backbone(torch.rand(1, 3, 40, 48))
    assert [tuple(f.shape[-2:]) for f in feats] == [(40, 48), (20, 24), (10, 12), (5, 6)]


def test_same_size_feature_resize_is_the_identity() -> None:
    feats = [torch.rand(2, 3, 16 >> k, 16 >> k) for k in range(4)]
    for f, r in zip(feats, resize_features(feats, 16)):
        torch.testing.assert_close(r, F.interpolate(f, size=f.shape[-2:], mode="bilinear", align_corners=True))
    assert [tuple(r.shape[-2:]) for r in resize_features(feats, 32)] == [(32, 32), (16, 16), (8, 8), (4, 4)]


def test_non_local_mask_matches_hand_written_formula() -> None:
    torch.manual_seed(3)
    block = NonLocalMask(in_channels=3, reduce_scale=2, hidden=4).eval()
    with torch.no_grad():
        block.gamma_s.fill_(0.7)
        block.gamma_c.fill_(-0.4)
    x = torch.randn(2, 3, 8, 6)
    with torch.no_grad():
        mask, z = block(x)

    def conv1x1(conv: torch.nn.Conv2d, a: np.ndarray) -> np.ndarray:  # a: (C, N)
        w = conv.weight.detach().numpy()[:, :, 0, 0]
        return w @ a + conv.bias.detach().numpy()[:, None]

    def softmax(a: np.ndarray) -> np.ndarray:
        e = np.exp(a - a.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    for b in range(2):
        xb = x[b].numpy()
        x1 = xb.reshape(12, 4 * 3)  # memory reshape (3, 8, 6) → (12, 4, 3), flattened spatially
        g, th, ph = (conv1x1(c, x1) for c in (block.g, block.theta, block.phi))  # (12, N=12)
        y_s = (softmax(th.T @ ph) @ g.T).T.reshape(3, 8, 6)
        y_c = (g.T @ softmax(th @ ph.T)).reshape(3, 8, 6)
        ws = conv1x1(block.W_s, y_s.reshape(3, -1)).reshape(3, 8, 6)
        wc = conv1x1(block.W_c, y_c.reshape(3, -1)).reshape(3, 8, 6)
        expected = xb + 0.7 * ws - 0.4 * wc
        np.testing.assert_allclose(z[b].detach().numpy(), expected, rtol=1e-4, atol=1e-5)
    assert mask.shape == (2, 1, 8, 6) and float(mask.min()) >= 0 and float(mask.max()) <= 1


# ---------------------------------------------------------------------- loading
@pytest.mark.parametrize("nested", [True, False])
def test_official_checkpoint_round_trip(tiny: PSCCNet, tmp_path: Path, nested: bool) -> None:
    randomize_bn(tiny)
    folder = write_official(tiny, tmp_path / "checkpoint", nested)
    loaded = create_model("pscc_net:tiny", weights=folder)
    assert loaded.weights_format == "official"
    for k, v in tiny.net.state_dict().items():
        assert torch.equal(v, loaded.net.state_dict()[k]), k
    for a, b in zip(tiny.predict(images()), loaded.predict(images())):
        np.testing.assert_array_equal(a.probs, b.probs)
        np.testing.assert_array_equal(a.mask, b.mask)


def test_strict_load_lists_missing_and_unexpected_keys(tiny: PSCCNet, tmp_path: Path) -> None:
    folder = write_official(tiny, tmp_path / "checkpoint")
    path = folder / "NLCDetection_checkpoint" / "NLCDetection.pth"
    state = torch.load(path, weights_only=True)
    del state["module.getmask2.W_c.bias"]
    state["module.getmask5.g.weight"] = torch.zeros(1)
    torch.save(state, path)
    expected = r"missing keys: getmask2\.W_c\.bias.*unexpected keys: getmask5\.g\.weight"
    with pytest.raises(UserError, match=expected) as err:
        create_model("pscc_net:tiny", weights=folder)
    assert "NLCDetection.pth" in str(err.value)


def test_default_rejects_tiny_checkpoint_with_shape_errors(tiny: PSCCNet, tmp_path: Path) -> None:
    folder = write_official(tiny, tmp_path / "checkpoint")
    with pytest.raises(UserError, match="HRNet.pth.*shape mismatches: bn1.bias"):
        create_model("pscc_net", weights=folder)


def test_missing_official_file_names_it_and_the_source(tiny: PSCCNet, tmp_path: Path) -> None:
    folder = write_official(tiny, tmp_path / "checkpoint")
    (folder / "DetectionHead_checkpoint" / "DetectionHead.pth").unlink()
    with pytest.raises(UserError, match=r"DetectionHead_checkpoint/DetectionHead\.pth.*proteus1991/PSCC-Net"):
        create_model("pscc_net:tiny", weights=folder)


def test_single_file_must_be_the_imagenet_init(tiny: PSCCNet, tmp_path: Path) -> None:
    own = tiny.net.backbone.state_dict()
    backbone = {f"model.{k}": v.clone() + 1 if "num_batches" not in k else v for k, v in own.items()}
    extra = {"classifier.weight": torch.zeros(3, 2), "stage3.1.branches.0.0.conv1.weight": torch.zeros(1)}
    torch.save({**backbone, **extra}, tmp_path / "hrnet_w18_small_v2.pth")
    loaded = create_model("pscc_net:tiny", weights=tmp_path / "hrnet_w18_small_v2.pth")
    assert loaded.weights_format == "imagenet_backbone"
    assert torch.equal(loaded.net.backbone.conv1.weight, tiny.net.backbone.conv1.weight + 1)
    torch.save(tiny.net.backbone.state_dict(), tmp_path / "HRNet.pth")
    with pytest.raises(UserError, match="checkpoint/ directory"):
        create_model("pscc_net:tiny", weights=tmp_path / "HRNet.pth")


def test_our_safetensors_round_trip_and_config_check(tiny: PSCCNet, tmp_path: Path) -> None:
    randomize_bn(tiny)
    tiny.save(tmp_path / "ours")
    loaded = create_model("pscc_net:tiny", weights=tmp_path / "ours")
    assert loaded.weights_format == "safetensors"
    np.testing.assert_array_equal(tiny.predict(images())[0].mask, loaded.predict(images())[0].mask)
    with pytest.raises(UserError, match="num_classes"):
        create_model("pscc_net:tiny", weights=tmp_path / "ours", num_classes=3)


# ---------------------------------------------------------------------- conventions
def test_preprocess_is_rgb_over_255_without_normalisation(tiny: PSCCNet) -> None:
    img = images()[0]
    x = tiny.preprocess(img)
    np.testing.assert_array_equal(x.numpy(), img.transpose(2, 0, 1).astype(np.float32) / 255)
    policy = tiny.input_policy
    assert policy.mean is None and policy.std is None and policy.resize is None and policy.colour_order == "RGB"


def bilinear_align_corners(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Hand-written bilinear resize with align_corners=True (corner pixels map to corners)."""
    ih, iw = a.shape
    ys, xs = np.linspace(0, ih - 1, h), np.linspace(0, iw - 1, w)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, ih - 1), np.minimum(x0 + 1, iw - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = a[y0][:, x0] * (1 - fx) + a[y0][:, x1] * fx
    bottom = a[y1][:, x0] * (1 - fx) + a[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def test_outputs_follow_the_official_test_conventions(tiny: PSCCNet) -> None:
    with torch.no_grad():  # make index 1 (= forged) clearly win
        tiny.net.detection_head.classifier[2].bias.copy_(torch.tensor([-3.0, 3.0]))
    img = images()[0]
    pred = tiny.predict([img])[0]
    x = tiny.preprocess(img)[None]
    with torch.no_grad():
        feats = tiny.net.backbone(x)
        logits = tiny.net.detection_head(feats)[0].numpy().astype(np.float64)
        mask1 = tiny.net.localization_head(feats)[0][0, 0].numpy()
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(pred.probs, softmax, rtol=1e-5)
    assert pred.probs[1] > 0.9  # p_fake is the softmax's index 1
    assert mask1.shape == (64, 64)  # tiny crop_size
    assert pred.mask is not None and pred.mask.shape == img.shape[:2]
    np.testing.assert_allclose(pred.mask, bilinear_align_corners(mask1, 72, 96), atol=1e-5)


def test_max_side_downscales_input_and_returns_full_size_mask(tiny: PSCCNet) -> None:
    small = create_model("pscc_net:tiny", max_side=32)
    img = images()[0]
    assert tuple(small.preprocess(img).shape) == (3, 24, 32)
    pred = small.predict([img])[0]
    assert pred.mask is not None and pred.mask.shape == (72, 96)
    assert small.input_policy.resize == 32 and small.describe()["options"] == {"max_side": 32}
    assert PSCCNet.configs["max1024"].max_side == 1024
    with pytest.raises(UserError, match="max_side"):
        create_model("pscc_net:tiny", max_side=0)
    with pytest.raises(UserError, match="Unknown option"):
        create_model("pscc_net:tiny", maxside=32)


# ---------------------------------------------------------------------- training pieces
def test_dihedral_matches_the_official_pil_augmentation() -> None:
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    pil = Image.fromarray(img)
    reference = [pil, *(pil.rotate(a, expand=True) for a in (90, 180, 270))]
    reference += [r.transpose(Image.Transpose.FLIP_TOP_BOTTOM) for r in reference]
    for index, ref in enumerate(reference):
        np.testing.assert_array_equal(dihedral(img, index), np.asarray(ref))


def test_mask_pyramid_and_training_item() -> None:
    mask = np.zeros((40, 40), bool)
    mask[:20, :] = True
    image, masks = training_item(np.zeros((40, 40, 3), np.uint8), mask, 16, 0)
    assert image.shape == (3, 16, 16)
    assert [tuple(m.shape) for m in masks] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert masks[3].tolist() == [[1.0, 1.0], [0.0, 0.0]]
    assert set(np.unique(mask_pyramid(np.full((8, 8), 255, np.uint8))[2].numpy())) == {1.0}
    _, empty = training_item(np.zeros((20, 30, 3), np.uint8), None, 16, 5)
    assert all(float(m.sum()) == 0 for m in empty)


def test_training_item_window_keeps_pixels_unresampled() -> None:
    img = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    mask = np.zeros((40, 48), bool)
    mask[10:18, 20:36] = True
    image, masks = training_item(img, mask, 16, 0, corner=(6, 20))
    np.testing.assert_array_equal((image.permute(1, 2, 0).numpy() * 255).round(), img[6:22, 20:36])
    assert masks[0].numpy().astype(bool).tolist() == mask[6:22, 20:36].tolist()


def test_random_crop_batches_are_seeded_windows(tiny: PSCCNet) -> None:
    crop = tiny.config.crop_size
    train = MemoryDataset(4, 0, "train", shape=(crop + 9, crop + 5))
    recipe = PSCCRecipe(random_crop=True)
    first = torch.cat([b[0] for b in batches(tiny, train, 3, 0, recipe, 2)])
    again = torch.cat([b[0] for b in batches(tiny, train, 3, 0, recipe, 2)])
    assert first.shape == (4, 3, crop, crop) and torch.equal(first, again)
    # each window is a dihedral transform of an unresampled crop² piece of a training image, i.e.
    # a piece of a dihedral transform of that image
    views = [np.lib.stride_tricks.sliding_window_view(dihedral(s.image, k), (crop, crop, 3))
             for s in train.samples if s.image is not None for k in range(8)]
    for one in first:
        window = (one.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        assert any((v == window).all(axis=(-3, -2, -1)).any() for v in views)


def test_balanced_bce_matches_hand_computation() -> None:
    pred = torch.tensor([[0.9, 0.2], [0.4, 0.7]])
    target = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    bce = -np.log([[0.9, 0.8], [0.6, 0.3]])
    weights = np.array([[0.5 / 0.25, 0.5 / 0.75], [0.5 / 0.75, 0.5 / 0.75]])
    assert float(balanced_bce(pred, target)) == pytest.approx((bce * weights).mean(), rel=1e-5)
    assert float(balanced_bce(pred, torch.zeros(2, 2))) == pytest.approx(-np.log([0.1, 0.8, 0.6, 0.3]).mean(), rel=1e-5)


def test_class_weights_and_lr_schedule() -> None:
    official = class_weights(PSCCRecipe(class_ratios=(0.25, 0.75)), None, 2)
    assert official.tolist() == pytest.approx([4.0, 4 / 3])
    sid = class_weights(PSCCRecipe(), type("D", (), {"label_space": LabelSpace.TERNARY})(), 2)
    assert sid.tolist() == pytest.approx([3.0, 1.5])
    assert [lr_at(PSCCRecipe(), e, 25, None) for e in (0, 4, 5, 12, 24)] == [2e-4, 2e-4, 1e-4, 5e-5, 1.25e-5]
    assert lr_at(PSCCRecipe(), 0, 2, 1e-3) == pytest.approx(1e-3)


# ---------------------------------------------------------------------- training loop
class MemoryDataset(Dataset):
    """Synthetic SID-Set-like split: real (smooth), fully synthetic (noise), tampered (noisy box + mask)."""

    name = "memory"
    label_space = LabelSpace.TERNARY

    def __init__(self, n: int, seed: int, split: str, shape: tuple[int, int] = (40, 48)) -> None:
        super().__init__(root=".", split=split)
        rng = np.random.default_rng(seed)
        self.samples = []
        for i in range(n):
            label = i % 3
            img = (rng.random((*shape, 3)) * 40 + 100).astype(np.uint8)
            mask = None
            if label == 1:
                img = rng.integers(0, 256, img.shape, dtype=np.uint8)
            elif label == 2:
                mask = np.zeros(shape, bool)
                y, x = rng.integers(0, 20), rng.integers(0, 24)
                mask[y:y + 16, x:x + 20] = True
                img[mask] = rng.integers(0, 256, (int(mask.sum()), 3), dtype=np.uint8)
            self.samples.append(Sample(f"{split}/{i}", img, label, mask))
        self.samples.append(Sample(f"{split}/broken", None, 0, error="cannot decode"))

    def __len__(self) -> int:
        return len(self.samples)

    def iter_samples(self, shard: int = 0, num_shards: int = 1, skip_ids: Set[str] = frozenset()) -> Iterator[Sample]:
        for i, s in enumerate(self.samples):
            if i % num_shards == shard and s.id not in skip_ids:
                yield s


def test_training_decreases_loss_and_saves_best(tiny: PSCCNet, tmp_path: Path) -> None:
    train, val = MemoryDataset(12, 0, "train"), MemoryDataset(3, 1, "validation")
    report = tiny.fit(train, val, TrainOptions(out_dir=tmp_path, epochs=3, batch_size=4, lr=1e-3))
    losses = [h["train_loss"] for h in report["history"]]
    assert report["steps"] == 9 and report["skipped_samples"] == 3
    assert losses[-1] < losses[0]
    assert report["class_weights"] == pytest.approx([3.0, 1.5])
    best = create_model("pscc_net:tiny", weights=tmp_path / "best")
    assert best.weights_format == "safetensors"
    with pytest.raises(UserError, match="--resume"):
        tiny.fit(train, val, TrainOptions(out_dir=tmp_path, epochs=1))
    with pytest.raises(UserError, match="test split"):
        tiny.fit(train, MemoryDataset(3, 1, "test"), TrainOptions(out_dir=tmp_path / "x", epochs=1))


def test_recipe_step_budget_and_batched_validation(tiny: PSCCNet, tmp_path: Path) -> None:
    train, val = MemoryDataset(12, 0, "train"), MemoryDataset(5, 1, "validation")
    report = train_pscc(tiny, train, val, TrainOptions(out_dir=tmp_path), PSCCRecipe(epochs=4, batch_size=4, max_steps=2))
    assert report["steps"] == 2 and report["stopped"] == "max_steps"
    one_by_one, batched = validate(tiny, val, 1), validate(tiny, val, 32)
    assert one_by_one == pytest.approx(batched, abs=1e-6)
    assert PSCCNet.configs["tiny"].crop_size < 96 and RECIPES["tiny"].random_crop
    assert "default" not in RECIPES and "max1024" not in RECIPES  # official recipe for the official network


def test_official_conv_init_and_tiny_default_init(default_model: PSCCNet, tiny: PSCCNet) -> None:
    official = default_model.net.backbone.stage2[0].branches[1][0].conv1.weight.detach()  # 36·36·9 draws
    assert float(official.std()) == pytest.approx(0.001, rel=0.05)
    tiny_w = tiny.net.backbone.conv2.weight.detach()  # PyTorch default: kaiming-uniform, bound 1/sqrt(fan_in)
    assert float(tiny_w.abs().max()) <= 1 / np.sqrt(8 * 9) and float(tiny_w.std()) > 0.05


def test_resume_mid_epoch_equals_uninterrupted_run(tmp_path: Path) -> None:
    train, val = MemoryDataset(9, 0, "train"), MemoryDataset(3, 1, "validation")

    def run(out: Path, steps: int, resume: bool = False) -> PSCCNet:
        torch.manual_seed(0)
        model = create_model("pscc_net:tiny")
        model.fit(train, val, TrainOptions(out_dir=out, epochs=2, batch_size=2, max_steps=steps, resume=resume, seed=5))
        return model

    full = run(tmp_path / "full", 6)
    run(tmp_path / "split", 2)
    resumed = run(tmp_path / "split", 6, resume=True)
    for k, v in full.net.state_dict().items():
        assert torch.equal(v, resumed.net.state_dict()[k]), k


# ---------------------------------------------------------------------- CLI end to end
@pytest.fixture(scope="module")
def sid_mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.sidmini import SMALL_PER_CLASS, SMALL_SIZE, build_sid_mini

    return build_sid_mini(tmp_path_factory.mktemp("sidmini"), per_class=SMALL_PER_CLASS, size=SMALL_SIZE)


def test_cli_run_detection_and_localization_end_to_end(tmp_path: Path, sid_mini_root: Path) -> None:
    from bench.cli import main

    for protocol in ("sid_mini_detection", "sid_mini_localization"):
        out = tmp_path / protocol
        args = ["run", protocol, "--model", "pscc_net:tiny", "--data-root", f"sid_mini={sid_mini_root}",
                "--out", str(out)]
        assert main(args) == 0
        entry = json.loads((out / "results.json").read_text())["entries"][0]
        assert entry["n"] == 18 and entry["n_errors"] == 0
    values = entry["metrics"]["localization"]["values"]
    assert 0.0 <= values["pixel_auc"]["value"] <= 1.0 and values["n_images"]["value"] == 6


def test_cli_train_then_predict_with_the_best_checkpoint(tmp_path: Path, sid_mini_root: Path) -> None:
    from bench.cli import main

    out = tmp_path / "train"
    args = ["train", "--model", "pscc_net:tiny", "--dataset", "sid_mini", "--root", str(sid_mini_root),
            "--out", str(out), "--max-steps", "2", "--batch-size", "4"]
    assert main(args) == 0
    assert json.loads((out / "best" / "config.json").read_text())["model"] == "pscc_net"
    model = create_model("pscc_net:tiny", weights=out / "best")
    assert model.predict(images())[0].probs.sum() == pytest.approx(1.0)
