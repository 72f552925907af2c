"""LGrad: genforce discriminator layout, the gradient PNG of gen_imggrad.py (min-max, cv2's uint8
rounding), the classifier's test policy, both classifier layouts and the two-file loading."""

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
from torchvision import transforms

from baselines.lgrad import DISCRIMINATOR_FILE, LGrad, quantise_like_cv2
from bench.errors import UserError
from bench.plugins import create_model

torch.set_num_threads(1)
IMAGENET = dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])


# ---------------------------------------------------------------------- the official layout, written from its rules
def genforce_layout(resolution: int, fmaps_base: int = 16 << 10, fmaps_max: int = 512) -> dict[str, tuple[int, ...]]:
    """Key → shape of genforce's StyleGANDiscriminator(resolution, label_size=0) state dict."""
    def nf(res: int) -> int:
        return min(fmaps_base // res, fmaps_max)

    keys: dict[str, tuple[int, ...]] = {"lod": ()}
    final = int(np.log2(resolution))
    for block, log2 in enumerate(range(final, 1, -1)):
        res = 2**log2
        keys[f"input{block}.weight"], keys[f"input{block}.bias"] = (nf(res), 3, 1, 1), (nf(res),)
        if res != 4:
            keys[f"layer{2 * block}.weight"], keys[f"layer{2 * block}.bias"] = (nf(res), nf(res), 3, 3), (nf(res),)
            keys[f"layer{2 * block + 1}.weight"] = (nf(res // 2), nf(res), 3, 3)
            keys[f"layer{2 * block + 1}.bias"] = (nf(res // 2),)
            keys[f"layer{2 * block + 1}.blur.kernel"] = (nf(res), 1, 3, 3)
        else:
            keys[f"layer{2 * block}.weight"], keys[f"layer{2 * block}.bias"] = (nf(4), nf(4) + 1, 3, 3), (nf(4),)
            keys[f"layer{2 * block + 1}.weight"], keys[f"layer{2 * block + 1}.bias"] = (nf(2), nf(4) * 16), (nf(2),)
    keys[f"layer{2 * block + 2}.weight"], keys[f"layer{2 * block + 2}.bias"] = (1, nf(2)), (1,)
    return keys


def random_discriminator_state(layout: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    blur = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    state = {}
    for key, shape in layout.items():
        if key == "lod":
            state[key] = torch.zeros(())
        elif key.endswith("blur.kernel"):
            state[key] = blur.expand(shape).clone()
        elif key.endswith("bias"):
            state[key] = torch.randn(shape, generator=g) * 0.1
        else:
            state[key] = torch.randn(shape, generator=g)
    return state


def random_resnet_state(layers, width: int, seed: int) -> dict[str, torch.Tensor]:
    """A CNNDetection-layout ResNet (torchvision keys) with random weights and BN statistics: torchvision's
    ResNet-50 at full size; narrow ones (no torchvision builder) from baselines.common, whose ResNet-50 equals
    torchvision's (tests/test_baseline_cnnspot.py)."""
    torch.manual_seed(seed)
    if width == 64 and tuple(layers) == (3, 4, 6, 3):
        net = torchvision.models.resnet50(weights=None, num_classes=1)
    else:
        from baselines.common import bottleneck_resnet

        net = bottleneck_resnet(tuple(layers), 1, width)
    g = torch.Generator().manual_seed(seed + 1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return net.state_dict()


# ---------------------------------------------------------------------- independent official forward
class _OfficialBlur(torch.autograd.Function):
    """genforce Blur: forward conv2d(kernel), backward conv2d(flipped kernel)."""

    @staticmethod
    def forward(ctx, x, kernel):
        ctx.save_for_backward(kernel)
        return F.conv2d(input=x, weight=kernel, bias=None, stride=1, padding=1, groups=x.shape[1])

    @staticmethod
    def backward(ctx, dy):
        (kernel,) = ctx.saved_tensors
        return F.conv2d(input=dy, weight=kernel.flip((2, 3)), bias=None, stride=1, padding=1, groups=dy.shape[1]), None


def official_discriminator(state: dict[str, torch.Tensor], image: torch.Tensor, resolution: int) -> torch.Tensor:
    """stylegan_discriminator.py's forward at lod 0, written from the state dict."""
    def conv(name, x, *, fused=False, down=False, mbstd=False, kernel=3):
        if mbstd:  # MiniBatchSTDLayer(group_size=4, new_channels=1)
            ng = min(4, x.shape[0])
            y = x.view(ng, -1, 1, x.shape[1], x.shape[2], x.shape[3])
            y = y - torch.mean(y, dim=0, keepdim=True)
            y = torch.sqrt(torch.mean(y ** 2, dim=0) + 1e-8)
            y = torch.mean(torch.mean(y, dim=[2, 3, 4], keepdim=True), dim=2)
            x = torch.cat([x, y.repeat(ng, 1, x.shape[2], x.shape[3])], dim=1)
        if down:
            x = _OfficialBlur.apply(x, state[f"{name}.blur.kernel"])
        w = state[f"{name}.weight"]
        w = w * (np.sqrt(2.0) / np.sqrt(kernel * kernel * w.shape[1]))
        if fused:
            w = F.pad(w, (1, 1, 1, 1, 0, 0, 0, 0), "constant", 0.0)
            w = (w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]) * 0.25
        x = F.conv2d(x, weight=w, bias=state[f"{name}.bias"] * 1.0, stride=2 if fused else 1,
                     padding=1 if (fused or kernel == 3) else 0)
        if down and not fused:
            x = F.avg_pool2d(x, kernel_size=2, stride=2, padding=0)
        return F.leaky_relu(x, 0.2)

    def dense(name, x, gain, act):
        w = state[f"{name}.weight"]
        x = F.linear(x.view(x.shape[0], -1), weight=w * (gain / np.sqrt(w.shape[1])), bias=state[f"{name}.bias"] * 1.0)
        return F.leaky_relu(x, 0.2) if act else x

    x = conv("input0", image, kernel=1)
    final = int(np.log2(resolution))
    for block, log2 in enumerate(range(final, 1, -1)):
        res = 2**log2
        if res != 4:
            x = conv(f"layer{2 * block}", x)
            x = conv(f"layer{2 * block + 1}", x, down=True, fused=res >= 128)
        else:
            x = conv(f"layer{2 * block}", x, mbstd=True)
            x = dense(f"layer{2 * block + 1}", x, np.sqrt(2.0), True)
    return dense(f"layer{2 * block + 2}", x, 1.0, False)


def official_gradient_png(state, image: np.ndarray, resolution: int, bgr_bug: bool = False) -> np.ndarray:
    """gen_imggrad.py (batch 1): Resize, [-1, 1], grad of D(x).sum(), normlize_np, cv2.imwrite(img[..., ::-1]),
    read back with PIL as CNNDetection's ImageFolder does (AIGCDetectBenchmark: no [..., ::-1])."""
    tf = transforms.Compose([transforms.Resize((resolution, resolution)), transforms.ToTensor(),
                             transforms.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])])
    x = tf(Image.fromarray(image).convert("RGB"))[None].to(torch.float32)
    x.requires_grad = True
    pre = official_discriminator(state, x, resolution)
    grad = torch.autograd.grad(pre.sum(), x, create_graph=True, retain_graph=True, allow_unused=False)[0]
    img = grad[0].permute(1, 2, 0).cpu().detach().numpy()
    img -= img.min()
    if img.max() != 0:
        img /= img.max()
    img = img * 255.0
    ok, buf = cv2.imencode(".png", img if bgr_bug else img[..., ::-1])
    assert ok
    return np.asarray(Image.open(io.BytesIO(buf.tobytes())).convert("RGB"))


def reference_classifier(state, layers, width, x: torch.Tensor) -> torch.Tensor:
    if width == 64 and tuple(layers) == (3, 4, 6, 3):
        net = torchvision.models.resnet50(weights=None, num_classes=1)
    else:
        from baselines.common import bottleneck_resnet

        net = bottleneck_resnet(tuple(layers), 1, width)
    net.load_state_dict(state)
    return net.eval()(x)


# ---------------------------------------------------------------------- helpers
PARITY = dict(resolution=256, fmaps_base=512, fmaps_max=8, layers=(1, 1, 1, 1), width=16, dct_gains=None)


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    sizes = [(97, 131), (300, 257), (13, 20)]  # odd, larger than 256, tiny
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def _official_files(folder: Path, config: str, seed: int = 0) -> tuple[dict, dict]:
    """A weights folder in the official layouts of ``config`` (raw or {'model'} classifier)."""
    cfg = LGrad.configs[config]
    disc = random_discriminator_state(genforce_layout(cfg.resolution, cfg.fmaps_base, cfg.fmaps_max), seed)
    clf = random_resnet_state(cfg.layers, cfg.width, seed + 2)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(disc, folder / DISCRIMINATOR_FILE)
    torch.save({"model": clf} if cfg.layout == "aigcdetect" else clf, folder / "LGrad-4class.pth")
    return disc, clf


@pytest.fixture
def parity_configs(monkeypatch):
    """Full-structure discriminators at 256 (fused layers included) with few channels, both layouts."""
    monkeypatch.setitem(LGrad.configs, "parity", replace(LGrad.configs["tiny"], **PARITY))
    monkeypatch.setitem(LGrad.configs, "parity_aigc", replace(LGrad.configs["tiny"], **PARITY, layout="aigcdetect"))


# ---------------------------------------------------------------------- tests
def test_default_discriminator_has_the_genforce_layout():
    model = create_model("lgrad")
    ours = {k: tuple(v.shape) for k, v in model.extractor.state_dict().items()}
    assert ours == genforce_layout(256)
    assert 23.0e6 < sum(p.numel() for p in model.extractor.parameters()) < 23.1e6
    assert not any(p.requires_grad for p in model.extractor.parameters())
    assert model.network.fc.weight.shape == (1, 2048)


@pytest.mark.parametrize("config", ["parity", "parity_aigc"])
def test_forward_matches_the_official_pipeline(tmp_path, parity_configs, config):
    disc, clf = _official_files(tmp_path / "w", config)
    model = create_model(f"lgrad:{config}", weights=tmp_path / "w")
    aigc = config == "parity_aigc"
    images = _images()
    post = (transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)]) if aigc
            else transforms.Lambda(lambda im: im))
    tf = transforms.Compose([post, transforms.ToTensor(), transforms.Normalize(**IMAGENET)])
    for image in images:
        png = official_gradient_png(disc, image, 256, bgr_bug=aigc)
        ours = model.extractor_view(image)
        np.testing.assert_array_equal(ours, png)
        ref_in = tf(Image.fromarray(png))[None]
        torch.testing.assert_close(model.preprocess(image)[None], ref_in, atol=1e-6, rtol=0)
        with torch.inference_mode():
            expected = reference_classifier(clf, PARITY["layers"], PARITY["width"], ref_in)
            got = model.logits(model.preprocess(image)[None])
        assert float((got - expected).abs().max()) <= 1e-4
        p = model.predict([image])[0].probs
        assert p[1] == pytest.approx(float(torch.sigmoid(expected[0, 0])), abs=1e-5)


@pytest.mark.slow
def test_full_size_official_files_match_the_official_pipeline(tmp_path):
    disc, clf = _official_files(tmp_path / "w", "default")
    model = create_model("lgrad", weights=tmp_path / "w")
    image = _images()[0]
    png = official_gradient_png(disc, image, 256)
    np.testing.assert_array_equal(model.extractor_view(image), png)
    ref_in = transforms.Compose([transforms.ToTensor(), transforms.Normalize(**IMAGENET)])(Image.fromarray(png))[None]
    with torch.inference_mode():
        expected = reference_classifier(clf, (3, 4, 6, 3), 64, ref_in)
        assert float((model.logits(model.preprocess(image)[None]) - expected).abs().max()) <= 1e-4


def test_gradient_is_per_image_and_deterministic(parity_configs):
    model = create_model("lgrad:parity")
    a, b, _ = _images()
    items = [model.preprocess(im) for im in (a, b)]
    together = model.predict([a, b])
    alone = [model.predict([im])[0] for im in (a, b)]
    for t, s in zip(together, alone):
        np.testing.assert_allclose(t.probs, s.probs, atol=1e-6)
    torch.testing.assert_close(items[0], model.preprocess(a))


def test_quantisation_is_opencv_convert_to_uint8():
    values = np.array([[[0.5, 1.5, 2.5], [254.5, 255.0, 253.49], [1e-3, 127.5, 128.5]]], np.float32)
    ok, buf = cv2.imencode(".png", values)
    decoded = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(quantise_like_cv2(values), decoded)
    np.testing.assert_array_equal(quantise_like_cv2(values)[0, 0], [0, 2, 2])  # half to even


def test_classifier_layouts_are_not_interchangeable(tmp_path, parity_configs):
    _official_files(tmp_path / "raw", "parity")
    _official_files(tmp_path / "aigc", "parity_aigc")
    with pytest.raises(UserError, match=r"AIGCDetectBenchmark layout.*use lgrad:aigcdetect"):
        create_model("lgrad:parity", weights=tmp_path / "aigc")
    with pytest.raises(UserError, match=r"not an AIGCDetectBenchmark checkpoint"):
        create_model("lgrad:parity_aigc", weights=tmp_path / "raw")


def test_wrong_files_are_refused_with_one_line(tmp_path, parity_configs):
    _official_files(tmp_path / "w", "parity")
    clf = tmp_path / "w" / "LGrad-4class.pth"
    with pytest.raises(UserError, match=r"needs its discriminator file .*--option discriminator=PATH") as err:
        create_model("lgrad:parity", weights=clf)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"not a genforce StyleGAN discriminator state dict.*docs/baselines.md"):
        create_model("lgrad:parity", weights=clf, discriminator=clf)
    wrong = tmp_path / "wrong_disc.pth"
    torch.save(random_discriminator_state(genforce_layout(64, 512, 16), 0), wrong)
    with pytest.raises(UserError, match=r"does not match StyleGANDiscriminator: missing keys: input5.bias.*"
                                         r"Expected the lgrad:parity layout; see docs/baselines.md#lgrad"):
        create_model("lgrad:parity", weights=clf, discriminator=wrong)
    state = torch.load(clf, weights_only=True)
    state["fc.weight"] = torch.zeros(3, state["fc.weight"].shape[1])
    torch.save(state, clf)
    with pytest.raises(UserError, match=r"shape mismatches: fc.weight"):
        create_model("lgrad:parity", weights=tmp_path / "w")
    (tmp_path / "w" / "extra.pth").write_bytes(b"")
    with pytest.raises(UserError, match=r"exactly one classifier file"):
        create_model("lgrad:parity", weights=tmp_path / "w")


