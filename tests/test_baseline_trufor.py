"""TruFor plugin: official key layout, forward parity with an independent functional re-computation
of the official forward (builder_np_conf.py, dual_segformer.py, net_utils.py, MLPDecoder.py),
inference policy, strict loader, CLI runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from baselines.trufor import TruFor
from bench.errors import UserError
from bench.plugins import create_model

torch.set_num_threads(1)
Sd = dict[str, torch.Tensor]
DIMS, HEADS, DEPTHS, SRS = (64, 128, 320, 512), (1, 2, 5, 8), (3, 4, 6, 3), (8, 4, 2, 1)


def official_keys() -> dict[str, tuple[int, ...]]:
    """Every key and shape of ``myEncoderDecoder`` with trufor.yaml (mit_b2, MLPDecoder 512, confpool)."""
    keys: dict[str, tuple[int, ...]] = {}

    def lin(p: str, i: int, o: int, bias: bool = True) -> None:
        keys[f"{p}.weight"] = (o, i)
        if bias:
            keys[f"{p}.bias"] = (o,)

    def ln(p: str, c: int) -> None:
        keys[f"{p}.weight"], keys[f"{p}.bias"] = (c,), (c,)

    def bn(p: str, c: int) -> None:
        ln(p, c)
        keys[f"{p}.running_mean"], keys[f"{p}.running_var"], keys[f"{p}.num_batches_tracked"] = (c,), (c,), ()

    def conv(p: str, i: int, o: int, k: int, bias: bool = True, groups: int = 1) -> None:
        keys[f"{p}.weight"] = (o, i // groups, k, k)
        if bias:
            keys[f"{p}.bias"] = (o,)

    conv("dncnn.0", 3, 64, 3)
    for i in range(1, 16):
        conv(f"dncnn.{2 + 3 * (i - 1)}", 64, 64, 3, bias=False)
        bn(f"dncnn.{3 + 3 * (i - 1)}", 64)
    conv("dncnn.47", 64, 1, 3)
    for pre in ("backbone.", "backbone.extra_"):
        for s in range(4):
            d, cin = DIMS[s], 3 if s == 0 else DIMS[s - 1]
            conv(f"{pre}patch_embed{s + 1}.proj", cin, d, 7 if s == 0 else 3)
            ln(f"{pre}patch_embed{s + 1}.norm", d)
            for b in range(DEPTHS[s]):
                p = f"{pre}block{s + 1}.{b}"
                ln(f"{p}.norm1", d)
                lin(f"{p}.attn.q", d, d)
                lin(f"{p}.attn.kv", d, 2 * d)
                lin(f"{p}.attn.proj", d, d)
                if SRS[s] > 1:
                    conv(f"{p}.attn.sr", d, d, SRS[s])
                    ln(f"{p}.attn.norm", d)
                ln(f"{p}.norm2", d)
                lin(f"{p}.mlp.fc1", d, 4 * d)
                conv(f"{p}.mlp.dwconv.dwconv", 4 * d, 4 * d, 3, groups=4 * d)
                lin(f"{p}.mlp.fc2", 4 * d, d)
            ln(f"{pre}norm{s + 1}", d)
    for s, d in enumerate(DIMS):
        p = f"backbone.FRMs.{s}"
        lin(f"{p}.channel_weights.mlp.0", 4 * d, 4 * d)
        lin(f"{p}.channel_weights.mlp.2", 4 * d, 2 * d)
        conv(f"{p}.spatial_weights.mlp.0", 2 * d, d, 1)
        conv(f"{p}.spatial_weights.mlp.2", d, 2, 1)
        p = f"backbone.FFMs.{s}"
        for k in (1, 2):
            lin(f"{p}.cross.channel_proj{k}", d, 2 * d)
            lin(f"{p}.cross.cross_attn.kv{k}", d, 2 * d, bias=False)
            lin(f"{p}.cross.end_proj{k}", 2 * d, d)
            ln(f"{p}.cross.norm{k}", d)
        conv(f"{p}.channel_emb.residual", 2 * d, d, 1, bias=False)
        conv(f"{p}.channel_emb.channel_embed.0", 2 * d, d, 1)
        conv(f"{p}.channel_emb.channel_embed.1", d, d, 3, groups=d)
        conv(f"{p}.channel_emb.channel_embed.3", d, d, 1)
        bn(f"{p}.channel_emb.channel_embed.4", d)
        bn(f"{p}.channel_emb.norm", d)
    for head, classes in (("decode_head", 2), ("decode_head_conf", 1)):
        for k, c in enumerate(DIMS, start=1):
            lin(f"{head}.linear_c{k}.proj", c, 512)
        conv(f"{head}.linear_fuse.0", 2048, 512, 1)
        bn(f"{head}.linear_fuse.1", 512)
        conv(f"{head}.linear_pred", 512, classes, 1)
    lin("detection.0", 8, 128)
    lin("detection.3", 128, 1)
    return keys


def test_default_keys_and_shapes_are_the_official_layout() -> None:
    model = create_model("trufor")
    assert {k: tuple(v.shape) for k, v in model.net.state_dict().items()} == official_keys()
    assert model.net.decode_head.linear_fuse[1].eps == 1e-3 and model.net.decode_head_conf.linear_fuse[1].eps == 1e-5
    assert not any(p.requires_grad for p in model.net.dncnn.parameters())  # Noiseprint++ is frozen


# ------------------------------------------------------------------ the official forward, functionally
def lin(x: torch.Tensor, sd: Sd, p: str) -> torch.Tensor:
    return F.linear(x, sd[f"{p}.weight"], sd.get(f"{p}.bias"))


def ln(x: torch.Tensor, sd: Sd, p: str, eps: float) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), sd[f"{p}.weight"], sd[f"{p}.bias"], eps)


def bn(x: torch.Tensor, sd: Sd, p: str, eps: float = 1e-5) -> torch.Tensor:
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                        False, 0.0, eps)


def conv(x: torch.Tensor, sd: Sd, p: str, **kw: int) -> torch.Tensor:
    return F.conv2d(x, sd[f"{p}.weight"], sd.get(f"{p}.bias"), **kw)


def attention(x: torch.Tensor, sd: Sd, p: str, heads: int, sr: int, H: int, W: int) -> torch.Tensor:
    B, N, C = x.shape
    q = lin(x, sd, f"{p}.q").reshape(B, N, heads, C // heads).permute(0, 2, 1, 3)
    if sr > 1:
        x_ = x.permute(0, 2, 1).reshape(B, C, H, W)
        x_ = conv(x_, sd, f"{p}.sr", stride=sr).reshape(B, C, -1).permute(0, 2, 1)
        x_ = ln(x_, sd, f"{p}.norm", 1e-5)
        kv = lin(x_, sd, f"{p}.kv").reshape(B, -1, 2, heads, C // heads).permute(2, 0, 3, 1, 4)
    else:
        kv = lin(x, sd, f"{p}.kv").reshape(B, -1, 2, heads, C // heads).permute(2, 0, 3, 1, 4)
    k, v = kv[0], kv[1]
    attn = ((q @ k.transpose(-2, -1)) * (C // heads) ** -0.5).softmax(dim=-1)
    return lin((attn @ v).transpose(1, 2).reshape(B, N, C), sd, f"{p}.proj")


def mix_ffn(x: torch.Tensor, sd: Sd, p: str, H: int, W: int) -> torch.Tensor:
    x = lin(x, sd, f"{p}.fc1")
    B, N, C = x.shape
    x = x.permute(0, 2, 1).reshape(B, C, H, W).contiguous()
    x = conv(x, sd, f"{p}.dwconv.dwconv", padding=1, groups=C).flatten(2).transpose(1, 2)
    return lin(F.gelu(x), sd, f"{p}.fc2")


def stage(x: torch.Tensor, sd: Sd, pre: str, s: int, heads: int, sr: int) -> torch.Tensor:
    B = x.shape[0]
    k, st = (7, 4) if s == 1 else (3, 2)
    x = conv(x, sd, f"{pre}patch_embed{s}.proj", stride=st, padding=k // 2)
    _, _, H, W = x.shape
    x = ln(x.flatten(2).transpose(1, 2), sd, f"{pre}patch_embed{s}.norm", 1e-5)
    b = 0
    while f"{pre}block{s}.{b}.norm1.weight" in sd:
        p = f"{pre}block{s}.{b}"
        x = x + attention(ln(x, sd, f"{p}.norm1", 1e-6), sd, f"{p}.attn", heads, sr, H, W)
        x = x + mix_ffn(ln(x, sd, f"{p}.norm2", 1e-6), sd, f"{p}.mlp", H, W)
        b += 1
    x = ln(x, sd, f"{pre}norm{s}", 1e-6)
    return x.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous()


def frm(x1: torch.Tensor, x2: torch.Tensor, sd: Sd, p: str) -> tuple[torch.Tensor, torch.Tensor]:
    B, dim, H, W = x1.shape
    x = torch.cat((x1, x2), dim=1)
    y = torch.cat((F.adaptive_avg_pool2d(x, 1).view(B, 2 * dim), F.adaptive_max_pool2d(x, 1).view(B, 2 * dim)), dim=1)
    y = torch.sigmoid(lin(F.relu(lin(y, sd, f"{p}.channel_weights.mlp.0")), sd, f"{p}.channel_weights.mlp.2"))
    cw = y.view(B, 2 * dim, 1).reshape(B, 2, dim, 1, 1).permute(1, 0, 2, 3, 4)
    s = torch.sigmoid(conv(F.relu(conv(x, sd, f"{p}.spatial_weights.mlp.0")), sd, f"{p}.spatial_weights.mlp.2"))
    sw = s.reshape(B, 2, 1, H, W).permute(1, 0, 2, 3, 4)
    return x1 + 0.5 * cw[1] * x2 + 0.5 * sw[1] * x2, x2 + 0.5 * cw[0] * x1 + 0.5 * sw[0] * x1


def ffm(x1: torch.Tensor, x2: torch.Tensor, sd: Sd, p: str, heads: int) -> torch.Tensor:
    B, C, H, W = x1.shape
    x1, x2 = x1.flatten(2).transpose(1, 2), x2.flatten(2).transpose(1, 2)
    y1, u1 = F.relu(lin(x1, sd, f"{p}.cross.channel_proj1")).chunk(2, dim=-1)
    y2, u2 = F.relu(lin(x2, sd, f"{p}.cross.channel_proj2")).chunk(2, dim=-1)
    N = u1.shape[1]
    q1 = u1.reshape(B, -1, heads, C // heads).permute(0, 2, 1, 3)
    q2 = u2.reshape(B, -1, heads, C // heads).permute(0, 2, 1, 3)
    k1, v1 = lin(u1, sd, f"{p}.cross.cross_attn.kv1").reshape(B, -1, 2, heads, C // heads).permute(2, 0, 3, 1, 4)
    k2, v2 = lin(u2, sd, f"{p}.cross.cross_attn.kv2").reshape(B, -1, 2, heads, C // heads).permute(2, 0, 3, 1, 4)
    scale = (C // heads) ** -0.5
    ctx1 = ((k1.transpose(-2, -1) @ v1) * scale).softmax(dim=-2)
    ctx2 = ((k2.transpose(-2, -1) @ v2) * scale).softmax(dim=-2)
    v1 = (q1 @ ctx2).permute(0, 2, 1, 3).reshape(B, N, C)
    v2 = (q2 @ ctx1).permute(0, 2, 1, 3).reshape(B, N, C)
    o1 = ln(x1 + lin(torch.cat((y1, v1), -1), sd, f"{p}.cross.end_proj1"), sd, f"{p}.cross.norm1", 1e-5)
    o2 = ln(x2 + lin(torch.cat((y2, v2), -1), sd, f"{p}.cross.end_proj2"), sd, f"{p}.cross.norm2", 1e-5)
    m = torch.cat((o1, o2), dim=-1).permute(0, 2, 1).reshape(B, 2 * C, H, W)
    e = conv(m, sd, f"{p}.channel_emb.channel_embed.0")
    e = F.relu(conv(e, sd, f"{p}.channel_emb.channel_embed.1", padding=1, groups=C))
    e = bn(conv(e, sd, f"{p}.channel_emb.channel_embed.3"), sd, f"{p}.channel_emb.channel_embed.4")
    return bn(conv(m, sd, f"{p}.channel_emb.residual") + e, sd, f"{p}.channel_emb.norm")


def decoder(feats: list[torch.Tensor], sd: Sd, p: str, eps: float) -> torch.Tensor:
    c1 = feats[0]
    n = c1.shape[0]
    maps = []
    for k in (4, 3, 2, 1):
        c = feats[k - 1]
        m = lin(c.flatten(2).transpose(1, 2), sd, f"{p}.linear_c{k}.proj").permute(0, 2, 1).reshape(n, -1, *c.shape[2:])
        maps.append(F.interpolate(m, size=c1.size()[2:], mode="bilinear", align_corners=False) if k > 1 else m)
    x = F.relu(bn(conv(torch.cat(maps, dim=1), sd, f"{p}.linear_fuse.0"), sd, f"{p}.linear_fuse.1", eps))
    return conv(x, sd, f"{p}.linear_pred")


def wsp(x: torch.Tensor, log_w: torch.Tensor | None = None) -> torch.Tensor:
    b, c = x.shape[0], x.shape[1]
    x = x.view(b, c, -1)
    log_w = torch.zeros((b, 1, x.shape[-1])) if log_w is None else log_w.view(b, 1, -1)
    log_w = F.log_softmax(log_w, dim=-1)
    w = torch.exp(log_w)
    return torch.cat((-torch.logsumexp(log_w - x, dim=-1), torch.logsumexp(log_w + x, dim=-1),
                      torch.sum(w * x, dim=-1), torch.sum(w * x * x, dim=-1)), dim=1)


def official_forward(rgb: torch.Tensor, sd: Sd, heads: tuple[int, ...], srs: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """myEncoderDecoder.forward in eval mode → (out, conf, det, modal_x)."""
    x = rgb  # make_net's Sequential: conv (weight), BatchNorm (running stats) or ReLU (no parameters)
    for i in range(1 + max(int(k.split(".")[1]) for k in sd if k.startswith("dncnn."))):
        if f"dncnn.{i}.running_mean" in sd:
            x = bn(x, sd, f"dncnn.{i}")
        elif f"dncnn.{i}.weight" in sd:
            x = conv(x, sd, f"dncnn.{i}", padding=1)
        else:
            x = F.relu(x)
    modal_x = torch.tile(x, (3, 1, 1))
    mean, std = torch.Tensor([0.485, 0.456, 0.406]), torch.Tensor([0.229, 0.224, 0.225])
    r = (rgb - mean[None, :, None, None]) / std[None, :, None, None]
    e = modal_x
    outs = []
    for s in range(1, 5):
        r, e = stage(r, sd, "backbone.", s, heads[s - 1], srs[s - 1]), stage(e, sd, "backbone.extra_", s, heads[s - 1], srs[s - 1])
        r, e = frm(r, e, sd, f"backbone.FRMs.{s - 1}")
        outs.append(ffm(r, e, sd, f"backbone.FFMs.{s - 1}", heads[s - 1]))
    out = F.interpolate(decoder(outs, sd, "decode_head", 1e-3), size=rgb.shape[2:], mode="bilinear", align_corners=False)
    conf = F.interpolate(decoder(outs, sd, "decode_head_conf", 1e-5), size=rgb.shape[2:], mode="bilinear",
                         align_corners=False)
    f1 = wsp(conf).view(out.shape[0], -1)
    f2 = wsp(out[:, 1:2, :, :] - out[:, 0:1, :, :], F.logsigmoid(conf)).view(out.shape[0], -1)
    det = lin(F.relu(lin(torch.cat((f1, f2), -1), sd, "detection.0")), sd, "detection.3")
    return out, conf, det, modal_x


def random_state(model: TruFor, seed: int = 0) -> Sd:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in model.net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            state[k] = v.clone()
        elif k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=g) + 0.5
        elif v.ndim > 1:  # fan-in scaled, so activations stay O(1) and the comparison is sensitive
            state[k] = torch.randn(v.shape, generator=g) / v[0].numel() ** 0.5
        elif k.endswith("weight"):
            state[k] = 1.0 + 0.1 * torch.randn(v.shape, generator=g)
        else:
            state[k] = 0.1 * torch.randn(v.shape, generator=g)
    return state


@pytest.fixture(scope="module")
def official_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Sd]:
    state = random_state(create_model("trufor:tiny"))
    path = tmp_path_factory.mktemp("trufor") / "trufor.pth.tar"
    torch.save({"epoch": 99, "state_dict": state}, path)
    return path, state


TINY_HEADS, TINY_SRS = TruFor.configs["tiny"].encoder.num_heads, TruFor.configs["tiny"].encoder.sr_ratios


@pytest.mark.parametrize("shape", [(37, 53), (64, 64), (29, 90)])
def test_forward_and_predictions_match_the_official_computation(official_file: tuple[Path, Sd],
                                                                shape: tuple[int, int]) -> None:
    path, state = official_file
    model = create_model("trufor:tiny", weights=path)
    image = np.random.default_rng(shape[0]).integers(0, 256, (*shape, 3), dtype=np.uint8)
    rgb = torch.tensor(image.transpose(2, 0, 1), dtype=torch.float)[None] / 256.0  # data_core.py
    with torch.no_grad():
        ours = model.net(rgb)
        ref = official_forward(rgb, state, TINY_HEADS, TINY_SRS)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape and (a - b).abs().max() <= 1e-4
    assert all(0.01 < float(t.std()) < 10 for t in (ref[0], ref[1], ref[3]))  # O(1), non-degenerate maps
    pred = model.predict([image])[0]
    ref_map = F.softmax(ref[0][0], dim=0)[1].numpy()  # trufor_test.py
    assert pred.mask is not None and pred.mask.shape == shape
    assert np.abs(pred.mask - ref_map).max() <= 1e-4
    assert pred.probs[1] == pytest.approx(float(torch.sigmoid(ref[2]).item()), abs=1e-5)
    conf = model.confidence(image)
    assert np.abs(conf - torch.sigmoid(ref[1][0, 0]).numpy()).max() <= 1e-4


def test_predictions_carry_the_confidence_map_of_the_same_forward_pass() -> None:
    """``Prediction.confidence`` is ``sigmoid(conf)`` of the predict pass (batched images of one shape
    included), equal to :meth:`TruFor.confidence` on the same image; resized with the mask under
    ``max_side``; a valid prediction under ``Prediction.problem``."""
    from bench.model import resize_mask

    torch.manual_seed(0)
    model = create_model("trufor:tiny")
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((37, 53, 3), (37, 53, 3), (64, 41, 3))]
    for image, pred in zip(images, model.predict(images)):
        conf = model.confidence(image)
        assert pred.confidence is not None and pred.confidence.dtype == np.float32
        assert pred.confidence.shape == pred.mask.shape == image.shape[:2]
        assert np.abs(pred.confidence - conf).max() <= 1e-6 and 0.0 <= conf.min() and conf.max() <= 1.0
        assert float(conf.std()) > 1e-4 and pred.problem(2, image.shape[:2]) is None
    small = create_model("trufor:tiny", max_side=48)
    small.net.load_state_dict(model.net.state_dict())
    image = images[2]
    pred = small.predict([image])[0]
    assert pred.confidence.shape == (64, 41)
    expected = resize_mask(torch.from_numpy(small.confidence(image)), (64, 41), small.mask_interpolation)
    assert np.abs(pred.confidence - expected).max() <= 1e-6


def test_preprocess_divides_by_256_at_full_resolution() -> None:
    model = create_model("trufor:tiny")
    image = np.full((31, 33, 3), 255, np.uint8)
    x = model.preprocess(image)
    assert tuple(x.shape) == (3, 31, 33) and float(x.max()) == pytest.approx(255 / 256)
    assert model.input_policy.scale == 256.0 and model.input_policy.resize is None
    small = create_model("trufor:tiny", max_side=64)
    assert tuple(small.preprocess(np.zeros((40, 80, 3), np.uint8)).shape) == (3, 32, 64)
    assert small.predict([np.zeros((40, 80, 3), np.uint8)])[0].mask.shape == (40, 80)
    with pytest.raises(ValueError, match="at least 29 px"):
        model.preprocess(np.zeros((28, 100, 3), np.uint8))
    assert tuple(model.preprocess(np.zeros((29, 29, 3), np.uint8)).shape) == (3, 29, 29)
    assert model.predict([np.zeros((29, 31, 3), np.uint8)])[0].mask.shape == (29, 31)
    with pytest.raises(UserError, match="max_side"):
        create_model("trufor:tiny", max_side=3)


def one_line_error(path: Path, config: str = "trufor:tiny") -> str:
    with pytest.raises(UserError) as err:
        create_model(config, weights=path)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_wrong_files_are_refused_with_one_line(official_file: tuple[Path, Sd], tmp_path: Path) -> None:
    _, state = official_file
    torch.save(state, tmp_path / "raw.pth")
    assert "expected a checkpoint with key 'state_dict'" in one_line_error(tmp_path / "raw.pth")
    broken = {k: v for k, v in state.items() if not k.startswith("detection.3")}
    broken["module.detection.0.weight"] = state["detection.0.weight"]
    torch.save({"state_dict": broken}, tmp_path / "broken.pth.tar")
    msg = one_line_error(tmp_path / "broken.pth.tar")
    assert "missing keys: detection.3.bias, detection.3.weight" in msg and "unexpected keys: module.detection.0.weight" in msg
    assert "shape mismatches" in one_line_error(official_file[0], "trufor")
    (tmp_path / "d").mkdir()
    assert "trufor.pth.tar" in one_line_error(tmp_path / "d")


# ------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def sid_mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.sidmini import SMALL_PER_CLASS, SMALL_SIZE, build_sid_mini

    return build_sid_mini(tmp_path_factory.mktemp("sidmini"), per_class=SMALL_PER_CLASS, size=SMALL_SIZE)


def test_trufor_protocol_conventions_are_recorded_in_results(tmp_path: Path, sid_mini_root: Path) -> None:
    """TruFor's published evaluation as named metric parameters: recorded, and never the default."""
    from importlib.resources import files

    from bench.cli import main

    base = Path(str(files("protocols") / "sid_mini_localization.yaml"))
    proto = tmp_path / "trufor_protocol.yaml"
    proto.write_text(f"include: {base}\nname: sid_mini_localization_trufor\nmetrics:\n"
                     "  - name: localization\n    params: {polarity: best_of, border_exclusion: [7, 5]}\n")
    out = tmp_path / "run"
    assert main(["run", str(proto), "--model", "trufor:tiny", "--data-root", f"sid_mini={sid_mini_root}",
                 "--out", str(out), "--limit", "6"]) == 0
    convention = json.loads((out / "results.json").read_text())["entries"][0]["metrics"]["localization"]["convention"]
    assert "optimistic" in convention["polarity"] and "7 px inside / 5 px outside" in convention["border_exclusion"]
    assert convention["pred_resize"].startswith("none") and "confidence_weighting" not in convention


