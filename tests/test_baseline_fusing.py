"""Fusing (Patch5Model): an independent re-statement of the official forward (COOI patch
selection, SA layers) against ours on odd sizes, the official ``['model']`` layout, strict
refusals, CLI predict, training hooks and the tiny configuration end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn
from torchvision import transforms

from baselines.fusing import PatchSpec, select_patches
from bench.errors import UserError
from bench.model import TrainOptions
from bench.plugins import create_dataset, create_model

torch.set_num_threads(1)
IMAGENET = dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])


# ---------------------------------------------------------------------- the official forward, re-stated
def official_coordinates(fm: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """COOI.get_coordinates: (B, 6, 4) boxes (top, left, bottom, right)."""
    b, _, fh, fw = fm.size()
    smin = torch.min(scale, axis=1, keepdim=True)[0].long()
    sbase = (scale - smin).long() // 2
    out = []
    for k, (ph, pw) in zip((2, 1), ((224, 224), (112, 112))):  # filters 3×3 / 2×2
        s = torch.sum(F.avg_pool2d(fm, [k + 1, k + 1], stride=1), dim=1, keepdim=True)
        _, _, sh, sw = s.size()
        for _ in range(3):
            vmax, flat = torch.max(s.view(b, -1), dim=1)
            loc = torch.stack((flat // sw, flat % sw), dim=1)
            top = F.max_pool2d(s, [3, 3], stride=1, padding=[1, 1])
            s = s * (top != vmax.view(-1, 1, 1, 1)).float()
            rate = torch.stack(((2 * loc[:, 0] + fh - sh + 1) / (2 * fh), (2 * loc[:, 1] + fw - sw + 1) / (2 * fw)), 1)
            c = (sbase + smin * rate).long()
            tl = torch.stack((c[:, 0] - ph // 2, c[:, 1] - pw // 2), 1)
            br = torch.stack((c[:, 0] + ph // 2 + ph % 2, c[:, 1] + pw // 2 + pw % 2), 1)
            below = tl.detach().clone()
            below[below > 0] = 0
            br -= below
            tl -= below
            over = br - scale.long()
            over[over < 0] = 0
            tl -= over
            br -= over
            tl[tl < 0] = 0
            out.append(torch.cat((tl, br), dim=1))
    return torch.stack(out, dim=1)


class SA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(128, 4)
        self.ln1, self.fc1, self.ac, self.fc2, self.ln2 = (nn.LayerNorm(128), nn.Linear(128, 128), nn.ReLU(),
                                                           nn.Linear(128, 128), nn.LayerNorm(128))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        x = torch.transpose(x, 1, 0)
        x = self.ln1(x + self.mha(x, x, x)[0])
        x = torch.transpose(x, 1, 0).reshape(b * n, d)
        x = x + self.fc2(self.ac(self.fc1(x)))
        return self.ln2(x.reshape(b, n, d))


class OfficialPatch5(nn.Module):
    """Patch5Model: torchvision ResNet-50 as ``resnet`` (fm, embedding), fc1, 3 SA layers, fc."""

    def __init__(self) -> None:
        super().__init__()
        self.resnet = torchvision.models.resnet50(weights=None)
        self.mha_list = nn.Sequential(SA(), SA(), SA())
        self.fc1, self.ac, self.fc = nn.Linear(2048, 128), nn.ReLU(), nn.Linear(128, 1)

    def backbone(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.resnet
        x = r.layer4(r.layer3(r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x))))))))
        return x, r.avgpool(x).view(x.size(0), -1)

    def forward(self, input_img: list[torch.Tensor], cropped_img: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        bs = cropped_img.shape[0]
        fm, whole = self.backbone(cropped_img)
        whole = self.ac(self.fc1(whole)).view(-1, 1, 128)
        loc = official_coordinates(fm.detach(), scale)
        windows = torch.zeros([bs, loc.size(1), 3, 224, 224])
        for i in range(bs):
            for j in range(loc.size(1)):
                t, l, b, r = loc[i, j]
                patch = input_img[i][:, t:b, l:r]
                if patch.shape[1] == 224 and patch.shape[2] == 224:
                    windows[i, j] = patch
                else:
                    windows[i, j:j + 1] = F.interpolate(patch[None], size=(224, 224), mode="bilinear",
                                                        align_corners=True)
        _, local = self.backbone(windows.reshape(bs * loc.size(1), 3, 224, 224))
        local = self.ac(self.fc1(local)).view(-1, loc.size(1), 128)
        return self.fc(self.mha_list(torch.cat((local, whole), 1))[:, -1])


def _official_model(seed: int = 0) -> OfficialPatch5:
    torch.manual_seed(seed)
    model = OfficialPatch5()
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _official_inputs(image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """data/dataset_train.py read_data (test): full image and Resize(224)+CenterCrop(224), ImageNet."""
    pil = Image.fromarray(image)
    norm = transforms.Normalize(**IMAGENET)
    full = norm(transforms.ToTensor()(pil))
    crop = norm(transforms.ToTensor()(transforms.CenterCrop(224)(transforms.Resize(224)(pil))))
    return full, crop, torch.tensor([pil.height, pil.width])


def _image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def official_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fusing") / "model_epoch_best.pth"
    state = {f"module.{k}": v for k, v in _official_model().state_dict().items()}  # trained with DataParallel
    torch.save({"model": state, "optimizer": {}, "total_steps": 7}, path)
    return path


# ---------------------------------------------------------------------- parity
def test_patch_selection_matches_the_official_coordinates_on_odd_and_tiny_sizes():
    g = torch.Generator().manual_seed(0)
    for h, w in [(1024, 768), (301, 257), (97, 131), (15, 400), (224, 224), (7, 5), (113, 1000)]:
        fm = torch.rand(3, 16, 7, 7, generator=g)
        scale = torch.tensor([[h, w]] * 3)
        ours = select_patches(fm, scale, PatchSpec())
        torch.testing.assert_close(ours, official_coordinates(fm, scale), atol=0, rtol=0)
        assert bool((ours[..., :2] >= 0).all()) and bool((ours[..., 2] <= h).all()) and bool((ours[..., 3] <= w).all())
        big = ours[:, :3]
        assert bool(((big[..., 2] - big[..., 0]) == min(h, 224)).all())
    fm = torch.zeros(1, 4, 7, 7)
    fm[0, :, 1:4, 4:7] = 1.0  # a hot 3×3 block centred on cell (2, 5) of 7 → centre (250, 550) of 700 px
    box = select_patches(fm, torch.tensor([[700, 700]]), PatchSpec())[0, 0].tolist()
    assert box == [250 - 112, 550 - 112, 250 + 112, 550 + 112]


@pytest.mark.slow
def test_official_checkpoint_matches_the_official_forward_on_odd_sizes(official_file):
    model = create_model("fusing", weights=official_file)
    reference = _official_model()
    for image in (_image(301, 257, 1), _image(97, 131, 2)):
        full, crop, scale = _official_inputs(image)
        ours_full, ours_crop = model.preprocess(image)
        torch.testing.assert_close(ours_full, full, atol=1e-6, rtol=0)
        torch.testing.assert_close(ours_crop, crop, atol=1e-6, rtol=0)
        with torch.inference_mode():
            expected = reference([full], crop[None], scale[None])
            ours = model.logits([(ours_full, ours_crop)])
        assert float((ours - expected).abs().max()) <= 1e-4
        p_fake = model.predict([image])[0].probs[1]
        assert p_fake == pytest.approx(float(torch.sigmoid(expected[0, 0])), abs=1e-5)


def test_default_keys_and_shapes_are_the_official_layout():
    ours = {k: tuple(v.shape) for k, v in create_model("fusing").network.state_dict().items()}
    official = {k: tuple(v.shape) for k, v in OfficialPatch5().state_dict().items()}
    assert ours == official
    assert 25.5e6 < sum(int(np.prod(s)) for s in ours.values() if s) < 26.5e6


# ---------------------------------------------------------------------- refusals and start point
def test_wrong_layout_is_refused_with_one_line(tmp_path):
    path = tmp_path / "cnnspot.pth"
    torch.save({"model": create_model("cnnspot:tiny").network.state_dict()}, path)
    with pytest.raises(UserError, match=r"does not match Patch5Net.*Expected \{'model': Patch5Model state dict\}"
                                        r".*docs/baselines.md#fusing") as err:
        create_model("fusing:tiny", weights=path)
    assert "\n" not in str(err.value)
    torch.save({"netC": {"a": 1}}, path)
    with pytest.raises(UserError, match=r"expected a state dict.*Patch5Model state dict.*docs/baselines.md#fusing"):
        create_model("fusing:tiny", weights=path)


def test_imagenet_resnet50_is_the_training_start_point(tmp_path):
    torch.manual_seed(0)
    imagenet = torchvision.models.resnet50(weights=None)
    path = tmp_path / "resnet50-19c8e357.pth"
    torch.save(imagenet.state_dict(), path)
    model = create_model("fusing", weights=path)
    torch.testing.assert_close(model.network.resnet.layer4[2].conv3.weight, imagenet.layer4[2].conv3.weight)


# ---------------------------------------------------------------------- CLI and tiny end to end
def test_cli_predict_with_the_official_layout(tmp_path):
    from bench.cli import main

    # a tiny-size file in the official key layout (resnet.*, mha_list.*, fc1, fc under 'model', module. prefix)
    model = create_model("fusing:tiny", init_seed=4)
    path = tmp_path / "Fusing.pth"
    torch.save({"model": {f"module.{k}": v for k, v in model.network.state_dict().items()}}, path)
    image = _image(75, 121, 3)
    Image.fromarray(image).save(tmp_path / "img.png")
    assert main(["predict", "--model", "fusing:tiny", "--weights", str(path), str(tmp_path / "img.png"),
                 "--out", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / "img.json").read_text())
    expected = model.predict([image])[0].probs
    np.testing.assert_allclose([record["probabilities"]["real"], record["probabilities"]["fake"]], expected, atol=1e-6)


def test_degenerate_images_are_per_sample_errors():
    model = create_model("fusing:tiny")
    with pytest.raises(ValueError, match="empty image"):
        model.preprocess(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="would have"):  # the global view would be 96 × 9.6M px
        model.preprocess(np.zeros((1, 100_000, 3), np.uint8))
    assert model.predict([np.zeros((1, 3, 3), np.uint8)])[0].probs.shape == (2,)  # tiny but fine


def test_predictions_do_not_depend_on_the_batch():
    model = create_model("fusing:tiny")
    images = [_image(96, 96, 0), _image(50, 130, 1), _image(96, 96, 2)]
    together = [p.probs for p in model.predict(images)]
    alone = [model.predict([im])[0].probs for im in images]
    np.testing.assert_allclose(together, alone, atol=1e-7)


@pytest.fixture(scope="module")
def sid_mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.sidmini import SMALL_PER_CLASS, SMALL_SIZE, build_sid_mini

    return build_sid_mini(tmp_path_factory.mktemp("sidmini"), per_class=SMALL_PER_CLASS, size=SMALL_SIZE)


def test_tiny_runs_the_three_protocols_end_to_end(sid_mini_root, tmp_path):
    from bench.cli import main

    # --data-root only for the protocol's own dataset (another one is refused as a likely typo)
    for protocol, dataset in (("sid_mini_detection", "sid_mini"), ("dmimage_mini_cross", "dmimage_mini"),
                              ("sid_mini_robustness", "sid_mini")):
        out = tmp_path / protocol
        assert main(["run", protocol, "--model", "fusing:tiny", "--data-root", f"{dataset}={sid_mini_root}",
                     "--limit", "6", "--out", str(out)]) == 0
        entries = json.loads((out / "results.json").read_text())["entries"]
        assert entries and all(e["n_errors"] == 0 and e["n"] > 0 for e in entries)


def test_tiny_training_uses_both_views_and_resumes(sid_mini_root, tmp_path):
    train = create_dataset("sid_mini", root=sid_mini_root, split="train")
    val = create_dataset("sid_mini", root=sid_mini_root, split="validation")

    def run(out: Path, epochs: int, resume: bool = False):
        m = create_model("fusing:tiny", num_classes=3)
        report = m.fit(train, val, TrainOptions(out_dir=out, epochs=epochs, batch_size=4, resume=resume, seed=1))
        return m, report

    full, report = run(tmp_path / "full", 2)
    assert report["steps"] == 10 and report["history"][-1]["val_images"] == 9
    run(tmp_path / "split", 1)
    resumed, _ = run(tmp_path / "split", 2, resume=True)
    for k, v in full.network.state_dict().items():
        torch.testing.assert_close(v, resumed.network.state_dict()[k], msg=k)
    again = create_model("fusing:tiny", num_classes=3, weights=tmp_path / "full" / "best")
    assert again.predict([_image(40, 60, 5)])[0].probs.shape == (3,)