def test_option_path_and_our_checkpoint_round_trip(tmp_path, parity_configs):
    from bench.checkpoint import save_checkpoint

    _official_files(tmp_path / "w", "parity")
    a = create_model("lgrad:parity", weights=tmp_path / "w" / "LGrad-4class.pth",
                     discriminator=tmp_path / "w" / DISCRIMINATOR_FILE)
    b = create_model("lgrad:parity", weights=tmp_path / "w")
    image = _images()[0]
    np.testing.assert_allclose(a.predict([image])[0].probs, b.predict([image])[0].probs, atol=1e-7)
    assert a.describe()["extractor_sha256"] == b.extractor_sha256 is not None
    save_checkpoint(tmp_path / "ours", a.state_for_checkpoint(), a.checkpoint_config())
    assert not any(k.startswith("extractor.") for k in a.state_for_checkpoint())  # the file is recorded instead
    again = create_model("lgrad:parity", weights=tmp_path / "ours")
    np.testing.assert_allclose(again.predict([image])[0].probs, a.predict([image])[0].probs, atol=1e-7)
    tiny = create_model("lgrad:tiny", init_seed=3)  # random discriminator: stored in the checkpoint
    save_checkpoint(tmp_path / "tiny", tiny.state_for_checkpoint(), tiny.checkpoint_config())
    back = create_model("lgrad:tiny", weights=tmp_path / "tiny")
    np.testing.assert_allclose(back.predict([image])[0].probs, tiny.predict([image])[0].probs, atol=1e-7)


