"""MVSS-Net: multi-view multi-scale supervised manipulation localizer (model plugin ``mvss_net``).

Paper: Chen, Dong, Wang, Zhu, Cheng, Chen, Li, "Image Manipulation Detection by Multi-View
Multi-Scale Supervision", ICCV 2021. Official code and weights: https://github.com/dong03/MVSS-Net
(``models/mvssnet.py::get_mvss(sobel=True, constrain=True, nclass=1)``; re-written here).

Network:
- RGB view: ResNet-50 (``model.*``) with layer 4 dilated (stride 1, rates 1, 2, 4; output stride
  16). Its four stages feed the edge branch: each goes through a Sobel gate
  ``sigmoid(|∇x|) · x`` (fixed Sobel 3×3 convolutions + BatchNorm) and an ERB block; the four
  ERB outputs are merged at 1/4 resolution (bilinear ×2 / ×4 upsampling, align_corners=True).
- Noise view: grayscale ``0.2989 R + 0.5870 G + 0.1140 B`` of the *normalised* BGR input, a
  constrained ``BayarConv2d`` (1→3, 5×5, padding 2; weights normalised to sum 1 around a fixed
  −1 centre) and a second dilated ResNet-50 (``noise_extractor.model.*``).
- DANet head (``_DAHead``) on the concatenated layer-4 features (4096 channels): position and
  channel attention, summed, then a 1×1 conv to one logit map; bilinearly upsampled
  (align_corners=True) to the network input.
- ``forward`` returns ``(edge, seg)`` logits: edge (B, 1, S/4, S/4), seg (B, 1, S, S).
- The official ``__init__`` downloads ImageNet ResNet-50 weights; this one never downloads.

Inference policy (official ``inference.py`` + ``common/tools.py`` + ``common/transforms.py``):
- ``cv2.imread`` (BGR), ``cv2.resize`` to 512×512 (INTER_LINEAR), /255, ImageNet mean/std
  applied to the B, G, R channels in that order (albumentations ``img_to_tensor``);
- mask = ``sigmoid(seg)`` at 512², resized back to the image size (cv2 INTER_LINEAR; here the
  bilinear ``align_corners=False`` resize of the harness, the same rule);
- image score = ``max(sigmoid(seg))`` over the 512² map (``evaluate.py``; threshold 0.5), so
  probs = ``[1 − max, max]`` in the binary order [real, fake].
Deviations: fp32 instead of apex amp O1 (fp16); masks stay float probabilities (the official code
writes 8-bit PNGs, truncating ``p · 255``). The FCN baseline (``models/resfcn.py``) is not included.

Weights (``--weights PATH``), each loaded strictly (a DataParallel ``module.`` prefix is removed):
- the official ``mvssnet_casia.pt`` or a DEFACTO MVSS-Net file (Google Drive / Baidu links in the
  official README): a raw state dict;
- our format (a directory with ``model.safetensors`` + ``config.json``, from ``sida-bench train``);
- torchvision's ImageNet ``resnet50-19c8e357.pth``: a training initialisation, loaded into both
  ResNet-50 streams (the rest stays random), as IMDLBenCo's ``MVSSNet.__init__`` does.

Training: the official repository has no training code (issues #5, #24, #32). ``fit`` runs
IMDLBenCo's published MVSS-Net recipe, a labelled **non-official** recipe
(:mod:`baselines.mvss_training`; docs/localizers.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck

from baselines.common import IMAGENET_MEAN, IMAGENET_STD, init_resnet_
from bench.checkpoint import is_our_checkpoint, load_checkpoint, load_raw, load_strict, save_checkpoint, strip_prefix
from bench.errors import UserError
from bench.model import Capability, Detector, DetectorOutput, InputPolicy, TrainOptions
from bench.types import LabelSpace

log = logging.getLogger(__name__)

SOBEL_X = ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0))
SOBEL_Y = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))


@dataclass(frozen=True)
class MVSSConfig:
    """Sizes of one MVSS-Net configuration (``default`` = the official ResNet-50 network at 512²)."""

    width: int = 64  # ResNet base width (64 = ResNet-50); stage k outputs 4 · width · 2**k channels
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    layer4_rates: tuple[int, ...] = (1, 2, 4)  # dilation of the layer-4 blocks (the first is always 1)
    fc_classes: int = 1000  # the unused ImageNet ``fc`` kept in the official state dict
    input_size: int = 512  # square network input (official ``--resize 512``)

    def __post_init__(self) -> None:
        if self.input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16, got {self.input_size}")
        if len(self.layer4_rates) < self.layers[3]:
            raise ValueError("layer4_rates needs one rate per layer-4 block")


class DilatedResNet(nn.Module):
    """The official ``ResNet`` (torchvision key names, ``fc`` included) with a dilated layer 4.

    ``features(x)`` → [c1 (1/4), c2 (1/8), c3 (1/16), c4 (1/16)] as ``ResNet50.base_forward``.
    """

    def __init__(self, config: MVSSConfig) -> None:
        super().__init__()
        w = config.width
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = w
        for i, blocks in enumerate(config.layers):
            planes = w * 2**i
            stride = 2 if i in (1, 2) else 1
            rates = config.layer4_rates if i == 3 else (1,) * blocks
            setattr(self, f"layer{i + 1}", self._stage(inplanes, planes, blocks, stride, rates))
            inplanes = planes * Bottleneck.expansion
        self.fc = nn.Linear(inplanes, config.fc_classes)
        init_resnet_(self)

    @staticmethod
    def _stage(inplanes: int, planes: int, blocks: int, stride: int, rates: tuple[int, ...]) -> nn.Sequential:
        out = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or inplanes != out:
            downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
        first = Bottleneck(inplanes, planes, stride, downsample)
        return nn.Sequential(first, *[Bottleneck(out, planes, dilation=rates[i]) for i in range(1, blocks)])

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = []
        for k in range(1, 5):
            x = getattr(self, f"layer{k}")(x)
            feats.append(x)
        return feats


class Stream(nn.Module):
    """The official ``ResNet50`` wrapper: the network sits under ``model`` (keys ``model.*``)."""

    def __init__(self, config: MVSSConfig) -> None:
        super().__init__()
        self.model = DilatedResNet(config)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.features(x)


def sobel_pair(channels: int) -> tuple[nn.Sequential, nn.Sequential]:
    """The official ``get_sobel(channels, 1)``: ``Sequential(conv, BatchNorm)`` for x and y (keys
    ``0.weight``, ``1.*``); the Sobel kernels are stored parameters that are not trained."""
    out = []
    for kernel in (SOBEL_X, SOBEL_Y):
        conv = nn.Conv2d(channels, 1, 3, 1, 1, bias=False)
        conv.weight = nn.Parameter(torch.tensor(kernel).expand(1, channels, 3, 3).clone(), requires_grad=False)
        out.append(nn.Sequential(conv, nn.BatchNorm2d(1)))
    return out[0], out[1]


def sobel_gate(sobel_x: nn.Module, sobel_y: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``sigmoid(sqrt(gx² + gy²)) · x`` (the official ``run_sobel``)."""
    g_x, g_y = sobel_x(x), sobel_y(x)
    return torch.sigmoid(torch.sqrt(g_x.pow(2) + g_y.pow(2))) * x