def test_stored_confidence_weights_the_localization_metric(tmp_path: Path, sid_mini_root: Path) -> None:
    """The run stores TruFor's confidence maps; ``confidence_weighting: true`` scores from them
    (recorded in results.json) and moves the numbers."""
    from bench.cli import main
    from bench.evaluation.scorer import score_run
    from bench.evaluation.store import PredictionStore

    out = tmp_path / "run"
    assert main(["run", "sid_mini_localization", "--model", "trufor:tiny", "--data-root", f"sid_mini={sid_mini_root}",
                 "--out", str(out), "--limit", "6"]) == 0
    rows = PredictionStore(out / "predictions").read().to_pylist()
    assert all(r["confidence"] is not None for r in rows if r["error"] is None)
    plain = json.loads((out / "results.json").read_text())["entries"][0]["metrics"]["localization"]
    weighted = score_run(out, metric_options={"localization": {"confidence_weighting": True}})
    result = weighted.entries[0].metrics["localization"]
    assert "confidence_weighting" in result.convention and result.skipped is None
    assert weighted.protocol.resolved["metrics"][0]["params"] == {"confidence_weighting": True}
    assert result.values["pixel_auc"].value != pytest.approx(plain["values"]["pixel_auc"]["value"], abs=1e-9)


@pytest.mark.parametrize("protocol", ["sid_mini_localization",
                                      pytest.param("sid_mini_robustness", marks=pytest.mark.slow)])