@pytest.mark.parametrize("config", ["tiny", "aigcdetect_tiny"])
def test_cli_predict_with_official_layout_files(tmp_path, monkeypatch, config):
    """Tiny-shaped files in each official layout (the full-size ones load by the same code, see above)."""
    from bench.cli import main

    monkeypatch.setitem(LGrad.configs, "aigcdetect_tiny", replace(LGrad.configs["tiny"], layout="aigcdetect"))
    _official_files(tmp_path / "w", config)
    image = _images()[0]
    Image.fromarray(image).save(tmp_path / "img.png")
    expected = create_model(f"lgrad:{config}", weights=tmp_path / "w").predict([image])[0].probs
    for weights in (["--weights", str(tmp_path / "w")],
                    ["--weights", str(tmp_path / "w" / "LGrad-4class.pth"),
                     "--option", f"discriminator={tmp_path / 'w' / DISCRIMINATOR_FILE}"]):
        out = tmp_path / f"out{len(weights)}"
        assert main(["predict", "--model", f"lgrad:{config}", *weights, "--out", str(out),
                     str(tmp_path / "img.png")]) == 0
        probs = json.loads((out / "img.json").read_text())["probabilities"]
        assert list(probs.values()) == pytest.approx(list(expected), abs=1e-6)


@pytest.fixture(scope="module")
def sid_mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.sidmini import SMALL_PER_CLASS, SMALL_SIZE, build_sid_mini

    return build_sid_mini(tmp_path_factory.mktemp("sidmini"), per_class=SMALL_PER_CLASS, size=SMALL_SIZE)


