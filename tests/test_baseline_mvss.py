"""MVSS-Net plugin: official key layout, forward parity with an independent functional re-computation
of the official forward, inference policy, strict loader, CLI runs."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from baselines.mvss_net import MVSSNet
from bench.errors import UserError
from bench.model import Capability
from bench.plugins import create_model

torch.set_num_threads(1)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def head_keys(c4: int) -> dict[str, tuple[int, ...]]:
    """The non-ResNet keys of ``get_mvss(sobel=True, constrain=True, nclass=1)`` (models/mvssnet.py)."""
    keys: dict[str, tuple[int, ...]] = {"constrain_conv.kernel": (1, 3, 24)}

    def bn(prefix: str, c: int) -> None:
        keys.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
                     f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()})

    def erb(prefix: str, cin: int) -> None:
        keys.update({f"{prefix}.conv1.weight": (1, cin, 1, 1), f"{prefix}.conv1.bias": (1,),
                     f"{prefix}.conv2.weight": (1, 1, 3, 3), f"{prefix}.conv2.bias": (1,),
                     f"{prefix}.conv3.weight": (1, 1, 3, 3), f"{prefix}.conv3.bias": (1,)})
        bn(f"{prefix}.bn", 1)

    for k, c in enumerate((c4 // 8, c4 // 4, c4 // 2, c4), start=1):
        erb(f"erb_db_{k}", c)
        for axis in "xy":
            keys[f"sobel_{axis}{k}.0.weight"] = (1, c, 3, 3)
            bn(f"sobel_{axis}{k}.1", 1)
    for k in (1, 2, 3):
        erb(f"erb_trans_{k}", 1)
    cin, inter = 2 * c4, c4 // 2
    for branch in ("p", "c"):
        keys[f"head.conv_{branch}1.0.weight"] = (inter, cin, 3, 3)
        bn(f"head.conv_{branch}1.1", inter)
        keys[f"head.conv_{branch}2.0.weight"] = (inter, inter, 3, 3)
        bn(f"head.conv_{branch}2.1", inter)
    keys.update({"head.pam.conv_b.weight": (inter // 8, inter, 1, 1), "head.pam.conv_b.bias": (inter // 8,),
                 "head.pam.conv_c.weight": (inter // 8, inter, 1, 1), "head.pam.conv_c.bias": (inter // 8,),
                 "head.pam.conv_d.weight": (inter, inter, 1, 1), "head.pam.conv_d.bias": (inter,),
                 "head.pam.alpha": (1,), "head.cam.beta": (1,),
                 "head.out.1.weight": (1, inter, 1, 1), "head.out.1.bias": (1,)})
    return keys


@pytest.fixture(scope="module")
def default_model() -> MVSSNet:
    return create_model("mvss_net")


def test_default_keys_and_shapes_are_the_official_layout(default_model: MVSSNet) -> None:
    """torchvision's ResNet-50 (the official ImageNet init) under ``model.`` and
    ``noise_extractor.model.``, plus the edge branch, Bayar kernel and DANet head."""
    resnet = {k: tuple(v.shape) for k, v in torchvision.models.resnet50(weights=None).state_dict().items()}
    expected = {f"{p}{k}": s for p in ("model.", "noise_extractor.model.") for k, s in resnet.items()}
    expected.update(head_keys(2048))
    ours = {k: tuple(v.shape) for k, v in default_model.net.state_dict().items()}
    assert ours == expected
    assert len(ours) == 800


def test_construction_never_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("download attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.utils.model_zoo, "load_url", refuse)
    model = create_model("mvss_net:tiny")
    assert model.capabilities == {Capability.DETECT, Capability.LOCALIZE}


# ------------------------------------------------------------------ the official forward, functionally
def bn(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                        False, 0.0, 1e-5)


def bottleneck(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str, stride: int, rate: int) -> torch.Tensor:
    out = F.relu(bn(F.conv2d(x, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
    out = F.relu(bn(F.conv2d(out, sd[f"{p}.conv2.weight"], stride=stride, padding=rate, dilation=rate), sd, f"{p}.bn2"))
    out = bn(F.conv2d(out, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
    res = x
    if f"{p}.downsample.0.weight" in sd:
        res = bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride), sd, f"{p}.downsample.1")
    return F.relu(out + res)


def resnet_features(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str) -> list[torch.Tensor]:
    """``ResNet50.base_forward``: layer2/3 stride 2, layer4 stride 1 with block rates [1, 2, 4]."""
    x = F.relu(bn(F.conv2d(x, sd[f"{p}conv1.weight"], stride=2, padding=3), sd, f"{p}bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    feats = []
    for layer in (1, 2, 3, 4):
        n = len({k.split(".")[len(p.split(".")) ] for k in sd if k.startswith(f"{p}layer{layer}.")})
        for i in range(n):
            stride = 2 if layer in (2, 3) and i == 0 else 1
            rate = [1, 2, 4][i] if layer == 4 else 1
            x = bottleneck(x, sd, f"{p}layer{layer}.{i}", stride, rate)
        feats.append(x)
    return feats


def erb(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str, relu: bool = True) -> torch.Tensor:
    x = F.conv2d(x, sd[f"{p}.conv1.weight"], sd[f"{p}.conv1.bias"])
    r = F.relu(bn(F.conv2d(x, sd[f"{p}.conv2.weight"], sd[f"{p}.conv2.bias"], padding=1), sd, f"{p}.bn"))
    r = F.conv2d(r, sd[f"{p}.conv3.weight"], sd[f"{p}.conv3.bias"], padding=1)
    return F.relu(x + r) if relu else x + r


def sobel(x: torch.Tensor, sd: dict[str, torch.Tensor], k: int) -> torch.Tensor:
    gx = bn(F.conv2d(x, sd[f"sobel_x{k}.0.weight"], padding=1), sd, f"sobel_x{k}.1")
    gy = bn(F.conv2d(x, sd[f"sobel_y{k}.0.weight"], padding=1), sd, f"sobel_y{k}.1")
    return torch.sigmoid(torch.sqrt(gx**2 + gy**2)) * x


def bayar_kernel(kernel: torch.Tensor) -> torch.Tensor:
    """``BayarConv2d.bayarConstraint``, step by step as the official code."""
    k = kernel.permute(2, 0, 1)
    k = torch.div(k, k.sum(0))
    k = k.permute(1, 2, 0)
    minus1 = torch.ones(1, 3, 1) * -1.0
    return torch.cat((k[:, :, :12], minus1, k[:, :, 12:]), dim=2).reshape((3, 1, 5, 5))


def conv_bn_relu(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    return F.relu(bn(F.conv2d(x, sd[f"{p}.0.weight"], padding=1), sd, f"{p}.1"))


def da_head(x: torch.Tensor, sd: dict[str, torch.Tensor]) -> torch.Tensor:
    fp = conv_bn_relu(x, sd, "head.conv_p1")
    b, c, h, w = fp.shape
    fb = F.conv2d(fp, sd["head.pam.conv_b.weight"], sd["head.pam.conv_b.bias"]).view(b, -1, h * w).permute(0, 2, 1)
    fc = F.conv2d(fp, sd["head.pam.conv_c.weight"], sd["head.pam.conv_c.bias"]).view(b, -1, h * w)
    att = torch.softmax(torch.bmm(fb, fc), dim=-1)
    fd = F.conv2d(fp, sd["head.pam.conv_d.weight"], sd["head.pam.conv_d.bias"]).view(b, -1, h * w)
    fp = sd["head.pam.alpha"] * torch.bmm(fd, att.permute(0, 2, 1)).view(b, -1, h, w) + fp
    fp = conv_bn_relu(fp, sd, "head.conv_p2")
    fcam = conv_bn_relu(x, sd, "head.conv_c1")
    a = fcam.view(b, -1, h * w)
    energy = torch.bmm(a, a.permute(0, 2, 1))
    att_c = torch.softmax(torch.max(energy, dim=-1, keepdim=True)[0].expand_as(energy) - energy, dim=-1)
    fcam = sd["head.cam.beta"] * torch.bmm(att_c, a).view(b, -1, h, w) + fcam
    fcam = conv_bn_relu(fcam, sd, "head.conv_c2")
    return F.conv2d(fp + fcam, sd["head.out.1.weight"], sd["head.out.1.bias"])


def official_forward(x: torch.Tensor, sd: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``MVSSNet.forward`` (sobel=True, constrain=True, aux=False) in eval mode → (res1, x0)."""
    c1, c2, c3, c4 = resnet_features(x, sd, "model.")
    up = lambda t, s: F.interpolate(t, scale_factor=s, mode="bilinear", align_corners=True)  # noqa: E731
    res1 = erb(sobel(c1, sd, 1), sd, "erb_db_1")
    res1 = erb(res1 + up(erb(sobel(c2, sd, 2), sd, "erb_db_2"), 2), sd, "erb_trans_1")
    res1 = erb(res1 + up(erb(sobel(c3, sd, 3), sd, "erb_db_3"), 4), sd, "erb_trans_2")
    res1 = erb(res1 + up(erb(sobel(c4, sd, 4), sd, "erb_db_4"), 4), sd, "erb_trans_3", relu=False)
    gray = (0.2989 * x[:, 2] + 0.5870 * x[:, 1] + 0.1140 * x[:, 0]).unsqueeze(1)
    noise = F.conv2d(gray, bayar_kernel(sd["constrain_conv.kernel"]), padding=2)
    c4 = torch.cat([c4, resnet_features(noise, sd, "noise_extractor.model.")[-1]], dim=1)
    seg = F.interpolate(da_head(c4, sd), x.shape[2:], mode="bilinear", align_corners=True)
    return res1, seg


