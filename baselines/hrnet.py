"""HRNet backbone as PSCC-Net uses it: HRNet-W18-small-v2 with a stride-1 stem.

Origin: Wang et al., "Deep High-Resolution Representation Learning for Visual Recognition"
(TPAMI 2020); the variant here follows PSCC-Net's ``models/seg_hrnet.py`` and
``models/seg_hrnet_config.py`` (proteus1991/PSCC-Net, MIT licence), re-written for this harness.

What PSCC-Net changes w.r.t. the ImageNet HRNet-W18-small-v2:
- both stem convolutions have stride 1, so the four branches run at 1, 1/2, 1/4 and 1/8 of the
  input resolution (the ImageNet model starts at 1/4);
- stages 3 and 4 have one HighResolutionModule each (ImageNet small-v2: 3 and 2), and there is
  no classification head.

Module and parameter names match the official checkpoint keys (``conv1.weight``,
``layer1.0.conv1.weight``, ``stage4.0.fuse_layers.0.3.0.weight``, ...), so the official files
load strictly after removing DataParallel's ``module.`` prefix. Upsampling in the fuse layers is
bilinear with ``align_corners=True``, as in the official code. BatchNorm momentum is 0.01.

Input: (B, 3, H, W) float RGB in [0, 1]; H and W should be multiples of 8.
Output: a list of 4 feature maps [(B, C1, H, W), (B, C2, H/2, W/2), (B, C3, H/4, W/4), (B, C4, H/8, W/8)].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BN_MOMENTUM = 0.01


@dataclass(frozen=True)
class StageSpec:
    """One HRNet stage: ``num_modules`` HighResolutionModules over ``len(num_channels)`` branches."""

    num_modules: int
    num_blocks: tuple[int, ...]
    num_channels: tuple[int, ...]
    block: str = "basic"  # "basic" (expansion 1) or "bottleneck" (expansion 4)


@dataclass(frozen=True)
class HRNetConfig:
    """Widths and depths of the backbone; ``pscc_hrnet_w18_small_v2()`` is PSCC-Net's."""

    stem_width: int
    stage1: StageSpec
    stage2: StageSpec
    stage3: StageSpec
    stage4: StageSpec
    init_std: float | None = 0.001  # conv init N(0, std²) (official); None keeps PyTorch's default init

    @property
    def out_channels(self) -> tuple[int, ...]:
        """Channels of the 4 output branches (the blocks of stages 2-4 are basic, expansion 1)."""
        return self.stage4.num_channels


def pscc_hrnet_w18_small_v2() -> HRNetConfig:
    """PSCC-Net's configuration (``models/seg_hrnet_config.py``)."""
    return HRNetConfig(
        stem_width=64,
        stage1=StageSpec(1, (2,), (64,), "bottleneck"),
        stage2=StageSpec(1, (2, 2), (18, 36)),
        stage3=StageSpec(1, (2, 2, 2), (18, 36, 72)),
        stage4=StageSpec(1, (2, 2, 2, 2), (18, 36, 72, 144)),
    )


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = False, bias: bool = False) -> nn.Sequential:
    """Conv (padding kernel//2) + BatchNorm (+ ReLU): keys ``0.weight``, ``1.weight``, ``1.running_mean``, ..."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=bias),
        nn.BatchNorm2d(cout, momentum=BN_MOMENTUM),
    ]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (expansion 1)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1 → 3x3 → 1x1 bottleneck with residual; output channels ``planes * expansion``."""

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, expansion: int = 4
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, planes * expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * expansion, momentum=BN_MOMENTUM)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


def make_blocks(kind: str, inplanes: int, planes: int, num_blocks: int, expansion: int = 4) -> nn.Sequential:
    """``num_blocks`` residual blocks; the first gets a 1x1 conv+BN shortcut when widths differ."""
    out = planes * (1 if kind == "basic" else expansion)
    downsample = conv_bn(inplanes, out, 1) if inplanes != out else None
    blocks: list[nn.Module] = []
    for i in range(num_blocks):
        cin, ds = (inplanes, downsample) if i == 0 else (out, None)
        if kind == "basic":
            blocks.append(BasicBlock(cin, planes, 1, ds))
        else:
            blocks.append(Bottleneck(cin, planes, 1, ds, expansion))
    return nn.Sequential(*blocks)


