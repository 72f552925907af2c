"""HiFi-Net: hierarchical fine-grained forgery detection and localization (model plugin ``hifi_net``).

Paper: Guo, Liu, Ren, Grosz, Masi, Liu, "Hierarchical Fine-Grained Image Forgery Detection and
Localization", CVPR 2023. Official code: https://github.com/CHELSEA234/HiFi_IFDL (re-written here).

Network (``models/seg_hrnet.py`` + ``models/NLCDetection_api.py`` / ``NLCDetection_loc.py``):
- FENet: the stride-1 HRNet-W18 of :mod:`baselines.hrnet` with **four branches in stages 2-4**
  (18/36/72/144 channels, two basic blocks each) and a second stem (``conv1fre``/``bn1fre``, the
  multi-scale Laplacian ``LaPlacianMs`` (Gaussian 3×3, σ = 2, 4, 8, no padding; down by 1/σ, up
  again, bilinear align_corners=False; the residuals → 1×1 conv+BN+ReLU), ``conv2fre``/``bn2fre``)
  concatenated with the RGB stem and merged by a grouped 1×1 conv (``conv_1x1_merge``).
- SegNet (``NLCDetection``): hierarchical classification heads with 3, 5, 7 and 14 classes, each
  level's logits gated by the coarser level's softmax, and a non-local localisation head with
  partial convolutions. Two variants, as the two official heads:
  ``api`` (``HiFi_Net.py``, detection + localisation; 18-d pixel features ``x + γ W_s(y)``) and
  ``loc`` (``HiFi_Net_loc.py``; features resized to 256², an FPN (``FPN_LOC``) to 64 channels,
  18-d pixel features ``sigmoid(conv_1(·))``).
- ``forward`` returns ``(pixel features (B, 18, S, S), mask_binary (B, S, S), out0 (3), out1 (5),
  out2 (7), out3 (14))`` as the official SegNet.

Inference policy (``HiFi_Net.py::_transform_image``): PIL resize to 256×256 bicubic, /255, no mean/std.
- detection: ``p_fake = 1 − softmax(out3)[0]`` (class 0 = real; ``one_hot_label_new``), so
  probs = [softmax(out3)[0], 1 − softmax(out3)[0]];
- localisation, ``mask_rule="distance"`` (``HiFi_Net.localize``): the L2 distance
  (``PairwiseDistance``, eps 1e-6) of each pixel feature to the centre of ``radius_center.pth``,
  binarised at **2.3** (``dist >= 2.3`` → 1); ``mask_rule="ce"`` (``HiFi_Net_loc.py --loss_type ce``):
  ``mask_binary`` (a sigmoid probability; the official script thresholds it at 0.5 for F1).
  The 256² mask is resized to the image size by the stated ``mask_interpolation`` (bilinear by
  default, or nearest), recorded as ``mask_upsampling`` in results.json.

Weights (``--weights DIR``): the official files, ``<DIR>/HRNet/<N>.pth`` and
``<DIR>/NLCDetection/<N>.pth`` (``{'model': state_dict}`` saved from ``nn.DataParallel``, keys
``module.*``) with ``N`` = 750001 (``default``, api head), 225000 (``loc_ce``) or 315000
(``loc_dm``), or the repository root holding ``weights/HRNet/...``; the distance rule also needs
``radius_center.pth`` (``{'center': (18,), 'radius': ()}``: ``center/`` for the api head,
``center_loc/`` for the loc head, committed in the repository). Every file loads strictly: the
official ``restore_weight_helper`` swallows any mismatch in a ``try/except`` (issue #19); ours
names every missing and unexpected key. Training: the repository has no training script for
these networks (only an application's deepfake trainer); none is offered here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from baselines.hrnet import HRNet, HRNetConfig, StageSpec
from bench.checkpoint import load_raw, load_strict, pick, strip_prefix
from bench.errors import UserError
from bench.model import Capability, Detector, DetectorOutput, InputPolicy, TrainOptions
from bench.types import LabelSpace

HEADS = ("api", "loc")
MASK_RULES = ("distance", "ce")
MASK_INTERPOLATIONS = ("bilinear", "nearest")
#: hierarchical gating: level k's logits are scaled by (1 + softmax of level k+1)[index]
GATE_3 = (0, 1, 1, 2, 2)  # 3 → 5 classes
GATE_2 = (0, 1, 1, 2, 2, 3, 4)  # 5 → 7 classes
GATE_1 = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4, 4, 4, 4)  # 7 → 14 classes (the official code repeats index 4)


def hifi_hrnet_w18() -> HRNetConfig:
    """``models/seg_hrnet_config.py``: stride-1 stem 64, bottleneck 64→256, four branches in stages 2-4."""
    four = StageSpec(1, (2, 2, 2, 2), (18, 36, 72, 144))
    return HRNetConfig(stem_width=64, stage1=StageSpec(1, (2,), (64,), "bottleneck"), stage2=four, stage3=four,
                       stage4=four)


@dataclass(frozen=True)
class HiFiConfig:
    """One HiFi-Net configuration (``default`` = the official detection/localisation API)."""

    backbone: HRNetConfig = field(default_factory=hifi_hrnet_w18)
    head: str = "api"
    mask_rule: str = "distance"
    distance_threshold: float = 2.3
    input_size: int = 256  # network input and crop_size of the loc head
    loc_dim: int = 64  # the loc head's FPN width (``feat_dim``)
    official_iteration: int = 750001

    def __post_init__(self) -> None:
        if self.head not in HEADS or self.mask_rule not in MASK_RULES:
            raise ValueError(f"head must be one of {HEADS} and mask_rule one of {MASK_RULES}")
        if self.input_size % 8:
            raise ValueError(f"input_size must be a multiple of 8, got {self.input_size}")


class GaussianSmoothing(nn.Module):
    """Depthwise k×k Gaussian (σ = ``sigma``, sum 1), **no padding**; the kernel is buffer ``weight``."""

    def __init__(self, channels: int, kernel_size: int, sigma: float) -> None:
        super().__init__()
        grid = torch.arange(kernel_size, dtype=torch.float32) - (kernel_size - 1) / 2
        g = torch.exp(-((grid / sigma) ** 2) / 2) / (sigma * math.sqrt(2 * math.pi))
        kernel = g[:, None] * g[None, :]
        self.register_buffer("weight", (kernel / kernel.sum()).expand(channels, 1, -1, -1).clone())
        self.groups = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, groups=self.groups)


class LaPlacianMs(nn.Module):
    """Multi-scale Laplacian residuals ``x − up(down(blur_s(x), 1/s))`` for each s, then 1×1 conv+BN+ReLU."""

    def __init__(self, channels: int, kernel_size: int = 3, scales: tuple[int, ...] = (2, 4, 8)) -> None:
        super().__init__()
        self.scales = scales
        self.smoothing = nn.ModuleDict({f"scale-{s}": GaussianSmoothing(channels, kernel_size, s) for s in scales})
        self.conv_1x1 = nn.Sequential(nn.Conv2d(channels * len(scales), channels, 1, bias=False),
                                      nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.Dropout(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        diffs = []
        for s in self.scales:
            sm = self.smoothing[f"scale-{s}"](x)
            sm = F.interpolate(sm, scale_factor=1 / s, mode="bilinear", align_corners=False)
            sm = F.interpolate(sm, size=x.shape[-2:], mode="bilinear", align_corners=False)
            diffs.append(x - sm)
        return self.conv_1x1(torch.cat(diffs, dim=1))


class HiFiHRNet(HRNet):
    """FENet: :class:`HRNet` whose stem is the RGB stem ⊕ the Laplacian frequency stem, merged 128 → 64."""

    def __init__(self, config: HRNetConfig) -> None:
        super().__init__(config)
        w = config.stem_width
        self.conv1fre = nn.Conv2d(3, w, 3, 1, 1, bias=False)
        self.bn1fre = nn.BatchNorm2d(w, momentum=0.01)
        self.conv2fre = nn.Conv2d(w, w, 3, 1, 1, bias=False)
        self.bn2fre = nn.BatchNorm2d(w, momentum=0.01)
        self.laplacian = LaPlacianMs(w)
        self.conv_1x1_merge = nn.Sequential(nn.Conv2d(2 * w, w, 1, bias=False, groups=2), nn.BatchNorm2d(w),
                                            nn.ReLU(inplace=True), nn.Dropout(0.2))

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        fre = self.laplacian(F.relu(self.bn1fre(self.conv1fre(x))))
        fre = F.relu(self.bn2fre(self.conv2fre(fre)))
        return self.conv_1x1_merge(torch.cat([super().stem(x), fre], dim=1))


class PartialConv(nn.Module):
    """Partial convolution: ``(W·(M⊙X)) / sum(M)`` (+ bias) where the mask window is non-empty, else 0."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.input_conv = nn.Conv2d(cin, cout, kernel_size, stride)
        self.mask_conv = nn.Conv2d(cin, cout, kernel_size, stride, bias=False)
        nn.init.constant_(self.mask_conv.weight, 1.0)
        self.mask_conv.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.input_conv(x)
        bias = self.input_conv.bias.view(1, -1, 1, 1)
        with torch.no_grad():
            window = self.mask_conv(mask)
        holes = window == 0
        out = ((out - bias) / window.masked_fill(holes, 1.0) + bias).masked_fill(holes, 0.0)
        return out, (~holes).to(out.dtype)