class ERB(nn.Module):
    """Edge residual block: 1×1 conv, then ``x + conv3(relu(bn(conv2(x))))`` (+ ReLU unless last)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.relu = nn.ReLU()
        self.bn = nn.BatchNorm2d(cout)
        self.conv3 = nn.Conv2d(cout, cout, 3, 1, 1)

    def forward(self, x: torch.Tensor, relu: bool = True) -> torch.Tensor:
        x = self.conv1(x)
        y = x + self.conv3(self.relu(self.bn(self.conv2(x))))
        return self.relu(y) if relu else y


class BayarConv2d(nn.Module):
    """Constrained convolution: per filter, the 24 free taps are divided by their sum and the centre is −1.

    ``kernel`` has the official shape (in, out, k² − 1). The official ``bayarConstraint`` also
    writes the normalised taps back into ``kernel`` at every call (idempotent after the first);
    this one computes the same kernel without mutating the parameter. Training calls
    :meth:`project_` before each forward (the official write-back), and the sum is treated as a
    constant in :meth:`weight`, so the gradient reaching ``kernel`` is the official one (that of
    the normalised taps themselves: a projected gradient step).
    """

    def __init__(self, cin: int = 1, cout: int = 3, kernel_size: int = 5, padding: int = 2) -> None:
        super().__init__()
        self.cin, self.cout, self.k, self.padding = cin, cout, kernel_size, padding
        self.kernel = nn.Parameter(torch.rand(cin, cout, kernel_size**2 - 1))

    @torch.no_grad()
    def project_(self) -> None:
        """The official in-place write-back: ``kernel ← kernel / sum(kernel)`` per filter."""
        self.kernel.div_(self.kernel.sum(dim=2, keepdim=True))

    def weight(self) -> torch.Tensor:
        taps = self.kernel / self.kernel.sum(dim=2, keepdim=True).detach()
        ctr = self.k**2 // 2
        minus1 = -torch.ones(self.cin, self.cout, 1, dtype=taps.dtype, device=taps.device)
        full = torch.cat([taps[:, :, :ctr], minus1, taps[:, :, ctr:]], dim=2)
        return full.reshape(self.cout, self.cin, self.k, self.k)  # the official reshape (a memory view)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight(), padding=self.padding)


class PositionAttention(nn.Module):
    """DANet PAM: ``alpha · (V · softmax(Qᵀ K)ᵀ) + x`` over the H·W positions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_b = nn.Conv2d(channels, channels // 8, 1)
        self.conv_c = nn.Conv2d(channels, channels // 8, 1)
        self.conv_d = nn.Conv2d(channels, channels, 1)
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.conv_b(x).flatten(2).transpose(1, 2)  # (B, N, C/8)
        k = self.conv_c(x).flatten(2)  # (B, C/8, N)
        attn = torch.softmax(q @ k, dim=-1)  # (B, N, N)
        v = self.conv_d(x).flatten(2)  # (B, C, N)
        return self.alpha * (v @ attn.transpose(1, 2)).view(b, c, h, w) + x


class ChannelAttention(nn.Module):
    """DANet CAM: ``beta · softmax(max(A Aᵀ) − A Aᵀ) A + x`` over channels."""

    def __init__(self) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        a = x.flatten(2)
        energy = a @ a.transpose(1, 2)
        attn = torch.softmax(energy.max(dim=-1, keepdim=True)[0].expand_as(energy) - energy, dim=-1)
        return self.beta * (attn @ a).view(b, c, h, w) + x


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))


