"""HiFi-Net plugin: official layout and parameter counts, forward parity with an independent functional
re-computation of the official forward (both heads, both mask rules), strict loaders, CLI runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from baselines.hifi_net import HiFiNet
from bench.errors import UserError
from bench.plugins import create_model

torch.set_num_threads(1)
Sd = dict[str, torch.Tensor]


def test_default_layout_matches_the_official_parameter_counts() -> None:
    """restore_weight_helper prints trainable parameters: HRNet 6,361,208 and NLCDetection (api)
    528,923 (issue #19 log); the loc head adds FPN_LOC and the 64-d non-local block."""
    model = create_model("hifi_net")
    trainable = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
    assert trainable(model.net.backbone) == 6_361_208
    assert trainable(model.net.head) == 528_923
    keys = model.net.head.state_dict()
    assert tuple(keys["getmask.g.weight"].shape) == (288, 288, 1, 1)
    assert tuple(keys["branch_cls_level_1.branch_cls.0.weight"].shape) == (32, 271, 3, 3)
    assert tuple(model.net.backbone.state_dict()["laplacian.smoothing.scale-8.weight"].shape) == (64, 1, 3, 3)
    assert tuple(model.net.backbone.state_dict()["transition1.3.2.0.weight"].shape) == (144, 256, 3, 3)
    loc = create_model("hifi_net:loc_ce").net.head.state_dict()
    assert tuple(loc["branch_cls_level_1.branch_cls.0.weight"].shape) == (32, 317, 3, 3)
    assert tuple(loc["FPN_LOC.smooth_s4.0.weight"].shape) == (64, 144, 1, 1)
    assert "FPN_LOC.fpn1.1.running_mean" in loc and "getmask.conv_2.weight" in loc


# ------------------------------------------------------------------ the official forward, functionally
def bn(x: torch.Tensor, sd: Sd, p: str) -> torch.Tensor:
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                        False, 0.0, 1e-5)


