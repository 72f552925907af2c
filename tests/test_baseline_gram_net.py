"""Gram-Net: an independent re-statement of the official ``resnet18_gram.ResNet`` (pickled as
the official whole-model files are), the official cv2 test policy, the AIGCDetectBenchmark
variant, strict and cross-layout refusals, CLI predict and the tiny configuration end to end."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision import transforms

from bench.errors import UserError
from bench.model import TrainOptions
from bench.plugins import create_dataset, create_model

torch.set_num_threads(1)
IMAGENET = dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])


# ---------------------------------------------------------------------- the official network, re-stated
def _cbr(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class ScaleLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.FloatTensor([1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class ResNet(nn.Module):
    """resnet18_gram.ResNet(BasicBlock, [2, 2, 2, 2]): torchvision's ResNet-18 trunk (no fc), six
    Gram branches, one shared scale, ``fcnewr``; ``head=2`` is the official LogSoftmax head."""

    def __init__(self, head: int = 2) -> None:
        super().__init__()
        tv = torchvision.models.resnet18(weights=None)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"):
            setattr(self, name, getattr(tv, name))
        self.scale = ScaleLayer()
        tail = [nn.Linear(512, 2), nn.LogSoftmax(dim=1)] if head == 2 else [nn.Linear(512, 1)]
        self.fcnewr = nn.Sequential(nn.Linear(704, 512), nn.ReLU(), nn.Dropout(0.5), *tail)
        for name, cin in (("conv_interi_0", 3), ("conv_inter0_0", 64), ("conv_inter1_0", 64),
                          ("conv_inter2_0", 64), ("conv_inter3_0", 128), ("conv_inter4_0", 256)):
            setattr(self, name, _cbr(cin, 32, 1))
        for a, b in (("gi_fc1", "gi_fc2"), ("g0_fc1", "g0_fc2"), ("g_fc1r", "g_fc2r"),
                     ("g2_fc1", "g2_fc2"), ("g3_fc1", "g3_fc2"), ("g4_fc1", "g4_fc2")):
            setattr(self, a, _cbr(1, 16, 2))
            setattr(self, b, _cbr(16, 32, 2))

    @staticmethod
    def gram(x: torch.Tensor) -> torch.Tensor:
        a, b, c, d = x.size()
        f = x.view(a, b, c * d)
        return torch.bmm(f, f.transpose(1, 2)).unsqueeze(1).div(b * c * d)

    def forward(self, x3: torch.Tensor) -> torch.Tensor:
        x4 = self.relu(self.bn1(self.conv1(x3)))
        x5 = self.maxpool(x4)
        x6 = self.layer1(x5)
        x7 = self.layer2(x6)
        x8 = self.layer3(x7)
        x = self.avgpool(self.layer4(x8)).flatten(1)
        feats = [x]
        for inter, a, b, tap in (("conv_interi_0", "gi_fc1", "gi_fc2", x3), ("conv_inter0_0", "g0_fc1", "g0_fc2", x4),
                                 ("conv_inter1_0", "g_fc1r", "g_fc2r", x5), ("conv_inter2_0", "g2_fc1", "g2_fc2", x6),
                                 ("conv_inter3_0", "g3_fc1", "g3_fc2", x7), ("conv_inter4_0", "g4_fc1", "g4_fc2", x8)):
            g = getattr(self, b)(getattr(self, a)(self.gram(getattr(self, inter)(tap))))
            feats.append(self.avgpool(g).flatten(1))
        feats = [feats[0]] + [self.scale(g) for g in feats[1:]]
        return self.fcnewr(torch.cat(feats, 1))


def _official(head: int = 2, seed: int = 0) -> ResNet:
    """Random weights; BN statistics and the first convolutions scaled for raw 0-255 inputs so
    that the log-probabilities stay away from saturation."""
    torch.manual_seed(seed)
    model = ResNet(head)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        if head == 2:
            model.conv1.weight.mul_(1 / 255)
            model.conv_interi_0[0].weight.mul_(1 / 255)
        model.scale.scale.fill_(0.7)
    return model.eval()


def _pickle_whole_model(model: nn.Module, path: Path) -> None:
    """``torch.save(model)`` as the official ``main.py`` does, with the classes living in a module
    named ``resnet18_gram`` that is gone again when the file is read."""
    fake = types.ModuleType("resnet18_gram")
    originals = {}
    for cls in (ResNet, ScaleLayer):
        originals[cls] = (cls.__module__, cls.__qualname__)
        cls.__module__ = "resnet18_gram"
        setattr(fake, cls.__qualname__, cls)
    sys.modules["resnet18_gram"] = fake
    try:
        torch.save(model, path)
    finally:
        del sys.modules["resnet18_gram"]
        for cls, (module, _) in originals.items():
            cls.__module__ = module


def _image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _official_input(path: Path) -> torch.Tensor:
    """demo.py: cv2.imread (BGR), cv2.resize to 512×512, raw values as float."""
    im = cv2.resize(cv2.imread(str(path)), (512, 512))
    ims = np.zeros((1, 3, 512, 512))
    for c in range(3):
        ims[0, c] = im[:, :, c]
    return torch.tensor(ims).float()


@pytest.fixture(scope="module")
def official_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("gram")
    model = _official(2)
    _pickle_whole_model(model, folder / "stylegan-ffhq.pth")
    torch.save(model.state_dict(), folder / "stylegan-ffhq_state.pth")
    aigc = _official(1, seed=3)
    torch.save({"netC": {f"module.{k}": v for k, v in aigc.state_dict().items()}}, folder / "Gram.pth")
    image = _image(333, 251, 5)  # odd sizes: every image is resized to 512×512 first
    Image.fromarray(image).save(folder / "face.png")
    return {"pickled": folder / "stylegan-ffhq.pth", "state": folder / "stylegan-ffhq_state.pth",
            "aigc": folder / "Gram.pth", "image": folder / "face.png", "folder": folder}


# ---------------------------------------------------------------------- parity
def _cli_probs(tmp_path: Path, spec: str, weights: Path, image: Path, *extra: str) -> list[float]:
    """``sida-bench predict``: the [p_real, p_fake] it writes for one image."""
    from bench.cli import main

    out = tmp_path / spec.replace(":", "_")
    assert main(["predict", "--model", spec, "--weights", str(weights), *extra, str(image), "--out", str(out)]) == 0
    record = json.loads((out / f"{image.stem}.json").read_text())
    return [record["probabilities"]["real"], record["probabilities"]["fake"]]


@pytest.mark.slow
def test_pickled_official_model_needs_allow_pickle_and_matches_the_official_forward(official_files, tmp_path):
    with pytest.raises(UserError, match="--allow-pickle") as err:
        create_model("gram_net", weights=official_files["pickled"])
    assert "\n" not in str(err.value)
    assert "resnet18_gram" not in sys.modules
    model = create_model("gram_net", weights=official_files["pickled"], allow_pickle=True)

    image = np.asarray(Image.open(official_files["image"]).convert("RGB"))
    ref_in = _official_input(official_files["image"])
    ours_in = model.preprocess(image)[None]
    torch.testing.assert_close(ours_in, ref_in, atol=0, rtol=0)
    reference = _official(2)
    with torch.inference_mode():
        expected = reference(ref_in)  # log-probabilities, index 0 = fake
        ours = model.network.head_output(ours_in)
        probs = model.forward(ours_in).probs[0].numpy()
    assert float((ours - expected).abs().max()) <= 1e-4
    assert 0.05 < float(expected[0, 0].exp()) < 0.95  # not saturated: the check is meaningful
    official_probs = [float(expected[0, 1].exp()), float(expected[0, 0].exp())]  # [p_real, p_fake]
    np.testing.assert_allclose(probs, official_probs, atol=1e-5)

    # the same through the CLI, and the extracted state dict is the same network
    cli = _cli_probs(tmp_path, "gram_net", official_files["pickled"], official_files["image"], "--allow-pickle")
    np.testing.assert_allclose(cli, official_probs, atol=1e-5)
    from_state = create_model("gram_net", weights=official_files["state"]).network.state_dict()
    for k, v in model.network.state_dict().items():
        assert torch.equal(v, from_state[k]), k


def test_aigc_variant_matches_its_official_forward_on_odd_sizes(official_files, tmp_path):
    model = create_model("gram_net:aigc", weights=official_files["aigc"])
    reference = _official(1, seed=3)
    images = [_image(301, 257, 1), _image(97, 131, 2), _image(15, 9, 3)]
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                             transforms.Normalize(**IMAGENET)])
    with torch.inference_mode():
        for image in images:
            ref_in = tf(Image.fromarray(image))[None]
            ours_in = model.preprocess(image)[None]
            torch.testing.assert_close(ours_in, ref_in, atol=1e-6, rtol=0)
            expected = reference(ref_in)
            assert float((model.logits(ours_in) - expected).abs().max()) <= 1e-4
            p_fake = model.predict([image])[0].probs[1]
            assert p_fake == pytest.approx(float(torch.sigmoid(expected[0, 0])), abs=1e-5)
        expected = torch.sigmoid(reference(tf(Image.open(official_files["image"]).convert("RGB"))[None]))[0, 0]
    cli = _cli_probs(tmp_path, "gram_net:aigc", official_files["aigc"], official_files["image"])
    np.testing.assert_allclose(cli, [1 - float(expected), float(expected)], atol=1e-5)


def test_empty_image_is_a_clear_error():
    with pytest.raises(ValueError, match="non-empty"):
        create_model("gram_net:tiny").preprocess(np.zeros((0, 5, 3), np.uint8))


def test_gram_matrix_is_the_official_normalised_product():
    from baselines.gram_net import gram_matrix

    x = torch.randn(2, 5, 7, 3)
    f = x.reshape(2, 5, 21)
    expected = torch.einsum("bik,bjk->bij", f, f)[:, None] / (5 * 21)
    torch.testing.assert_close(gram_matrix(x), expected)


# ---------------------------------------------------------------------- refusals
def test_the_two_heads_refuse_each_others_files(official_files):
    with pytest.raises(UserError, match=r"AIGCDetectBenchmark Gram checkpoint.*use gram_net:aigc") as err:
        create_model("gram_net", weights=official_files["aigc"])
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"official Gram-Net checkpoint.*use gram_net \(default\)") as err:
        create_model("gram_net:aigc", weights=official_files["state"])
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="official Gram-Net checkpoint"):
        create_model("gram_net:aigc", weights=official_files["pickled"], allow_pickle=True)


def test_imagenet_resnet18_is_the_training_start_point(tmp_path):
    torch.manual_seed(0)
    imagenet = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-5c106cde.pth"
    torch.save(imagenet.state_dict(), path)
    model = create_model("gram_net", weights=path)
    torch.testing.assert_close(model.network.layer4[1].conv2.weight, imagenet.layer4[1].conv2.weight)
    with pytest.raises(UserError, match="shape mismatches: bn1.bias"):  # the tiny trunk is narrower
        create_model("gram_net:tiny", weights=path)


def test_wrong_layout_is_refused_with_the_expected_layout(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None, num_classes=1).state_dict(), path)
    with pytest.raises(UserError, match=r"not a Gram-Net checkpoint.*docs/baselines.md#gram-net") as err:
        create_model("gram_net:tiny", weights=path)
    assert "\n" not in str(err.value)
    torch.save({"netC": {"a": 1}}, path)
    with pytest.raises(UserError, match=r"expected a state dict.*docs/baselines.md#gram-net"):
        create_model("gram_net:tiny", weights=path)
    state = create_model("gram_net:tiny").network.state_dict()
    state.pop("g_fc1r.0.weight")
    torch.save(state, path)
    with pytest.raises(UserError, match=r"missing keys: g_fc1r\.0\.weight.*Expected the official") as err:
        create_model("gram_net:tiny", weights=path)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------- tiny end to end
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
        assert main(["run", protocol, "--model", "gram_net:tiny", "--data-root", f"{dataset}={sid_mini_root}",
                     "--limit", "6", "--out", str(out)]) == 0
        entries = json.loads((out / "results.json").read_text())["entries"]
        assert entries and all(e["n_errors"] == 0 and e["n"] > 0 for e in entries)


def test_tiny_training_follows_the_official_augmentation_and_resumes(sid_mini_root, tmp_path):
    model = create_model("gram_net:tiny")
    rng = np.random.default_rng(0)
    item = model.train_item(_image(40, 50, 1), model.config.train, rng)
    assert tuple(item.shape) == (3, 96, 96) and float(item.max()) > 1.0  # raw 0-255 BGR, 96×96

    train = create_dataset("sid_mini", root=sid_mini_root, split="train")
    val = create_dataset("sid_mini", root=sid_mini_root, split="validation")

    def run(out: Path, epochs: int, resume: bool = False):
        m = create_model("gram_net:tiny")
        report = m.fit(train, val, TrainOptions(out_dir=out, epochs=epochs, batch_size=4, resume=resume, seed=3))
        return m, report

    full, report = run(tmp_path / "full", 2)  # dropout in fcnewr: resuming must replay its randomness too
    assert report["steps"] == 10 and (tmp_path / "full" / "best" / "model.safetensors").is_file()
    run(tmp_path / "split", 1)
    resumed, _ = run(tmp_path / "split", 2, resume=True)
    for k, v in full.network.state_dict().items():
        torch.testing.assert_close(v, resumed.network.state_dict()[k], msg=k)
    again = create_model("gram_net:tiny", weights=tmp_path / "full" / "best")
    assert again.predict([_image(32, 32, 2)])[0].probs.shape == (2,)