def test_cli_runs(tmp_path: Path, sid_mini_root: Path, protocol: str) -> None:
    from bench.cli import main

    out = tmp_path / protocol
    args = ["run", protocol, "--model", "trufor:tiny", "--data-root", f"sid_mini={sid_mini_root}",
            "--out", str(out), "--limit", "6"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    entry = results["entries"][0]
    assert entry["n"] == 6 and entry["n_errors"] == 0
    values = entry["metrics"]["localization"]["values"]
    assert 0.0 <= values["pixel_auc"]["value"] <= 1.0 and values["n_images"]["value"] == 2


# ------------------------------------------------------------------ training recipe (phase 2 / 3)
def test_dice_entropy_matches_a_hand_computation() -> None:
    from baselines.trufor_training import dice_entropy

    g = torch.Generator().manual_seed(0)
    score = torch.randn(2, 2, 3, 4, generator=g)
    target = torch.tensor([[[0, 1, 1, -1], [0, 0, 1, -1], [1, 0, 0, -1]], [[0, 0, 0, 0], [0, 1, 0, 0], [-1, -1, 0, 0]]])
    weight = torch.tensor([0.5, 2.5])
    s, t = score.numpy().astype(np.float64), target.numpy()
    logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    valid = t >= 0
    idx = np.where(valid, t, 0)
    picked = np.take_along_axis(logp, idx[:, None], axis=1)[:, 0]
    w = weight.numpy()[idx]
    ce = -(w * picked)[valid].sum() / w[valid].sum()
    p1 = np.exp(logp[:, 1])
    dice = [(2 * (p1[b] * (t[b] == 1) * valid[b]).sum()) / ((p1[b] ** 2 * valid[b]).sum() + ((t[b] == 1) * valid[b]).sum() + 1e-5)
            for b in range(2)]
    expected = 0.3 * ce + 0.7 * (1 - np.mean(dice))
    assert float(dice_entropy(score, target, weight)) == pytest.approx(expected, rel=1e-5)


def test_confidence_targets_and_detection_rule() -> None:
    from scipy.ndimage import maximum_filter, minimum_filter

    from baselines.trufor_training import confidence_mse, detection_bce, poly_lr, tcp_targets

    gt = np.zeros((1, 30, 34), np.int64)
    gt[0, 4:26, 10:30] = 1
    gt[0, 0:3, 0:3] = 1
    pristine, forged = tcp_targets(torch.from_numpy(gt))
    g = gt[0] == 1
    assert np.array_equal(forged[0].numpy() > 0, minimum_filter(g, 15, mode="constant", cval=1))
    assert np.array_equal(pristine[0].numpy() > 0, ~maximum_filter(g, 11, mode="constant", cval=0))
    score = torch.randn(1, 2, 30, 34)
    conf = torch.randn(1, 1, 30, 34)
    prob = torch.softmax(score, 1)[0].numpy()
    keep_f, keep_p = forged[0].numpy() > 0, pristine[0].numpy() > 0
    tcp = np.concatenate([prob[1][keep_f], prob[0][keep_p]])
    c = 1 / (1 + np.exp(-conf[0, 0].numpy()))
    expected = np.mean((np.concatenate([c[keep_f], c[keep_p]]) - tcp) ** 2)
    assert float(confidence_mse(score, torch.from_numpy(gt), conf)) == pytest.approx(expected, rel=1e-5)
    target = torch.zeros(2, 5, 5, dtype=torch.long)
    target[0, 0, :3] = 1  # 3 forged pixels: real
    target[1, 0, :4] = 1  # 4: fake
    det = torch.tensor([[0.3], [-0.2]])
    sig = 1 / (1 + np.exp(-det[:, 0].numpy()))
    expected_det = np.mean([-(0.5 / 0.3) * np.log(1 - sig[0]), -(0.5 / 0.7) * np.log(sig[1])])
    assert float(detection_bce(det, target)) == pytest.approx(expected_det, rel=1e-5)
    assert [poly_lr(0.005, i, 100, 0.9) for i in (0, 50, 100)] == pytest.approx([0.005, 0.005 * 0.5**0.9, 0.0])


class _Split:
    """A random-access split of small synthetic samples (real, tampered with a box mask)."""

    def __init__(self, n: int, split: str, seed: int = 0) -> None:
        from bench.types import Sample

        rng = np.random.default_rng(seed)
        self.split, self.samples = split, []
        for i in range(n):
            img = rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)
            mask = None
            if i % 2:
                mask = np.zeros((40, 44), bool)
                mask[5:25, 8:30] = True
            self.samples.append(Sample(f"{split}/{i}", img, 2 if i % 2 else 0, mask))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):  # noqa: ANN204
        return self.samples[i]

    def iter_samples(self):  # noqa: ANN201
        return iter(self.samples)


