"""LNP: CycleISP DenoiseNet layout, the noise image of test_sidd_rgb.py (clamp, img_as_ubyte, the
uint8 ×255 wrap, cv2's channel order), the official 5-channel FFT classifier and the
AIGCDetectBenchmark 3-channel one, each loading its own layout."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from skimage import img_as_ubyte
from torchvision import transforms

from baselines.lnp import DENOISER_FILE, LNP, encode_like_official
from bench.errors import UserError
from bench.plugins import create_model

torch.set_num_threads(1)
IMAGENET = dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])


# ---------------------------------------------------------------------- the official layouts, from their rules
def denoiser_layout(num_rrg=4, num_dab=8, c=64, reduction=16) -> dict[str, tuple[int, ...]]:
    """Key → shape of CycleISP's DenoiseNet state dict (the shared PReLU appears under every use)."""
    keys = {"head.0.weight": (c, 3, 3, 3), "head.0.bias": (c,)}
    for r in range(num_rrg):
        for d in range(num_dab):
            p = f"body.{r}.body.{d}."
            keys.update({p + "body.0.weight": (c, c, 3, 3), p + "body.0.bias": (c,), p + "body.1.weight": (c,),
                         p + "body.2.weight": (c, c, 3, 3), p + "body.2.bias": (c,),
                         p + "SA.spatial.conv.weight": (1, 2, 3, 3),
                         p + "CA.conv_du.0.weight": (c // reduction, c, 1, 1),
                         p + "CA.conv_du.0.bias": (c // reduction,),
                         p + "CA.conv_du.2.weight": (c, c // reduction, 1, 1), p + "CA.conv_du.2.bias": (c,),
                         p + "conv1x1.weight": (c, 2 * c, 1, 1), p + "conv1x1.bias": (c,)})
        keys[f"body.{r}.body.{num_dab}.weight"], keys[f"body.{r}.body.{num_dab}.bias"] = (c, c, 3, 3), (c,)
    keys[f"body.{num_rrg}.weight"], keys[f"body.{num_rrg}.bias"] = (c, c, 3, 3), (c,)
    keys[f"body.{num_rrg + 1}.weight"] = (c,)
    keys["tail.0.weight"], keys["tail.0.bias"] = (3, c, 3, 3), (3,)
    return keys


def random_denoiser_state(layout, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    prelu = torch.rand(next(v for k, v in layout.items() if k.endswith("body.1.weight")), generator=g) * 0.5
    state = {}
    for key, shape in layout.items():
        if len(shape) == 1 and (key.endswith("body.1.weight") or key == f"body.{_num_rrg(layout) + 1}.weight"):
            state[key] = prelu.clone()  # one shared PReLU
        elif key.endswith("bias"):
            state[key] = torch.randn(shape, generator=g) * 0.05
        else:
            fan_in = int(np.prod(shape[1:]))
            state[key] = torch.randn(shape, generator=g) / np.sqrt(fan_in)
    return {"module." + k: v for k, v in state.items()}  # saved from nn.DataParallel


def _num_rrg(layout) -> int:
    return max(int(k.split(".")[1]) for k in layout if k.startswith("body.")) - 1


def random_resnet_state(channels: int, layers, width: int, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = _reference_resnet(channels, layers, width)
    g = torch.Generator().manual_seed(seed + 1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net.state_dict()


def _reference_resnet(channels: int, layers, width: int) -> torch.nn.Module:
    """torchvision's ResNet-50 (conv1 widened to ``channels``, as resnet.py); narrow ones from baselines.common."""
    if width == 64 and tuple(layers) == (3, 4, 6, 3):
        net = torchvision.models.resnet50(weights=None, num_classes=1)
        net.conv1 = torch.nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        return net
    from baselines.common import BottleneckResNet

    return BottleneckResNet(tuple(layers), 1, width, in_channels=channels)


# ---------------------------------------------------------------------- independent official forward
def official_denoiser(state: dict[str, torch.Tensor], x: torch.Tensor, num_rrg: int, num_dab: int) -> torch.Tensor:
    """LNP's denoising_rgb.py DenoiseNet (forward returns -x), functional from the state dict."""
    s = {k.removeprefix("module."): v for k, v in state.items()}

    def conv(p, h, pad=1):
        return F.conv2d(h, s[p + ".weight"], s.get(p + ".bias"), padding=pad)

    prelu = s[f"body.{num_rrg + 1}.weight"]
    h = conv("head.0", x)
    for r in range(num_rrg):
        rrg_in = h
        for d in range(num_dab):
            p = f"body.{r}.body.{d}."
            res = conv(p + "body.2", F.prelu(conv(p + "body.0", h), prelu))
            pooled = torch.cat((torch.max(res, 1)[0].unsqueeze(1), torch.mean(res, 1).unsqueeze(1)), dim=1)
            sa = res * torch.sigmoid(F.conv2d(pooled, s[p + "SA.spatial.conv.weight"], padding=1))
            squeezed = torch.relu(conv(p + "CA.conv_du.0", F.adaptive_avg_pool2d(res, 1), 0))
            y = torch.sigmoid(conv(p + "CA.conv_du.2", squeezed, 0))
            h = conv(p + "conv1x1", torch.cat([sa, res * y], dim=1), 0) + h
        h = conv(f"body.{r}.body.{num_dab}", h) + rrg_in
    h = F.prelu(conv(f"body.{num_rrg}", h), prelu)
    return -conv("tail.0", h)


def official_noise_png(state, image: np.ndarray, num_rrg: int, num_dab: int) -> np.ndarray:
    """test_sidd_rgb.py: RGB/255 → model → clamp → img_as_ubyte → cv2.imwrite(x * 255) → read with PIL."""
    noisy = torch.from_numpy(np.float32(image.astype(np.float32) / 255.0)).permute(2, 0, 1)[None]
    with torch.no_grad():
        restored = torch.clamp(official_denoiser(state, noisy, num_rrg, num_dab), 0, 1)
    denoised = img_as_ubyte(restored.permute(0, 2, 3, 1).cpu().detach().numpy()[0])
    ok, buf = cv2.imencode(".png", denoised * 255)
    assert ok
    return np.asarray(Image.open(io.BytesIO(buf.tobytes())).convert("RGB"))


def official_fftshift2d(t: torch.Tensor) -> torch.Tensor:
    b, c, h, w = t.shape
    fs11 = t[:, :, -h // 2:h, -w // 2:w]
    fs12 = t[:, :, -h // 2:h, 0:w // 2]
    fs21 = t[:, :, 0:h // 2, -w // 2:w]
    fs22 = t[:, :, 0:h // 2, 0:w // 2]
    return torch.cat([torch.cat([fs11, fs21], axis=2), torch.cat([fs12, fs22], axis=2)], axis=3)


def official_five_channel(x: torch.Tensor) -> torch.Tensor:
    """resnet.py's forward up to conv1: the input, amplitude and phase."""
    x_fft = torch.fft.fftn(x, dim=(2, 3), norm="ortho")
    phase = official_fftshift2d(torch.atan2(x_fft.imag + 1e-8, x_fft.real + 1e-8))
    phase_1 = 0.11 * phase[:, 0, :, :] + 0.59 * phase[:, 1, :, :] + 0.3 * phase[:, 2, :, :]
    amplitude = official_fftshift2d(torch.pow(torch.abs(x_fft) + 1e-8, 0.8))
    amplitude_1 = 0.11 * amplitude[:, 0, :, :] + 0.59 * amplitude[:, 1, :, :] + 0.3 * amplitude[:, 2, :, :]
    return torch.cat((torch.cat((x, amplitude_1.unsqueeze(1)), dim=1), phase_1.unsqueeze(1)), dim=1)


def official_logits(clf_state, png: np.ndarray, cfg) -> torch.Tensor:
    aigc = cfg.layout == "aigcdetect"
    steps = [transforms.Resize(256), transforms.CenterCrop(224)] if aigc else (
        [transforms.CenterCrop(cfg.crop)] if cfg.crop else [])
    tf = transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(**IMAGENET)])
    x = tf(Image.fromarray(png))[None]
    net = _reference_resnet(3 if aigc else 5, cfg.layers, cfg.width)
    net.load_state_dict(clf_state)
    with torch.no_grad():
        return net.eval()(x if aigc else official_five_channel(x))


# ---------------------------------------------------------------------- helpers
PARITY = dict(num_rrg=2, num_dab=2, channels=16, reduction=4, layers=(1, 1, 1, 1), width=16, crop=224)


@pytest.fixture
def parity_configs(monkeypatch):
    monkeypatch.setitem(LNP.configs, "parity", replace(LNP.configs["tiny"], **PARITY))
    monkeypatch.setitem(LNP.configs, "parity_aigc", replace(LNP.configs["tiny"], **PARITY, layout="aigcdetect"))


def _official_files(folder: Path, config: str, seed: int = 0) -> tuple[dict, dict]:
    cfg = LNP.configs[config]
    den = random_denoiser_state(denoiser_layout(cfg.num_rrg, cfg.num_dab, cfg.channels, cfg.reduction), seed)
    clf = random_resnet_state(3 if cfg.layout == "aigcdetect" else 5, cfg.layers, cfg.width, seed + 2)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "state_dict": den, "optimizer": {}}, folder / DENOISER_FILE)
    torch.save({"model": clf, "optimizer": {}, "total_steps": 1}, folder / "LNP.pth")
    return den, clf


def _images(sizes=((97, 131), (13, 20), (230, 241))) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


# ---------------------------------------------------------------------- tests
def test_default_networks_have_the_official_layouts():
    model = create_model("lnp")
    assert {k: tuple(v.shape) for k, v in model.extractor.state_dict().items()} == denoiser_layout()
    assert model.network.conv1.weight.shape == (64, 5, 7, 7) and model.network.fc.weight.shape == (1, 2048)
    assert create_model("lnp:aigcdetect").network.conv1.weight.shape == (64, 3, 7, 7)
    assert not any(p.requires_grad for p in model.extractor.parameters())


def test_noise_image_quirks_match_skimage_and_cv2():
    residual = np.array([[[0.0, 1 / 255, 0.5], [1.0, 0.998, 2.5 / 255]]], np.float32)
    ubyte = img_as_ubyte(residual)
    ok, buf = cv2.imencode(".png", ubyte * 255)
    expected = np.asarray(Image.open(io.BytesIO(buf.tobytes())).convert("RGB"))
    np.testing.assert_array_equal(encode_like_official(ubyte), expected)
    # by hand: v → (256 - v) mod 256, then channels reversed
    np.testing.assert_array_equal(encode_like_official(np.array([[[0, 1, 128]]], np.uint8)), [[[128, 255, 0]]])


@pytest.mark.parametrize("config", ["parity", "parity_aigc"])
def test_forward_matches_the_official_pipeline(tmp_path, parity_configs, config):
    den, clf = _official_files(tmp_path / "w", config)
    model = create_model(f"lnp:{config}", weights=tmp_path / "w")
    cfg = LNP.configs[config]
    for image in _images():
        png = official_noise_png(den, image, cfg.num_rrg, cfg.num_dab)
        np.testing.assert_array_equal(model.extractor_view(image), png)
        expected = official_logits(clf, png, cfg)
        with torch.inference_mode():
            got = model.logits(model.preprocess(image)[None])
        assert float((got - expected).abs().max()) <= 1e-4
        assert model.predict([image])[0].probs[1] == pytest.approx(float(torch.sigmoid(expected[0, 0])), abs=1e-5)


@pytest.mark.slow
def test_full_size_official_files_match_on_an_odd_image(tmp_path):
    """The full DenoiseNet (4 × 8 × 64) and 5-channel ResNet-50; a small odd image keeps it fast."""
    den, clf = _official_files(tmp_path / "w", "default")
    model = create_model("lnp", weights=tmp_path / "w")
    (image,) = _images([(45, 67)])
    png = official_noise_png(den, image, 4, 8)
    np.testing.assert_array_equal(model.extractor_view(image), png)
    with torch.inference_mode():
        got = model.logits(model.preprocess(image)[None])
    assert float((got - official_logits(clf, png, LNP.configs["default"])).abs().max()) <= 1e-4


def test_fft_shift_is_the_official_one_on_odd_sizes():
    from baselines.lnp import fft_channels, official_fftshift

    x = torch.randn(2, 3, 7, 10)
    torch.testing.assert_close(official_fftshift(x), official_fftshift2d(x))
    torch.testing.assert_close(fft_channels(x), official_five_channel(x)[:, 3:])


def test_each_config_refuses_the_other_layout_in_one_line(tmp_path, parity_configs):
    _official_files(tmp_path / "five", "parity")
    _official_files(tmp_path / "three", "parity_aigc")
    with pytest.raises(UserError, match=r"3-channel conv1 .* this file is for lnp:aigcdetect") as err:
        create_model("lnp:parity", weights=tmp_path / "three")
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"5-channel conv1 .* this file is for lnp \(official 5-channel\)"):
        create_model("lnp:parity_aigc", weights=tmp_path / "five")
    raw = tmp_path / "raw.pth"
    torch.save(torch.load(tmp_path / "three" / "LNP.pth", weights_only=True)["model"], raw)
    with pytest.raises(UserError, match=r"expected a checkpoint with key 'model'"):
        create_model("lnp:parity_aigc", weights=raw, denoiser=tmp_path / "three" / DENOISER_FILE)


def test_wrong_denoiser_files_are_refused(tmp_path, parity_configs):
    _official_files(tmp_path / "w", "parity")
    clf = tmp_path / "w" / "LNP.pth"
    with pytest.raises(UserError, match=r"needs its denoiser file \(sidd_rgb.pth\)"):
        create_model("lnp:parity", weights=clf)
    with pytest.raises(UserError, match=r"expected a checkpoint with key 'state_dict'"):
        create_model("lnp:parity", weights=clf, denoiser=clf)
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, foreign)
    with pytest.raises(UserError, match=r"not a CycleISP DenoiseNet checkpoint \(expected \{'state_dict': "
                                         r"\{head.0.weight, .*found \['conv.weight'\]\)"):
        create_model("lnp:parity", weights=clf, denoiser=foreign)
    other = tmp_path / "other.pth"
    torch.save({"state_dict": random_denoiser_state(denoiser_layout(1, 1, 16, 4), 0)}, other)
    with pytest.raises(UserError, match=r"missing keys: body.0.body.1.*Expected the lnp:parity layout; see "
                                         r"docs/baselines.md#lnp"):
        create_model("lnp:parity", weights=clf, denoiser=other)


def test_our_checkpoint_round_trip_and_cli_predict(tmp_path, parity_configs):
    from bench.checkpoint import save_checkpoint
    from bench.cli import main

    _official_files(tmp_path / "w", "parity_aigc")
    image = _images([(61, 53)])[0]
    Image.fromarray(image).save(tmp_path / "img.png")
    model = create_model("lnp:parity_aigc", weights=tmp_path / "w")
    expected = model.predict([image])[0].probs
    for weights in (["--weights", str(tmp_path / "w")],
                    ["--weights", str(tmp_path / "w" / "LNP.pth"),
                     "--option", f"denoiser={tmp_path / 'w' / DENOISER_FILE}"]):
        out = tmp_path / f"out{len(weights)}"
        args = ["predict", "--model", "lnp:parity_aigc", *weights, "--out", str(out), str(tmp_path / "img.png")]
        assert main(args) == 0
        probs = json.loads((out / "img.json").read_text())["probabilities"]
        assert list(probs.values()) == pytest.approx(list(expected), abs=1e-6)
    save_checkpoint(tmp_path / "ours", model.state_for_checkpoint(), model.checkpoint_config())
    again = create_model("lnp:parity_aigc", weights=tmp_path / "ours")
    np.testing.assert_allclose(again.predict([image])[0].probs, expected, atol=1e-7)
    tiny = create_model("lnp:tiny", num_classes=3)
    save_checkpoint(tmp_path / "tiny", tiny.state_for_checkpoint(), tiny.checkpoint_config())
    back = create_model("lnp:tiny", num_classes=3, weights=tmp_path / "tiny")
    np.testing.assert_allclose(back.predict([image])[0].probs, tiny.predict([image])[0].probs, atol=1e-7)


@pytest.fixture(scope="module")
def sid_mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.sidmini import SMALL_PER_CLASS, SMALL_SIZE, build_sid_mini

    return build_sid_mini(tmp_path_factory.mktemp("sidmini"), per_class=SMALL_PER_CLASS, size=SMALL_SIZE)


@pytest.mark.parametrize("protocol", ["sid_mini_detection", "dmimage_mini_cross", "sid_mini_robustness"])
def test_tiny_runs_the_bundled_protocols(tmp_path, sid_mini_root, protocol):
    from bench.cli import main

    out = tmp_path / protocol
    dataset = "dmimage_mini" if protocol.startswith("dmimage") else "sid_mini"
    assert main(["run", protocol, "--model", "lnp:tiny", "--data-root", f"{dataset}={sid_mini_root}",
                 "--limit", "6", "--out", str(out)]) == 0
    entries = json.loads((out / "results.json").read_text())["entries"]
    assert entries and all(e["n"] == 6 and e["n_errors"] == 0 for e in entries)
    assert json.loads((out / "results.json").read_text())["model"]["input_policy"]["crop"] is None


def test_training_updates_the_classifier_only_and_resumes(tmp_path):
    from bench.model import TrainOptions
    from bench.plugins import create_dataset
    from tests.test_training import write_sid_layout

    root = write_sid_layout(tmp_path / "sid", per_class=3, size=(40, 44))
    train, val = (create_dataset("sid_set", root=root, split=s) for s in ("train", "validation"))

    def run(out: Path, epochs: int, resume: bool = False) -> LNP:
        model = create_model("lnp:tiny", num_classes=3)
        model.fit(train, val, TrainOptions(out_dir=out, epochs=epochs, batch_size=4, resume=resume, seed=1))
        return model

    start = create_model("lnp:tiny", num_classes=3)
    frozen = {k: v.clone() for k, v in start.extractor.state_dict().items()}
    full = run(tmp_path / "full", 2)
    assert all(torch.equal(v, frozen[k]) for k, v in full.extractor.state_dict().items())
    assert not torch.equal(full.network.fc.weight, start.network.fc.weight)
    run(tmp_path / "split", 1)
    resumed = run(tmp_path / "split", 2, resume=True)
    for k, v in full.network.state_dict().items():
        torch.testing.assert_close(v, resumed.network.state_dict()[k], atol=1e-5, rtol=1e-4)
    best = create_model("lnp:tiny", num_classes=3, weights=tmp_path / "full" / "best")
    assert best.predict(_images([(40, 44)]))[0].probs.shape == (3,)