def official_pipeline(image_rgb: np.ndarray, sd: dict[str, torch.Tensor], size: int) -> tuple[np.ndarray, float]:
    """inference.py: BGR, cv2.resize, img_to_tensor (/255, normalise), sigmoid, resize back (float)."""
    bgr = image_rgb[:, :, ::-1].copy()
    x = cv2.resize(bgr, (size, size))
    t = torch.from_numpy(np.moveaxis(x / 255.0, -1, 0).astype(np.float32))
    t = ((t - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1))[None]
    with torch.no_grad():
        seg = torch.sigmoid(official_forward(t, sd)[1])
    prob = seg[0, 0].numpy().astype(np.float32)
    h, w = image_rgb.shape[:2]
    return cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR), float(seg.max())


def official_random_state(model: MVSSNet, seed: int = 1) -> dict[str, torch.Tensor]:
    """Random weights in the official layout, with non-trivial BN statistics and attention gains."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in model.net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            state[k] = v.clone()
        elif k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=g) + 0.5
        elif "sobel" in k and k.endswith(".0.weight"):
            state[k] = v.clone()  # the fixed Sobel kernels
        elif k == "constrain_conv.kernel":
            state[k] = torch.rand(v.shape, generator=g) + 0.1
        elif k in ("head.pam.alpha", "head.cam.beta"):
            state[k] = torch.tensor([0.7 if "alpha" in k else -0.3])
        elif v.ndim > 1:  # fan-in scaled, so activations stay O(1) and the comparison is sensitive
            state[k] = torch.randn(v.shape, generator=g) * (1.0 / v[0].numel() ** 0.5)
        elif k.endswith(".weight") and ("bn" in k or ".1.weight" in k):
            state[k] = 1.0 + 0.1 * torch.randn(v.shape, generator=g)
        else:
            state[k] = torch.randn(v.shape, generator=g) * 0.1
    return state


@pytest.fixture(scope="module")
def official_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    state = official_random_state(create_model("mvss_net:tiny"))
    path = tmp_path_factory.mktemp("mvss") / "mvssnet_casia.pt"
    torch.save(state, path)
    return path, state


def test_network_logits_match_the_official_forward(official_file: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, state = official_file
    model = create_model("mvss_net:tiny", weights=path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        edge, seg = model.net(x)
        ref_edge, ref_seg = official_forward(x, state)
    assert edge.shape == (2, 1, 16, 16) and seg.shape == (2, 1, 64, 64)
    assert 0.05 < float(seg.std()) < 10 and 0.05 < float(edge.std()) < 10  # O(1), non-degenerate outputs
    assert 0.02 < float(torch.sigmoid(seg).std())  # masks not saturated
    assert (edge - ref_edge).abs().max() <= 1e-4
    assert (seg - ref_seg).abs().max() <= 1e-4


@pytest.mark.parametrize("shape", [(37, 53), (97, 71), (64, 64)])
def test_predictions_match_the_official_pipeline_on_odd_sizes(
    official_file: tuple[Path, dict[str, torch.Tensor]], shape: tuple[int, int]
) -> None:
    path, state = official_file
    model = create_model("mvss_net:tiny", weights=path)
    image = np.random.default_rng(shape[0]).integers(0, 256, (*shape, 3), dtype=np.uint8)
    pred = model.predict([image])[0]
    ref_mask, ref_score = official_pipeline(image, state, 64)
    assert pred.mask is not None and pred.mask.shape == shape
    assert np.abs(pred.mask - ref_mask).max() <= 1e-4
    assert pred.probs[1] == pytest.approx(ref_score, abs=1e-6)
    assert pred.probs.sum() == pytest.approx(1.0)


def test_preprocess_is_bgr_resized_and_normalised_per_bgr_channel() -> None:
    model = create_model("mvss_net:tiny")
    image = np.zeros((10, 12, 3), np.uint8)
    image[..., 0] = 200  # red
    x = model.preprocess(image)
    assert tuple(x.shape) == (3, 64, 64)
    np.testing.assert_allclose(x[:, 5, 5].numpy(), [(0 - 0.485) / 0.229, (0 - 0.456) / 0.224, (200 / 255 - 0.406) / 0.225],
                               rtol=1e-6)
    policy = model.input_policy
    assert policy.colour_order == "BGR" and policy.resize == 64 and policy.resize_mode == "square"
    assert MVSSNet.configs["default"].input_size == 512


def test_bayar_kernel_is_constrained_and_the_parameter_is_not_mutated() -> None:
    model = create_model("mvss_net:tiny")
    conv = model.net.constrain_conv
    before = conv.kernel.detach().clone()
    w = conv.weight().detach()
    assert tuple(w.shape) == (3, 1, 5, 5)
    torch.testing.assert_close(w[:, 0, 2, 2], -torch.ones(3))
    torch.testing.assert_close(w.sum(dim=(1, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(w, bayar_kernel(before))
    assert torch.equal(conv.kernel, before)


# ------------------------------------------------------------------ loader
def one_line_error(path: Path, config: str = "mvss_net:tiny") -> str:
    with pytest.raises(UserError) as err:
        create_model(config, weights=path)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_wrong_files_are_refused_with_one_line(official_file: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path,
                                               default_model: MVSSNet) -> None:
    _, state = official_file
    broken = dict(state)
    del broken["head.out.1.bias"]
    broken["head.aux.weight"] = torch.zeros(1)
    torch.save(broken, tmp_path / "broken.pt")
    msg = one_line_error(tmp_path / "broken.pt")
    assert "missing keys: head.out.1.bias" in msg and "unexpected keys: head.aux.weight" in msg
    torch.save({"state_dict": state}, tmp_path / "wrapped.pt")
    assert "entry 'state_dict' is a dict" in one_line_error(tmp_path / "wrapped.pt")
    with pytest.raises(UserError, match="shape mismatches") as err:
        default_model.load_weights(official_file[0])  # the tiny file in the full network
    assert "\n" not in str(err.value)
    (tmp_path / "dir").mkdir()
    assert "dong03/MVSS-Net" in one_line_error(tmp_path / "dir")


def test_dataparallel_prefix_is_accepted(official_file: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path) -> None:
    _, state = official_file
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pt")
    model = create_model("mvss_net:tiny", weights=tmp_path / "dp.pt")
    assert torch.equal(model.net.head.out[1].weight, state["head.out.1.weight"])
    with pytest.raises(UserError, match="Unknown option"):
        create_model("mvss_net:tiny", resize=256)


# ------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def sid_mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.sidmini import SMALL_PER_CLASS, SMALL_SIZE, build_sid_mini

    return build_sid_mini(tmp_path_factory.mktemp("sidmini"), per_class=SMALL_PER_CLASS, size=SMALL_SIZE)


@pytest.mark.parametrize("protocol", ["sid_mini_localization",
                                      pytest.param("sid_mini_robustness", marks=pytest.mark.slow)])
def test_cli_runs(tmp_path: Path, sid_mini_root: Path, protocol: str) -> None:
    from bench.cli import main

    out = tmp_path / protocol
    args = ["run", protocol, "--model", "mvss_net:tiny", "--data-root", f"sid_mini={sid_mini_root}",
            "--out", str(out), "--limit", "6"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    entry = results["entries"][0]
    assert entry["n"] == 6 and entry["n_errors"] == 0
    values = entry["metrics"]["localization"]["values"]
    assert 0.0 <= values["pixel_auc"]["value"] <= 1.0 and values["n_images"]["value"] == 2
    assert results["model"]["mask_upsampling"].startswith("bilinear")