def block(x: torch.Tensor, sd: Sd, p: str) -> torch.Tensor:
    """Official BasicBlock (conv1/conv2) or Bottleneck (conv1/conv2/conv3) with optional downsample."""
    if f"{p}.conv3.weight" in sd:
        out = F.relu(bn(F.conv2d(x, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
        out = F.relu(bn(F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1), sd, f"{p}.bn2"))
        out = bn(F.conv2d(out, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
    else:
        out = F.relu(bn(F.conv2d(x, sd[f"{p}.conv1.weight"], padding=1), sd, f"{p}.bn1"))
        out = bn(F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1), sd, f"{p}.bn2")
    res = bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"]), sd, f"{p}.downsample.1") if f"{p}.downsample.0.weight" in sd else x
    return F.relu(out + res)


def count(sd: Sd, prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})


def hr_module(xs: list[torch.Tensor], sd: Sd, p: str) -> list[torch.Tensor]:
    """HighResolutionModule.forward: branches, then y = x0 (or fuse[i][0](x0)) + the other terms."""
    n = len(xs)
    xs = list(xs)
    for b in range(n):
        for k in range(count(sd, f"{p}.branches.{b}.")):
            xs[b] = block(xs[b], sd, f"{p}.branches.{b}.{k}")

    def fuse(i: int, j: int, x: torch.Tensor) -> torch.Tensor:
        q = f"{p}.fuse_layers.{i}.{j}"
        if j > i:
            return F.interpolate(bn(F.conv2d(x, sd[f"{q}.0.weight"]), sd, f"{q}.1"), size=xs[i].shape[-2:],
                                 mode="bilinear", align_corners=True)
        for t in range(i - j):
            x = bn(F.conv2d(x, sd[f"{q}.{t}.0.weight"], stride=2, padding=1), sd, f"{q}.{t}.1")
            x = F.relu(x) if t < i - j - 1 else x
        return x

    out = []
    for i in range(n):
        y = xs[0] if i == 0 else fuse(i, 0, xs[0])
        for j in range(1, n):
            y = y + (xs[j] if i == j else fuse(i, j, xs[j]))
        out.append(F.relu(y))
    return out


def transition(ys: list[torch.Tensor], sd: Sd, p: str, n: int) -> list[torch.Tensor]:
    xs = []
    for i in range(n):
        if f"{p}.{i}.0.weight" in sd:  # width change: 3x3 conv+BN+ReLU
            xs.append(F.relu(bn(F.conv2d(ys[i], sd[f"{p}.{i}.0.weight"], padding=1), sd, f"{p}.{i}.1")))
        elif f"{p}.{i}.0.0.weight" in sd:  # new branch: stride-2 chain from the last branch
            x = ys[-1]
            for t in range(count(sd, f"{p}.{i}.")):
                x = F.relu(bn(F.conv2d(x, sd[f"{p}.{i}.{t}.0.weight"], stride=2, padding=1), sd, f"{p}.{i}.{t}.1"))
            xs.append(x)
        else:
            xs.append(ys[i])
    return xs


def laplacian(x: torch.Tensor, sd: Sd) -> torch.Tensor:
    diff = None
    for s in (2, 4, 8):
        sm = F.conv2d(x, sd[f"laplacian.smoothing.scale-{s}.weight"], groups=x.shape[1])
        sm = F.interpolate(sm, scale_factor=1 / s, mode="bilinear", align_corners=False)
        sm = F.interpolate(sm, size=(x.shape[2], x.shape[3]), mode="bilinear", align_corners=False)
        diff = x - sm if diff is None else torch.cat((diff, x - sm), dim=1)
    return F.relu(bn(F.conv2d(diff, sd["laplacian.conv_1x1.0.weight"]), sd, "laplacian.conv_1x1.1"))


def fenet(x: torch.Tensor, sd: Sd) -> list[torch.Tensor]:
    """HighResolutionNet.forward of models/seg_hrnet.py (eval mode: dropout is the identity)."""
    fre = F.relu(bn(F.conv2d(x, sd["conv1fre.weight"], padding=1), sd, "bn1fre"))
    fre = laplacian(fre, sd)
    fre = F.relu(bn(F.conv2d(fre, sd["conv2fre.weight"], padding=1), sd, "bn2fre"))
    y = F.relu(bn(F.conv2d(x, sd["conv1.weight"], padding=1), sd, "bn1"))
    y = F.relu(bn(F.conv2d(y, sd["conv2.weight"], padding=1), sd, "bn2"))
    y = F.relu(bn(F.conv2d(torch.cat([y, fre], 1), sd["conv_1x1_merge.0.weight"], groups=2), sd, "conv_1x1_merge.1"))
    for k in range(count(sd, "layer1.")):
        y = block(y, sd, f"layer1.{k}")
    ys = [y]
    for k in (1, 2, 3):
        ys = hr_module(transition(ys, sd, f"transition{k}", 4), sd, f"stage{k + 1}.0")
    return ys


def conv(x: torch.Tensor, sd: Sd, p: str, **kw: int) -> torch.Tensor:
    return F.conv2d(x, sd[f"{p}.weight"], sd.get(f"{p}.bias"), **kw)


def pconv(x: torch.Tensor, mask: torch.Tensor, sd: Sd, p: str) -> tuple[torch.Tensor, torch.Tensor]:
    out = conv(x, sd, f"{p}.input_conv", stride=2)
    bias = sd[f"{p}.input_conv.bias"].view(1, -1, 1, 1).expand_as(out)
    om = F.conv2d(mask, sd[f"{p}.mask_conv.weight"], stride=2)
    holes = om == 0
    out = ((out - bias) / om.masked_fill_(holes, 1.0) + bias).masked_fill_(holes, 0.0)
    return out, torch.ones_like(out).masked_fill_(holes, 0.0)


def non_local(x: torch.Tensor, img: torch.Tensor, sd: Sd, loc: bool) -> tuple[torch.Tensor, ...]:
    b, c, h, w = x.shape
    ic = c * 16
    x1 = x.reshape(b, ic, h // 4, w // 4)
    g_x = conv(x1, sd, "getmask.g").view(b, ic, -1).permute(0, 2, 1)
    theta = conv(x1, sd, "getmask.theta").view(b, ic, -1).permute(0, 2, 1)
    phi = conv(x1, sd, "getmask.phi").view(b, ic, -1)
    y = torch.matmul(F.softmax(torch.matmul(theta, phi), dim=-1), g_x).permute(0, 2, 1).contiguous().view(b, c, h, w)
    feat = x + sd["getmask.gamma_s"] * conv(y, sd, "getmask.W_s")
    if loc:
        feat = conv(feat, sd, "getmask.conv_1", padding=1)
        mask_binary = torch.sigmoid(conv(F.relu(feat), sd, "getmask.conv_2", padding=1))
        out_feat = torch.sigmoid(feat)
    else:
        mask_binary = torch.sigmoid(conv(F.relu(conv(feat, sd, "getmask.getmask.0", padding=1)), sd,
                                         "getmask.getmask.2", padding=1))
        out_feat = feat
    m = mask_binary.repeat(1, 3, 1, 1)
    p, nm = pconv(img * m, m, sd, "getmask.Pconv_1")
    p, nm = pconv(p, nm, sd, "getmask.Pconv_2")
    p, _ = pconv(p, nm, sd, "getmask.Pconv_3")
    return p, out_feat, mask_binary.squeeze(1)


def branch(x: torch.Tensor, sd: Sd, p: str) -> tuple[torch.Tensor, torch.Tensor]:
    f = F.relu(conv(F.relu(conv(x, sd, f"{p}.branch_cls.0", padding=1)), sd, f"{p}.branch_cls.2", padding=1))
    v = F.adaptive_avg_pool2d(f, (1, 1)).view(f.size(0), -1)
    v = F.batch_norm(v, sd[f"{p}.bn.running_mean"], sd[f"{p}.bn.running_var"], sd[f"{p}.bn.weight"],
                     sd[f"{p}.bn.bias"], False, 0.0, 1e-5)
    res = F.linear(v, sd[f"{p}.fc.weight"], sd[f"{p}.fc.bias"])
    pro = F.leaky_relu(res, 0.2)
    return res, torch.where(pro > 0, pro, -9e15 * torch.ones_like(pro))


def segnet(feats: list[torch.Tensor], img: torch.Tensor, sd: Sd, loc: bool, crop: int) -> tuple[torch.Tensor, ...]:
    """NLCDetection.forward of models/NLCDetection_api.py (loc=False) / NLCDetection_loc.py (loc=True)."""
    s1, s2, s3, s4 = feats
    ac = dict(mode="bilinear", align_corners=True)
    if loc:
        s1, s2, s3, s4 = (F.interpolate(f, size=[crop // d, crop // d], **ac) for f, d in zip(feats, (1, 2, 4, 8)))
        img = F.interpolate(img, size=(crop, crop), **ac)
        sm = lambda x, k: conv(conv(x, sd, f"FPN_LOC.smooth_s{k}.0"), sd, f"FPN_LOC.smooth_s{k}.1", padding=1)  # noqa: E731

        def fpn(x: torch.Tensor, k: int) -> torch.Tensor:
            x = F.relu(bn(F.conv2d(x, sd[f"FPN_LOC.fpn{k}.0.weight"], padding=1), sd, f"FPN_LOC.fpn{k}.1"))
            return F.interpolate(x, scale_factor=2, mode="nearest") if k > 1 else x

        f4 = fpn(sm(s4, 4), 4)
        f3 = fpn(sm(s3, 3) + f4, 3)
        f2 = fpn(sm(s2, 2) + f3, 2)
        s1 = fpn(sm(s1, 1) + f2, 1)
    pc, mask, mask_binary = non_local(s1, img, sd, loc)
    pconv_1 = F.interpolate(pc, size=s1.size()[2:], **ac)
    cls_4, pro_4 = branch(s4, sd, "branch_cls_level_4")
    p4 = F.softmax(pro_4, dim=1)
    m3 = torch.cat([p4[:, [0]], p4[:, [1]], p4[:, [1]], p4[:, [2]], p4[:, [2]]], 1)
    s3_input = torch.cat([F.interpolate(s4, size=s3.size()[2:], **ac), s3], 1)
    cls_3, pro_3 = branch(s3_input, sd, "branch_cls_level_3")
    p3 = F.softmax(pro_3, dim=1)
    cls_3 = cls_3 + cls_3 * m3
    m2 = torch.cat([p3[:, [0]], p3[:, [1]], p3[:, [1]], p3[:, [2]], p3[:, [2]], p3[:, [3]], p3[:, [4]]], 1)
    s2_input = torch.cat([F.interpolate(s3_input, size=s2.size()[2:], **ac), s2], 1)
    cls_2, pro_2 = branch(s2_input, sd, "branch_cls_level_2")
    p2 = F.softmax(pro_2, dim=1)
    cls_2 = cls_2 + cls_2 * m2
    c = [p2[:, [i]] for i in range(5)]
    m1 = torch.cat([c[0], c[1], c[1], c[2], c[2], c[3], c[3], c[4], c[4], c[4], c[4], c[4], c[4], c[4]], 1)
    s1_input = torch.cat([F.interpolate(s2_input, size=s1.size()[2:], **ac), s1, pconv_1], 1)
    cls_1, _ = branch(s1_input, sd, "branch_cls_level_1")
    cls_1 = cls_1 + cls_1 * m1
    return mask, mask_binary, cls_4, cls_3, cls_2, cls_1


# ------------------------------------------------------------------ random weights in the official files
def random_state(module: torch.nn.Module, g: torch.Generator) -> Sd:
    state = {}
    for k, v in module.state_dict().items():
        if k.endswith("num_batches_tracked") or "smoothing" in k or "mask_conv" in k:
            state[k] = v.clone()  # counters, the fixed Gaussian kernels, the all-ones partial-conv mask kernels
        elif k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith("gamma_s"):
            state[k] = torch.tensor([0.8])
        elif v.ndim > 1:  # fan-in scaled, so activations stay O(1) and the comparison is sensitive
            state[k] = torch.randn(v.shape, generator=g) * (0.7 / v[0].numel() ** 0.5)
        elif k.endswith(".weight") and "bn" in k or ".1.weight" in k:
            state[k] = 1.0 + 0.1 * torch.randn(v.shape, generator=g)
        else:
            state[k] = torch.randn(v.shape, generator=g) * 0.1
    return state


def write_official(config: str, folder: Path, seed: int = 0) -> tuple[Path, Sd, Sd, torch.Tensor]:
    """``weights/HRNet/<N>.pth`` and ``weights/NLCDetection/<N>.pth`` ({'model': module.-prefixed}) and
    ``center/radius_center.pth`` (``center_loc/`` for the loc head) under a repository-like root."""
    model = create_model(f"hifi_net:{config}")
    g = torch.Generator().manual_seed(seed)
    fenet_sd, seg_sd = random_state(model.net.backbone, g), random_state(model.net.head, g)
    n = model.iteration
    for stem, sd in (("HRNet", fenet_sd), ("NLCDetection", seg_sd)):
        (folder / "weights" / stem).mkdir(parents=True, exist_ok=True)
        torch.save({"model": {f"module.{k}": v for k, v in sd.items()}}, folder / "weights" / stem / f"{n}.pth")
    dim = 18 if model.config.head == "loc" else model.config.backbone.out_channels[0]
    center = torch.randn(dim, generator=g) * 0.5 + (0.5 if model.config.head == "loc" else 0.0)
    sub = "center_loc" if model.config.head == "loc" else "center"
    (folder / sub).mkdir(parents=True, exist_ok=True)
    torch.save({"center": center, "radius": torch.tensor(1.3)}, folder / sub / "radius_center.pth")
    return folder, fenet_sd, seg_sd, center


def official_pipeline(image: np.ndarray, fenet_sd: Sd, seg_sd: Sd, center: torch.Tensor, *, loc: bool, rule: str,
                      size: int, threshold: float) -> tuple[tuple[torch.Tensor, ...], np.ndarray, float]:
    """_transform_image → FENet → SegNet → (outputs, 256² mask by the rule, p_fake = 1 − softmax(out3)[0])."""
    img = np.asarray(Image.fromarray(image).resize((size, size), resample=Image.BICUBIC)).astype(np.float32) / 255.0
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    with torch.no_grad():
        out = segnet(fenet(x, fenet_sd), x, seg_sd, loc, size)
        feat, mask_binary, *_, out3 = out
        if rule == "ce":
            mask = mask_binary[0]
        else:  # IsolatingLossFunction.inference + HiFi_Net.localize
            bs, d, w, h = feat.size()
            dist = torch.nn.PairwiseDistance(p=2)(torch.reshape(feat.permute(0, 2, 3, 1), (-1, d)), center)
            score = torch.reshape(dist, (bs, w, h, 1)).permute(0, 3, 1, 2).squeeze(1)[0].numpy().copy()
            score[score < threshold] = 0.0
            score[score >= threshold] = 1.0
            mask = torch.from_numpy(score)
    return out, mask.numpy(), float(1 - torch.softmax(out3, dim=1)[0, 0])


def centre_splitting(feats: torch.Tensor, threshold: float) -> torch.Tensor:
    """A centre whose distances to the (B=1) pixel features straddle ``threshold``: a pixel's own
    feature moved along the first axis until the median distance reaches the threshold."""
    f = feats[0].flatten(1).T  # (N, d)
    base, u = f[0].clone(), torch.eye(f.shape[1])[0]
    median = lambda t: float((f - base - t * u).norm(dim=1).median())  # noqa: E731
    lo, hi = 0.0, threshold + float((f - base).norm(dim=1).max()) + 1.0
    if median(lo) < threshold:
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if median(mid) < threshold else (lo, mid)
    return base + lo * u


VARIANTS = [("tiny", False, "ce"), ("tiny_dm", False, "distance"), ("tiny_loc_ce", True, "ce"),
            ("tiny_loc_dm", True, "distance")]


@pytest.mark.parametrize(("config", "loc", "rule"), VARIANTS)
def test_forward_and_predictions_match_the_official_computation(tmp_path: Path, config: str, loc: bool, rule: str) -> None:
    root, fenet_sd, seg_sd, center = write_official(config, tmp_path)
    threshold = HiFiNet.configs[config].distance_threshold
    images = [np.random.default_rng(s[0]).integers(0, 256, (*s, 3), dtype=np.uint8) for s in [(37, 53), (97, 71)]]
    if rule == "distance":  # a centre that makes the 2.3 rule split the first image's map: a real comparison
        (feats, *_), _, _ = official_pipeline(images[0], fenet_sd, seg_sd, center, loc=loc, rule="ce", size=64,
                                              threshold=threshold)
        center = centre_splitting(feats, threshold)
        torch.save({"center": center, "radius": torch.tensor(1.3)},
                   root / ("center_loc" if loc else "center") / "radius_center.pth")
    model = create_model(f"hifi_net:{config}", weights=root)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ours = model.net(x)
        ref = segnet(fenet(x, fenet_sd), x, seg_sd, loc, 64)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        assert (a - b).abs().max() <= 1e-4
    assert all(0.005 < float(t.std()) < 10 for t in ref)  # O(1), non-degenerate outputs
    for k, image in enumerate(images):
        pred = model.predict([image])[0]
        _, ref_mask, ref_fake = official_pipeline(image, fenet_sd, seg_sd, center, loc=loc, rule=rule, size=64,
                                                  threshold=threshold)
        ref_up = F.interpolate(torch.from_numpy(ref_mask)[None, None].float(), size=image.shape[:2], mode="bilinear",
                               align_corners=False)[0, 0].numpy()
        assert pred.mask is not None and pred.mask.shape == image.shape[:2]
        assert np.abs(pred.mask - ref_up).max() <= 1e-4
        assert pred.probs[1] == pytest.approx(ref_fake, abs=1e-5)
        if rule == "distance" and k == 0:
            assert 0.0 < ref_mask.mean() < 1.0


def test_preprocess_is_pil_bicubic_over_255_and_the_policy_is_recorded() -> None:
    model = create_model("hifi_net:tiny")
    image = np.random.default_rng(3).integers(0, 256, (41, 29, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(image).resize((64, 64), Image.BICUBIC)).transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(model.preprocess(image).numpy(), expected, atol=1e-7)
    policy = model.input_policy
    assert (policy.resize, policy.interpolation, policy.mean, policy.colour_order) == (64, "bicubic", None, "RGB")
    assert HiFiNet.configs["default"].input_size == 256 and HiFiNet.configs["default"].distance_threshold == 2.3
    near = create_model("hifi_net:tiny", mask_interpolation="nearest")
    assert near.describe()["mask_upsampling"].startswith("nearest")
    mask = near.predict([image])[0].mask
    assert mask is not None and mask.shape == (41, 29)
    with pytest.raises(UserError, match="mask_interpolation"):
        create_model("hifi_net:tiny", mask_interpolation="bicubic")
    with pytest.raises(UserError, match="Unknown option"):
        create_model("hifi_net:tiny", threshold=1.0)


def one_line_error(config: str, path: Path) -> str:
    with pytest.raises(UserError) as err:
        create_model(f"hifi_net:{config}", weights=path)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_loader_names_every_missing_and_unexpected_key(tmp_path: Path) -> None:
    root, _, seg_sd, _ = write_official("tiny_dm", tmp_path)
    file = root / "weights" / "NLCDetection" / "750001.pth"
    broken = {f"module.{k}": v for k, v in seg_sd.items() if not k.startswith("getmask.Pconv_3.")}
    broken["module.extra.weight"] = torch.zeros(1)
    torch.save({"model": broken}, file)
    msg = one_line_error("tiny_dm", root)
    for key in ("getmask.Pconv_3.input_conv.weight", "getmask.Pconv_3.input_conv.bias", "getmask.Pconv_3.mask_conv.weight"):
        assert key in msg
    assert "unexpected keys: extra.weight" in msg and "more)" not in msg


def test_loc_file_in_the_api_head_is_refused_like_issue_19(tmp_path: Path) -> None:
    """The official loader silently skips this (try/except); ours names the head and every key."""
    loc_root, _, _, _ = write_official("tiny_loc_ce", tmp_path / "loc")
    api_root, _, _, _ = write_official("tiny_dm", tmp_path / "api")
    (api_root / "weights" / "NLCDetection" / "750001.pth").write_bytes(
        (loc_root / "weights" / "NLCDetection" / "225000.pth").read_bytes())
    msg = one_line_error("tiny_dm", api_root)
    assert "loc (FPN_LOC.* keys; use hifi_net:loc_ce" in msg
    assert "getmask.getmask.0.weight" in msg and "FPN_LOC.smooth_s4.0.weight" in msg


def test_wrong_layouts_are_refused_with_one_line(tmp_path: Path) -> None:
    root, fenet_sd, _, _ = write_official("tiny_dm", tmp_path)
    assert "HRNet/750001.pth" in one_line_error("tiny_dm", tmp_path / "weights" / "HRNet" / "750001.pth")
    assert "missing HRNet/225000.pth" in one_line_error("tiny_loc_ce", root)
    torch.save({f"module.{k}": v for k, v in fenet_sd.items()}, root / "weights" / "HRNet" / "750001.pth")
    assert "expected a checkpoint with key 'model'" in one_line_error("tiny_dm", root)
    torch.save({"model": {f"module.{k}": v for k, v in fenet_sd.items()}}, root / "weights" / "HRNet" / "750001.pth")
    (root / "center" / "radius_center.pth").unlink()
    assert "radius_center.pth" in one_line_error("tiny_dm", root)
    assert "shape mismatches" in one_line_error("default", root)
    loaded = create_model("hifi_net:tiny", weights=root / "weights")  # the ce rule needs no centre; weights/ directly
    assert loaded.center is None and loaded.describe()["iteration"] == 750001


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
    args = ["run", protocol, "--model", "hifi_net:tiny", "--data-root", f"sid_mini={sid_mini_root}",
            "--out", str(out), "--limit", "6"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    entry = results["entries"][0]
    assert entry["n"] == 6 and entry["n_errors"] == 0
    values = entry["metrics"]["localization"]["values"]
    assert 0.0 <= values["pixel_auc"]["value"] <= 1.0 and values["n_images"]["value"] == 2
    assert results["model"]["mask_upsampling"].startswith("bilinear")