@pytest.mark.parametrize("phase", [2, 3])
def test_each_phase_trains_only_its_modules(tmp_path: Path, phase: int) -> None:
    from bench.model import TrainOptions

    model = create_model("trufor:tiny", train_phase=phase)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    report = model.fit(_Split(6, "train"), _Split(2, "validation", 1), TrainOptions(out_dir=tmp_path, max_steps=2))
    assert report["steps"] == 2 and report["recipe"]["phase"] == phase
    after = model.net.state_dict()
    changed = {k.split(".")[0] for k, v in after.items() if not torch.equal(v, before[k])}
    assert changed == {"backbone", "decode_head"} if phase == 2 else changed == {"decode_head_conf", "detection"}
    best = create_model("trufor:tiny", weights=tmp_path / "best")
    assert best.predict([np.zeros((32, 32, 3), np.uint8)])[0].mask.shape == (32, 32)
    with pytest.raises(UserError, match="test split"):
        model.fit(_Split(2, "train"), _Split(2, "test"), TrainOptions(out_dir=tmp_path / "x", max_steps=1))
    with pytest.raises(UserError, match="train_phase"):
        create_model("trufor:tiny", train_phase=1)


def test_cli_train_phase_2_on_sid_mini(tmp_path: Path, sid_mini_root: Path) -> None:
    from bench.cli import main

    out = tmp_path / "train"
    args = ["train", "--model", "trufor:tiny", "--dataset", "sid_mini", "--root", str(sid_mini_root),
            "--out", str(out), "--max-steps", "2", "--batch-size", "4"]
    assert main(args) == 0
    saved = json.loads((out / "best" / "config.json").read_text())
    assert saved["model"] == "trufor" and saved["training"]["phase"] == 2
    model = create_model("trufor:tiny", weights=out / "best")
    assert model.predict([np.zeros((33, 35, 3), np.uint8)])[0].probs.sum() == pytest.approx(1.0)