class HighResolutionModule(nn.Module):
    """Parallel branches of basic blocks followed by the all-to-all fusion (sum).

    ``fuse_layers[i][j]`` maps branch j to branch i: a 1x1 conv+BN then bilinear upsampling
    (align_corners=True) when j > i, a chain of stride-2 3x3 conv+BN(+ReLU) when j < i, and
    nothing (identity) when i == j.
    """

    def __init__(self, channels: Sequence[int], num_blocks: Sequence[int]) -> None:
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(make_blocks("basic", c, c, b) for c, b in zip(channels, num_blocks))
        self.fuse_layers = nn.ModuleList(
            nn.ModuleList(self._fuse(channels, j, i) for j in range(n)) for i in range(n)
        ) if n > 1 else None

    @staticmethod
    def _fuse(channels: Sequence[int], j: int, i: int) -> nn.Module:
        if j > i:
            return conv_bn(channels[j], channels[i], 1)
        if j == i:
            return nn.Identity()
        steps = [conv_bn(channels[j], channels[j], 3, 2, relu=True) for _ in range(i - j - 1)]
        steps.append(conv_bn(channels[j], channels[i], 3, 2))
        return nn.Sequential(*steps)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        fused = []
        for i, row in enumerate(self.fuse_layers):
            terms = [layer(x) for layer, x in zip(row, xs)]  # summed in branch order, as the official code
            terms = [
                F.interpolate(t, size=xs[i].shape[-2:], mode="bilinear", align_corners=True) if j > i else t
                for j, t in enumerate(terms)
            ]
            y = terms[0]
            for t in terms[1:]:
                y = y + t
            fused.append(F.relu(y))
        return fused


def make_transition(prev: Sequence[int], cur: Sequence[int]) -> nn.ModuleList:
    """Adapters between stages: 3x3 conv+BN+ReLU where widths change, a stride-2 chain for a new branch."""
    layers: list[nn.Module] = []
    for i, c in enumerate(cur):
        if i < len(prev):
            layers.append(conv_bn(prev[i], c, 3, 1, relu=True) if prev[i] != c else nn.Identity())
        else:
            steps = [
                conv_bn(prev[-1], c if k == i - len(prev) else prev[-1], 3, 2, relu=True)
                for k in range(i + 1 - len(prev))
            ]
            layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


class HRNet(nn.Module):
    """HRNet feature extractor with a stride-1 stem (PSCC-Net's FENet)."""

    def __init__(self, config: HRNetConfig) -> None:
        super().__init__()
        w = config.stem_width
        self.conv1 = nn.Conv2d(3, w, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(w, w, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(w, momentum=BN_MOMENTUM)
        s1 = config.stage1
        kind = s1.block
        self.layer1 = make_blocks(kind, w, s1.num_channels[0], s1.num_blocks[0])
        prev = (s1.num_channels[0] * (4 if kind == "bottleneck" else 1),)
        stages = (config.stage2, config.stage3, config.stage4)
        for k, spec in enumerate(stages, start=1):
            if spec.block != "basic":
                raise ValueError("HRNet stages 2-4 use basic blocks")
            setattr(self, f"transition{k}", make_transition(prev, spec.num_channels))
            modules = [HighResolutionModule(spec.num_channels, spec.num_blocks) for _ in range(spec.num_modules)]
            setattr(self, f"stage{k + 1}", nn.Sequential(*modules))
            prev = spec.num_channels
        if config.init_std is not None:
            self.init_weights(config.init_std)

    def init_weights(self, std: float = 0.001) -> None:
        """Official ``init_weights`` without a file: conv weights ~ N(0, std²) (0.001), BatchNorm 1 / 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=std)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The two stride-1 3x3 conv+BN+ReLU before ``layer1`` (HiFi-Net adds a frequency branch here)."""
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        ys = [self.layer1(self.stem(x))]
        for k in (1, 2, 3):
            transition: nn.ModuleList = getattr(self, f"transition{k}")
            xs = [t(ys[i] if i < len(ys) else ys[-1]) for i, t in enumerate(transition)]
            ys = self._run_stage(getattr(self, f"stage{k + 1}"), xs)
        return ys

    @staticmethod
    def _run_stage(stage: nn.Sequential, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        for module in stage:
            xs = module(xs)
        return xs