@pytest.mark.parametrize("protocol", ["sid_mini_detection", "dmimage_mini_cross", "sid_mini_robustness"])
def test_tiny_runs_the_bundled_protocols(tmp_path, sid_mini_root, protocol):
    from bench.cli import main

    out = tmp_path / protocol
    dataset = "dmimage_mini" if protocol.startswith("dmimage") else "sid_mini"
    assert main(["run", protocol, "--model", "lgrad:tiny", "--data-root", f"{dataset}={sid_mini_root}",
                 "--limit", "6", "--out", str(out)]) == 0
    entries = json.loads((out / "results.json").read_text())["entries"]
    assert entries and all(e["n"] == 6 and e["n_errors"] == 0 for e in entries)
    assert json.loads((out / "results.json").read_text())["model"]["input_policy"]["resize"] == 128


def test_tiny_discriminator_front_end_is_the_fixed_dct_bank():
    from bench.fixed_filters import dct_patch_filters

    d = create_model("lgrad:tiny").extractor
    rgb = d.input0.weight * d.input0.wscale
    expected_rgb = torch.zeros_like(rgb)
    expected_rgb[:3, :, 0, 0] = torch.eye(3)
    torch.testing.assert_close(rgb, expected_rgb)
    first = d.layer0.weight * d.layer0.wscale
    torch.testing.assert_close(first[:, :3], dct_patch_filters(3, first.shape[0], 0.0, 4.0))
    assert not first[:, 3:].any() and not d.layer0.bias.any() and not d.input0.bias.any()
    assert not any(p.requires_grad for p in d.parameters())
    # the official configuration keeps whatever the discriminator file holds: no fixed front end
    assert LGrad.configs["default"].dct_gains is None