class DAHead(nn.Module):
    """The official ``_DAHead`` (aux=False): position and channel branches summed → 1×1 conv logits."""

    def __init__(self, cin: int, nclass: int = 1) -> None:
        super().__init__()
        inter = cin // 4
        self.conv_p1, self.conv_c1 = conv_bn_relu(cin, inter), conv_bn_relu(cin, inter)
        self.pam, self.cam = PositionAttention(inter), ChannelAttention()
        self.conv_p2, self.conv_c2 = conv_bn_relu(inter, inter), conv_bn_relu(inter, inter)
        self.out = nn.Sequential(nn.Dropout(0.1), nn.Conv2d(inter, nclass, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.conv_p2(self.pam(self.conv_p1(x)))
        c = self.conv_c2(self.cam(self.conv_c1(x)))
        return self.out(p + c)


def bgr_to_gray(x: torch.Tensor) -> torch.Tensor:
    """The official ``rgb2gray`` on a BGR tensor: channels (0, 1, 2) = (B, G, R)."""
    return (0.2989 * x[:, 2] + 0.5870 * x[:, 1] + 0.1140 * x[:, 0]).unsqueeze(1)


class MVSSNetwork(nn.Module):
    """``get_mvss(sobel=True, constrain=True, nclass=1)``; ``forward(x)`` → (edge logits, seg logits)."""

    def __init__(self, config: MVSSConfig) -> None:
        super().__init__()
        chans = [config.width * 4 * 2**i for i in range(4)]
        nclass = 1
        self.model = DilatedResNet(config)
        for k, c in enumerate(chans, start=1):
            setattr(self, f"erb_db_{k}", ERB(c, nclass))
        for k in (1, 2, 3):
            setattr(self, f"erb_trans_{k}", ERB(nclass, nclass))
        for k, c in enumerate(chans, start=1):
            sx, sy = sobel_pair(c)
            setattr(self, f"sobel_x{k}", sx)
            setattr(self, f"sobel_y{k}", sy)
        self.noise_extractor = Stream(config)
        self.constrain_conv = BayarConv2d(1, 3, 5, 2)
        self.head = DAHead(2 * chans[3], nclass)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = x.shape[-2:]
        c1, c2, c3, c4 = self.model.features(x)
        gated = [sobel_gate(getattr(self, f"sobel_x{k}"), getattr(self, f"sobel_y{k}"), c)
                 for k, c in enumerate((c1, c2, c3, c4), start=1)]
        edge = self.erb_db_1(gated[0])
        for k, scale in ((2, 2), (3, 4), (4, 4)):
            up = F.interpolate(getattr(self, f"erb_db_{k}")(gated[k - 1]), scale_factor=scale,
                               mode="bilinear", align_corners=True)
            edge = getattr(self, f"erb_trans_{k - 1}")(edge + up, relu=k < 4)
        noise = self.noise_extractor(self.constrain_conv(bgr_to_gray(x)))[-1]
        seg = self.head(torch.cat([c4, noise], dim=1))
        return edge, F.interpolate(seg, size=size, mode="bilinear", align_corners=True)


#: ``tiny``: the same structure with base width 8, one block in layers 1-3, two in layer 4
#: (dilation 2 exercised), a 64² input and a 10-way dummy ``fc``
TINY = MVSSConfig(width=8, layers=(1, 1, 1, 2), fc_classes=10, input_size=64)


class MVSSNet(Detector):
    """MVSS-Net localizer; image score = max of the mask (the official rule). No options."""

    name = "mvss_net"
    label_space = LabelSpace.BINARY
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.DETECT, Capability.LOCALIZE})
    configs: ClassVar[dict[str, MVSSConfig]] = {"default": MVSSConfig(), "tiny": TINY}
    weights_help = (
        "The official MVSS-Net weights (ckpt/mvssnet_casia.pt, or the DEFACTO MVSS-Net file) are linked "
        "(Google Drive / Baidu) from the README of https://github.com/dong03/MVSS-Net; pass the file as "
        "--weights. To train (sida-bench train), torchvision's ImageNet resnet50-19c8e357.pth initialises both "
        "ResNet-50 streams. Nothing is downloaded at run time (docs/localizers.md)."
    )

    def build(self, config: MVSSConfig, **unknown: Any) -> None:
        if unknown:
            raise UserError(f"Unknown option(s) for mvss_net: {', '.join(sorted(unknown))}; it has none")
        self.net = MVSSNetwork(config)
        self.weights_format = "random"

    def load_weights(self, path: Path) -> None:
        if is_our_checkpoint(path):
            state, saved = load_checkpoint(path)
            if saved.get("model") not in (None, self.name):
                raise UserError(f"{path} holds a {saved.get('model')!r} checkpoint, not {self.name!r}")
            load_strict(self.net, state, path)
            self.weights_format = "safetensors"
            return
        if path.is_dir():
            raise UserError(f"{path} is a directory; mvss_net expects the official file (mvssnet_casia.pt) or a "
                            f"folder with model.safetensors from sida-bench train. {self.weights_help}")
        state = official_state(load_raw(path, allow_pickle=self.allow_pickle), path)
        if is_imagenet_resnet(state):
            for stream in (self.net.model, self.net.noise_extractor.model):
                load_strict(stream, state, path)
            log.warning("%s: loaded the ImageNet ResNet-50 into both streams; the edge branch, Bayar "
                        "convolution and DANet head are randomly initialised (a training start)", path)
            self.weights_format = "imagenet_resnet50"
            return
        load_strict(self.net, state, path)
        self.weights_format = "official"

    def save(self, out_dir: Path, extra: dict[str, Any] | None = None) -> Path:
        """Our format (``model.safetensors`` + ``config.json``; the official key names) into ``out_dir``."""
        return save_checkpoint(out_dir, self.net.state_dict(), {"model": self.name, "config": self.config_name,
                                                                **(extra or {})})

    def reinitialise(self, seed: int) -> None:
        """Fresh random weights drawn from ``seed`` (training from scratch is then seeded)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = MVSSNetwork(self.config).to(self.device)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "weights_format": self.weights_format}

    def fit(self, train: Any, val: Any, options: TrainOptions) -> dict[str, Any]:
        """IMDLBenCo's MVSS-Net recipe (**non-official**; :data:`baselines.mvss_training.RECIPES` per
        configuration), selection on ``val``."""
        from baselines.mvss_training import RECIPES, MVSSRecipe, train_mvss

        return train_mvss(self, train, val, options, RECIPES.get(self.config_name, MVSSRecipe()))

    # ------------------------------------------------------------------ inference
    @property
    def input_policy(self) -> InputPolicy:
        s = self.config.input_size
        return InputPolicy(
            resize=s, resize_mode="square", interpolation="bilinear (cv2.INTER_LINEAR on uint8)",
            mean=IMAGENET_MEAN, std=IMAGENET_STD, scale=255.0, colour_order="BGR",
            notes=(f"official inference.py: BGR, cv2.resize to {s}x{s}, /255, ImageNet mean/std applied to the "
                   "B, G, R channels in that order; mask = sigmoid(seg) resized back to the image size; "
                   "score = max of the mask; fp32 (official: apex amp O1)"),
        )

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """RGB uint8 (H, W, 3) → float32 (3, S, S): BGR, cv2 bilinear resize, /255, mean/std per B, G, R."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        s = self.config.input_size
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        if bgr.shape[:2] != (s, s):
            bgr = cv2.resize(bgr, (s, s), interpolation=cv2.INTER_LINEAR)
        x = torch.from_numpy(bgr).permute(2, 0, 1).float().div_(255.0)
        return (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def forward(self, batch: torch.Tensor) -> DetectorOutput:
        """mask (B, S, S) = sigmoid(seg); probs (B, 2) = [1 − max(mask), max(mask)]."""
        _, seg = self.net(batch)
        mask = torch.sigmoid(seg.float())[:, 0]
        score = mask.flatten(1).max(dim=1).values
        return DetectorOutput(probs=torch.stack([1.0 - score, score], dim=1), mask=mask)


def is_imagenet_resnet(state: Mapping[str, torch.Tensor]) -> bool:
    """A torchvision ResNet state dict: ``conv1.weight`` and ``fc.weight`` at the top, no ``model.`` prefix."""
    return "conv1.weight" in state and "fc.weight" in state and not any(k.startswith("model.") for k in state)


def official_state(raw: Any, source: Path) -> dict[str, torch.Tensor]:
    """A raw MVSS-Net state dict (``module.`` prefix removed) or a one-line error naming the layout."""
    if not isinstance(raw, Mapping) or not raw:
        raise UserError(f"{source}: expected the raw MVSS-Net state dict (mvssnet_casia.pt), got {type(raw).__name__}")
    bad = next((k for k, v in raw.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise UserError(f"{source}: expected the raw MVSS-Net state dict (keys model.*, noise_extractor.model.*, "
                        f"head.*, ...); entry {bad!r} is a {type(raw[bad]).__name__}, not a tensor")
    return strip_prefix(raw, "module.")