class NonLocalMask(nn.Module):
    """Non-local spatial attention on the (reshaped) finest feature, then pixel features and a mask.

    ``api``: features ``z = x + γ W_s(y)``, ``mask = sigmoid(getmask(z))``; ``loc``: features
    ``f = conv_1(z)`` (18 channels), ``mask = sigmoid(conv_2(relu(f)))`` and the returned features are
    ``sigmoid(f)``. The mask-weighted image goes through three partial convolutions (stride 2).
    Returns (pconv output (B, 1, s', s'), pixel features, mask (B, H, W)).
    """

    def __init__(self, channels: int, reduce_scale: int, variant: str) -> None:
        super().__init__()
        self.r, self.variant = reduce_scale, variant
        self.ic = channels * reduce_scale**2
        self.g, self.theta, self.phi = (nn.Conv2d(self.ic, self.ic, 1) for _ in range(3))
        self.W_s = nn.Conv2d(channels, channels, 1)
        self.gamma_s = nn.Parameter(torch.ones(1))
        if variant == "api":
            self.getmask = nn.Sequential(nn.Conv2d(channels, 16, 3, 1, 1), nn.ReLU(), nn.Conv2d(16, 1, 3, 1, 1))
        else:
            self.conv_1 = nn.Conv2d(channels, 18, 3, 1, 1)
            self.conv_2 = nn.Conv2d(18, 1, 3, 1, 1)
        self.Pconv_1, self.Pconv_2, self.Pconv_3 = PartialConv(3, 3), PartialConv(3, 3), PartialConv(3, 1)

    def forward(self, x: torch.Tensor, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        x1 = x.reshape(b, self.ic, h // self.r, w // self.r)
        g = self.g(x1).flatten(2).transpose(1, 2)
        attn = torch.softmax(self.theta(x1).flatten(2).transpose(1, 2) @ self.phi(x1).flatten(2), dim=-1)
        y = (attn @ g).transpose(1, 2).contiguous().view(b, c, h, w)
        z = x + self.gamma_s * self.W_s(y)
        if self.variant == "api":
            feats, mask = z, torch.sigmoid(self.getmask(z))
        else:
            f = self.conv_1(z)
            feats, mask = torch.sigmoid(f), torch.sigmoid(self.conv_2(F.relu(f)))
        m3 = mask.repeat(1, 3, 1, 1)
        p, m = self.Pconv_1(img * m3, m3)
        p, m = self.Pconv_2(p, m)
        p, _ = self.Pconv_3(p, m)
        return p, feats, mask[:, 0]


class BranchCLS(nn.Module):
    """One classification level: two 3×3 convs (→32→18, ReLU), global average pool, BatchNorm1d(18), Linear.

    Returns (logits, gate scores): the scores are ``leaky_relu(logits, 0.2)`` where positive, else −9e15.
    """

    def __init__(self, cin: int, classes: int) -> None:
        super().__init__()
        self.branch_cls = nn.Sequential(nn.Conv2d(cin, 32, 3, 1, 1), nn.ReLU(inplace=True),
                                        nn.Conv2d(32, 18, 3, 1, 1), nn.ReLU(inplace=True))
        self.bn = nn.BatchNorm1d(18)
        self.fc = nn.Linear(18, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.fc(self.bn(self.branch_cls(x).mean(dim=(2, 3))))
        pro = F.leaky_relu(logits, 0.2)
        return logits, torch.where(pro > 0, pro, torch.full_like(pro, -9e15))


def smooth(cin: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, dim, 1), nn.Conv2d(dim, dim, 3, 1, 1))


def fpn_step(dim: int, upsample: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(dim, dim, 3, 1, 1, bias=False), nn.BatchNorm2d(dim), nn.ReLU()]
    if upsample:
        layers.append(nn.Upsample(scale_factor=2))  # nearest, as the official FPN_loc
    return nn.Sequential(*layers)


class FPNLoc(nn.Module):
    """The loc head's ``FPN_LOC``: 1×1+3×3 smoothing of each scale, top-down sum with nearest ×2 upsampling."""

    def __init__(self, channels: tuple[int, ...], dim: int) -> None:
        super().__init__()
        for k, c in enumerate(channels, start=1):
            setattr(self, f"smooth_s{k}", smooth(c, dim))
            setattr(self, f"fpn{k}", fpn_step(dim, upsample=k > 1))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        y = self.fpn4(self.smooth_s4(feats[3]))
        for k in (3, 2, 1):
            y = getattr(self, f"fpn{k}")(getattr(self, f"smooth_s{k}")(feats[k - 1]) + y)
        return y


def gate(logits: torch.Tensor, coarse_scores: torch.Tensor, index: tuple[int, ...]) -> torch.Tensor:
    """``logits + logits · softmax(coarse)[:, index]`` (the official hierarchical dependency)."""
    return logits + logits * torch.softmax(coarse_scores, dim=1)[:, list(index)]


def up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)


class HiFiHead(nn.Module):
    """SegNet (``NLCDetection``, api or loc). ``forward(feats, img)`` → (features, mask, out0..out3)."""

    def __init__(self, channels: tuple[int, ...], variant: str, crop_size: int, loc_dim: int) -> None:
        super().__init__()
        self.variant, self.crop_size = variant, crop_size
        c1, c2, c3, c4 = channels
        fine = c1 if variant == "api" else loc_dim
        self.getmask = NonLocalMask(fine, 4, variant)
        if variant == "loc":
            self.FPN_LOC = FPNLoc(channels, loc_dim)
        self.branch_cls_level_1 = BranchCLS(c2 + c3 + c4 + fine + 1, 14)
        self.branch_cls_level_2 = BranchCLS(c2 + c3 + c4, 7)
        self.branch_cls_level_3 = BranchCLS(c3 + c4, 5)
        self.branch_cls_level_4 = BranchCLS(c4, 3)

    def forward(self, feats: list[torch.Tensor], img: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.variant == "loc":
            feats = [F.interpolate(f, size=(self.crop_size >> k,) * 2, mode="bilinear", align_corners=True)
                     for k, f in enumerate(feats)]
            img = F.interpolate(img, size=(self.crop_size,) * 2, mode="bilinear", align_corners=True)
            s1 = self.FPN_LOC(feats)
        else:
            s1 = feats[0]
        _, s2, s3, s4 = feats
        pconv, pixel_feats, mask = self.getmask(s1, img)
        pconv = up(pconv.detach(), s1)
        cls_4, pro_4 = self.branch_cls_level_4(s4)
        s3_in = torch.cat([up(s4, s3), s3], dim=1)
        cls_3, pro_3 = self.branch_cls_level_3(s3_in)
        cls_3 = gate(cls_3, pro_4, GATE_3)
        s2_in = torch.cat([up(s3_in, s2), s2], dim=1)
        cls_2, pro_2 = self.branch_cls_level_2(s2_in)
        cls_2 = gate(cls_2, pro_3, GATE_2)
        cls_1, _ = self.branch_cls_level_1(torch.cat([up(s2_in, s1), s1, pconv], dim=1))
        cls_1 = gate(cls_1, pro_2, GATE_1)
        return pixel_feats, mask, cls_4, cls_3, cls_2, cls_1


class HiFiNetwork(nn.Module):
    """FENet (``backbone``, the official ``HRNet`` files) + SegNet (``head``, the ``NLCDetection`` files)."""

    def __init__(self, config: HiFiConfig) -> None:
        super().__init__()
        self.backbone = HiFiHRNet(config.backbone)
        self.head = HiFiHead(config.backbone.out_channels, config.head, config.input_size, config.loc_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.head(self.backbone(x), x)


TINY_BACKBONE = HRNetConfig(
    stem_width=8,
    stage1=StageSpec(1, (1,), (8,), "basic"),
    stage2=StageSpec(1, (1, 1, 1, 1), (4, 8, 16, 32)),
    stage3=StageSpec(1, (1, 1, 1, 1), (4, 8, 16, 32)),
    stage4=StageSpec(1, (1, 1, 1, 1), (4, 8, 16, 32)),
    init_std=None,
)
#: ``tiny``: stem 8, a basic stage-1 block, widths 4/8/16/32 with one block, 64² input, loc width 8.
#: It uses the ``ce`` rule so that it runs from random weights (the distance rule needs the official
#: centre file); ``tiny_dm`` / ``tiny_loc_ce`` / ``tiny_loc_dm`` mirror the official variants.
TINY = HiFiConfig(backbone=TINY_BACKBONE, mask_rule="ce", input_size=64, loc_dim=8)
CONFIGS: dict[str, HiFiConfig] = {
    "default": HiFiConfig(),
    "loc_ce": HiFiConfig(head="loc", mask_rule="ce", official_iteration=225000),
    "loc_dm": HiFiConfig(head="loc", mask_rule="distance", official_iteration=315000),
    "tiny": TINY,
    "tiny_dm": replace(TINY, mask_rule="distance"),
    "tiny_loc_ce": replace(TINY, head="loc", official_iteration=225000),
    "tiny_loc_dm": replace(TINY, head="loc", mask_rule="distance", official_iteration=315000),
}
OFFICIAL_PARTS = {"HRNet": "backbone", "NLCDetection": "head"}


class HiFiNet(Detector):
    """HiFi-Net detector + localizer.

    Options: ``mask_interpolation`` (``bilinear`` default, or ``nearest``): how the 256² mask is
    resized to the image; ``iteration`` (int): the ``<N>.pth`` to load (default: the configuration's
    official one).
    """

    name = "hifi_net"
    label_space = LabelSpace.BINARY
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.DETECT, Capability.LOCALIZE})
    configs: ClassVar[dict[str, HiFiConfig]] = CONFIGS
    weights_help = (
        "The official HiFi-Net weights are linked (Google Drive) from the README of "
        "https://github.com/CHELSEA234/HiFi_IFDL; unpack them so that <DIR>/HRNet/<N>.pth and "
        "<DIR>/NLCDetection/<N>.pth exist (N = 750001 for default, 225000 loc_ce, 315000 loc_dm) and put the "
        "repository's center/radius_center.pth (center_loc/ for loc_dm) beside them, or pass the repository "
        "root with weights/ inside. See docs/localizers.md."
    )

    def build(self, config: HiFiConfig, mask_interpolation: str = "bilinear", iteration: int | None = None,
              **unknown: Any) -> None:
        if unknown:
            raise UserError(f"Unknown option(s) for hifi_net: {', '.join(sorted(unknown))}; "
                            "known: mask_interpolation, iteration")
        if mask_interpolation not in MASK_INTERPOLATIONS:
            raise UserError(f"hifi_net mask_interpolation must be one of {MASK_INTERPOLATIONS}, "
                            f"got {mask_interpolation!r}")
        if iteration is not None and (not isinstance(iteration, int) or iteration < 0):
            raise UserError(f"hifi_net iteration must be a non-negative integer, got {iteration!r}")
        self.mask_interpolation = mask_interpolation
        self.iteration = config.official_iteration if iteration is None else iteration
        self.net = HiFiNetwork(config)
        self.center: torch.Tensor | None = None

    # ------------------------------------------------------------------ weights
    def load_weights(self, path: Path) -> None:
        folder = path / "weights" if (path / "weights" / "HRNet").is_dir() else path
        if not path.is_dir() or not (folder / "HRNet").is_dir():
            raise UserError(f"{path} is not a HiFi-Net weights folder (expected HRNet/{self.iteration}.pth and "
                            f"NLCDetection/{self.iteration}.pth). {self.weights_help}")
        for stem, attr in OFFICIAL_PARTS.items():
            file = folder / stem / f"{self.iteration}.pth"
            if not file.is_file():
                raise UserError(f"{path}: missing {stem}/{self.iteration}.pth. {self.weights_help}")
            state = strip_prefix(pick(load_raw(file, allow_pickle=self.allow_pickle), "model", file), "module.")
            if stem == "NLCDetection":
                self._check_head_variant(state, file)
            load_strict(getattr(self.net, attr), state, file, limit=None)
        if self.config.mask_rule == "distance":
            self.center = self._load_center(path, folder)

    def _check_head_variant(self, state: dict[str, torch.Tensor], file: Path) -> None:
        """The api and loc heads share key names; a file of the other variant gets a pointed message."""
        is_loc = any(k.startswith("FPN_LOC.") for k in state)
        if is_loc != (self.config.head == "loc"):
            other = "loc (FPN_LOC.* keys; use hifi_net:loc_ce or hifi_net:loc_dm)" if is_loc else \
                "api (no FPN_LOC.* keys; use hifi_net or hifi_net:default)"
            own = set(self.net.head.state_dict())
            missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
            raise UserError(f"{file} holds the {other} head, not the {self.config.head} head of "
                            f"hifi_net:{self.config_name}; missing keys: {', '.join(missing) or 'none'}; "
                            f"unexpected keys: {', '.join(unexpected) or 'none'}")

    def _load_center(self, root: Path, folder: Path) -> torch.Tensor:
        sub = "center" if self.config.head == "api" else "center_loc"
        candidates = [folder / "radius_center.pth", root / sub / "radius_center.pth",
                      folder.parent / sub / "radius_center.pth"]
        file = next((p for p in candidates if p.is_file()), None)
        if file is None:
            raise UserError(f"{root}: the distance mask rule needs radius_center.pth ({sub}/ of the official "
                            f"repository) beside HRNet/ and NLCDetection/. {self.weights_help}")
        raw = load_raw(file, allow_pickle=self.allow_pickle)
        dim = self.net.head.getmask.W_s.out_channels if self.config.head == "api" else 18
        center = raw.get("center") if isinstance(raw, dict) else None
        if not isinstance(center, torch.Tensor) or center.shape != (dim,):
            raise UserError(f"{file}: expected {{'center': tensor ({dim},), 'radius': tensor}} (radius_center.pth)")
        return center.float()

    # ------------------------------------------------------------------ inference
    @property
    def input_policy(self) -> InputPolicy:
        s = self.config.input_size
        return InputPolicy(
            resize=s, resize_mode="square", interpolation="bicubic", scale=255.0, colour_order="RGB",
            notes=(f"official HiFi_Net.py: PIL resize to {s}x{s} bicubic, /255, no mean/std; p_fake = 1 - "
                   f"softmax(out3)[0]; mask rule {self.config.mask_rule!r}"
                   + (f" (feature distance to the centre >= {self.config.distance_threshold})"
                      if self.config.mask_rule == "distance" else " (sigmoid mask_binary)")),
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "iteration": self.iteration}

    def fit(self, train: Any, val: Any, options: TrainOptions) -> dict[str, Any]:
        """Refused: no official (or published non-official) recipe exists for these networks."""
        raise UserError("hifi_net has no official training recipe (CHELSEA234/HiFi_IFDL releases no training "
                        "script for these networks) and none is offered here; see docs/localizers.md")

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """RGB uint8 (H, W, 3) → float32 (3, S, S) in [0, 1]: PIL bicubic resize to S×S, /255."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        s = self.config.input_size
        if image.shape[:2] != (s, s):
            image = np.asarray(Image.fromarray(image).resize((s, s), resample=Image.Resampling.BICUBIC))
        return torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255.0)

    def forward(self, batch: torch.Tensor) -> DetectorOutput:
        """probs (B, 2) = [softmax(out3)[0], 1 − softmax(out3)[0]]; mask (B, S, S) by the configured rule."""
        pixel_feats, mask_binary, *_, out3 = self.net(batch)
        p_real = torch.softmax(out3.float(), dim=1)[:, 0]
        if self.config.mask_rule == "ce":
            mask = mask_binary
        else:
            if self.center is None:
                raise UserError("hifi_net: the distance mask rule needs the official radius_center.pth; "
                                "pass the official weights folder (--weights) or use a 'ce' configuration")
            dist = F.pairwise_distance(pixel_feats.permute(0, 2, 3, 1), self.center.to(pixel_feats))
            mask = (dist >= self.config.distance_threshold).to(pixel_feats.dtype)
        return DetectorOutput(probs=torch.stack([p_real, 1.0 - p_real], dim=1), mask=mask.float())