def test_training_memoizes_extractor_views_without_changing_the_result(tmp_path, sid_mini_root, monkeypatch):
    """Views are computed once per distinct image; a run that memoizes nothing trains to the same weights."""
    from bench.checkpoint import load_checkpoint
    from bench.model import TrainOptions
    from bench.plugins import create_dataset

    train = create_dataset("sid_mini", root=sid_mini_root, split="train")
    val = create_dataset("sid_mini", root=sid_mini_root, split="validation")
    calls = {"n": 0}
    compute = LGrad.compute_view

    def counted(self, image):
        calls["n"] += 1
        return compute(self, image)

    monkeypatch.setattr(LGrad, "compute_view", counted)
    torch.manual_seed(0)
    report = create_model("lgrad:tiny").fit(train, val, TrainOptions(out_dir=tmp_path / "memo", seed=0, epochs=2))
    n_images = len(train) + len(val)
    assert report["extractor_views"] == calls["n"] == n_images
    assert report["extractor_view_hits"] == n_images  # the second epoch and validation pass hit every view
    calls["n"] = 0
    monkeypatch.setattr(LGrad, "view_memo_bytes", 0)
    torch.manual_seed(0)
    plain = create_model("lgrad:tiny").fit(train, val, TrainOptions(out_dir=tmp_path / "plain", seed=0, epochs=2))
    assert plain["extractor_views"] == 0 and calls["n"] == 2 * n_images
    a, _ = load_checkpoint(Path(report["best"]))
    b, _ = load_checkpoint(Path(plain["best"]))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
