"""LNP: "Detecting Generated Images by Real Images" (Liu, Yang, Zhang, Zou, Zhou, Wang, ECCV 2022),
learned noise patterns. Official code: Tangsenghenshou/Detecting-Generated-Images-by-Real-Images
(denoising_rgb.py, test_sidd_rgb.py, resnet.py; run inside swz30/CycleISP and CNNDetection).

- Extractor (frozen): CycleISP's ``DenoiseNet`` (head conv, 4 RRG × 8 DAB with 64 channels,
  channel reduction 16, one shared PReLU(64), tail conv) with LNP's ``forward`` returning
  ``-x`` (the noise residual; stock CycleISP returns ``noisy + x``). Weights: CycleISP's
  ``sidd_rgb.pth`` = ``{'state_dict': ...}``, ``module.`` stripped when present (``utils.load_checkpoint``).
- Noise image (``test_sidd_rgb.py``, copied verbatim in AIGCDetectBenchmark ``processing_LNP``),
  quirks reproduced: input RGB / 255 at full resolution; ``clamp(0, 1)`` (negative residuals are
  lost); ``img_as_ubyte`` (×255, round half to even); ``uint8 * 255`` wraps modulo 256, i.e. value
  v becomes (256 − v) mod 256; ``cv2.imwrite`` / ``imencode`` stores the RGB array as BGR, so the
  PNG read back (PIL) has its channels reversed. Official code batches 64 same-sized images; here
  every image is its own batch (the network has no batch coupling), so any size works.
- Config ``default``: the official classifier (``resnet.py``): ResNet-50 whose ``conv1`` takes 5
  channels: the 3 noise channels plus the FFT amplitude ``(|F| + 1e-8)^0.8`` and phase
  ``atan2(Im + 1e-8, Re + 1e-8)`` of the ImageNet-normalised input (``fftn`` over H, W,
  ``norm='ortho'``), each shifted by ``(h//2, w//2)`` (the official ``fftshift2d``, an ``ifftshift``
  for odd sizes) and mixed ``0.11·c0 + 0.59·c1 + 0.3·c2``. Test geometry (CNNDetection ``eval.py``):
  no resize, centre crop 224 (zero-padded when smaller), ImageNet mean/std. No official classifier
  weights exist; a CNNDetection-trainer file ``{'model': ...}`` with ``conv1.weight`` of shape
  (64, 5, 7, 7) (or a raw state dict) is the layout.
- Config ``aigcdetect``: AIGCDetectBenchmark's LNP: the same noise image, a standard 3-channel
  CNNDetection ResNet-50, Resize(256, shorter side) and CenterCrop 224, ImageNet mean/std;
  checkpoint ``{'model': ...}`` (its ``weights/classifier/LNP.pth``).
- Training: CNNDetection ``train.py`` on the noise images (README): Adam lr 1e-4, batch 64, resize
  256, random crop 224, flip, lr/10 on a 5-epoch validation plateau; AIGCDetectBenchmark trains
  with ``--blur_prob 0 --jpg_prob 0``, the official README gives no augmentation flags: no blur/JPEG.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage import img_as_ubyte
from torch import nn

from baselines.common import IMAGENET_MEAN, IMAGENET_STD, BottleneckResNet, center_crop, reinit_head_from_imagenet
from baselines.common import resize, to_tensor
from baselines.frozen_extractor import ExtractorDetector
from baselines.training import TrainRecipe
from bench.checkpoint import load_raw, pick, strip_prefix, tensors_only
from bench.errors import UserError
from bench.model import InputPolicy

log = logging.getLogger(__name__)

DENOISER_FILE = "sidd_rgb.pth"


def _conv(cin: int, cout: int, kernel: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=True)


class SpatialAttention(nn.Module):
    """Channel max and mean → 3×3 conv (no bias) → sigmoid gate (key ``spatial.conv.weight``)."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = nn.Module()
        self.spatial.conv = nn.Conv2d(2, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)
        return x * torch.sigmoid(self.spatial.conv(pooled))


class ChannelAttention(nn.Module):
    """Global average → 1×1 conv (C/r) → ReLU → 1×1 conv (C) → sigmoid gate (key ``conv_du.{0,2}``)."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(nn.Conv2d(channels, channels // reduction, 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(channels // reduction, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(F.adaptive_avg_pool2d(x, 1))


class DAB(nn.Module):
    """Dual attention block: conv, act, conv → [spatial, channel attention] → 1×1 conv, + input."""

    def __init__(self, channels: int, reduction: int, act: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels), act, _conv(channels, channels))
        self.SA = SpatialAttention()
        self.CA = ChannelAttention(channels, reduction)
        self.conv1x1 = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.body(x)
        return self.conv1x1(torch.cat([self.SA(res), self.CA(res)], dim=1)) + x


class RRG(nn.Module):
    def __init__(self, channels: int, reduction: int, act: nn.Module, num_dab: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*[DAB(channels, reduction, act) for _ in range(num_dab)], _conv(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class DenoiseNet(nn.Module):
    """CycleISP RGB denoiser returning the noise residual ``-x`` (LNP); input RGB in [0, 1], (B, 3, H, W).

    One PReLU(channels) is shared by every DAB and the body's end, as in CycleISP (its weight
    appears under each of those keys)."""

    def __init__(self, num_rrg: int = 4, num_dab: int = 8, channels: int = 64, reduction: int = 16) -> None:
        super().__init__()
        act = nn.PReLU(channels)
        self.head = nn.Sequential(_conv(3, channels))
        self.body = nn.Sequential(*[RRG(channels, reduction, act, num_dab) for _ in range(num_rrg)],
                                  _conv(channels, channels), act)
        self.tail = nn.Sequential(_conv(channels, 3))

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        return -self.tail(self.body(self.head(noisy)))


def noise_image(denoiser: nn.Module, image: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) → the LNP PNG's pixels as read back by PIL: (H, W, 3) uint8 (see the docstring)."""
    device = next(denoiser.parameters()).device
    x = torch.from_numpy(image.astype(np.float32) / np.float32(255.0)).permute(2, 0, 1)[None].to(device)
    with torch.inference_mode():
        residual = torch.clamp(denoiser(x), 0, 1)[0].permute(1, 2, 0).cpu().numpy()
    return encode_like_official(img_as_ubyte(residual))


def encode_like_official(ubyte: np.ndarray) -> np.ndarray:
    """``cv2.imwrite(path, ubyte * 255)`` read back with PIL: uint8 wrap (v → (256 − v) mod 256), channels
    reversed."""
    return np.ascontiguousarray((ubyte * np.uint8(255))[..., ::-1])


def official_fftshift(x: torch.Tensor) -> torch.Tensor:
    """resnet.py's ``fftshift2d``: element (i, j) ← (i + h//2, j + w//2) modulo the size."""
    return torch.roll(x, shifts=(-(x.shape[-2] // 2), -(x.shape[-1] // 2)), dims=(-2, -1))


def fft_channels(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) normalised input → (B, 2, H, W): the official amplitude and phase channels."""
    f = torch.fft.fftn(x, dim=(2, 3), norm="ortho")
    phase = official_fftshift(torch.atan2(f.imag + 1e-8, f.real + 1e-8))
    amplitude = official_fftshift(torch.pow(torch.abs(f) + 1e-8, 0.8))

    def mix(t: torch.Tensor) -> torch.Tensor:
        return (0.11 * t[:, 0] + 0.59 * t[:, 1] + 0.3 * t[:, 2]).unsqueeze(1)

    return torch.cat([mix(amplitude), mix(phase)], dim=1)


class LNPResNet(BottleneckResNet):
    """The official 5-channel classifier: the input and its FFT channels into a ResNet (same keys)."""

    def __init__(self, layers: tuple[int, int, int, int], num_outputs: int, width: int = 64) -> None:
        super().__init__(layers, num_outputs, width, in_channels=5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.cat([x, fft_channels(x)], dim=1))


@dataclass(frozen=True)
class LNPConfig:
    """Denoiser shape (official 4 × 8 × 64), classifier (``layout``: official 5-channel or aigcdetect 3-channel)."""

    num_rrg: int = 4
    num_dab: int = 8
    channels: int = 64
    reduction: int = 16
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    width: int = 64
    layout: str = "official"
    crop: int | None = 224
    train: TrainRecipe = field(default_factory=lambda: TrainRecipe(
        optimizer="adam", lr=1e-4, batch_size=64, epochs=100, schedule="plateau", patience=5,
        load_size=256, crop_size=224))
    weights_source: str = ("swz30/CycleISP pretrained_models/denoising: sidd_rgb.pth + a classifier trained with "
                           "CNNDetection train.py (no official classifier weights)")


# sid-mini-sized recipe: native resolution (no resize, no crop), no blur/JPEG.
_TINY_TRAIN = TrainRecipe(optimizer="adam", lr=1e-3, batch_size=16, epochs=6, schedule="plateau", patience=5,
                          load_size=None, crop_size=None)


class LNP(ExtractorDetector):
    """LNP detector; options: ``denoiser`` (path), ``num_classes`` (2 or 3), ``init_seed``."""

    name = "lnp"
    configs = {
        "default": LNPConfig(),
        "aigcdetect": LNPConfig(layout="aigcdetect", weights_source=(
            "sidd_rgb.pth + AIGCDetectBenchmark weights/classifier/LNP.pth ({'model': 3-channel ResNet-50})")),
        "tiny": LNPConfig(num_rrg=1, num_dab=1, channels=16, reduction=4, layers=(1, 1, 1, 1), width=16, crop=None,
                          train=_TINY_TRAIN, weights_source="random"),
    }
    weights_help = (
        f"LNP weights: CycleISP's {DENOISER_FILE} (pretrained_models/denoising/download_models.txt of "
        "github.com/swz30/CycleISP) and a classifier file ({'model': ...}; lnp = the official 5-channel ResNet-50, "
        "lnp:aigcdetect = AIGCDetectBenchmark's 3-channel LNP.pth); put both in one folder and pass it with "
        "--weights, or pass the classifier with --weights and --option denoiser=PATH. See docs/baselines.md#lnp."
    )
    extractor_option = "denoiser"
    docs_anchor = "docs/baselines.md#lnp"
    extractor_file = DENOISER_FILE

    def make_network(self, config: LNPConfig, num_outputs: int) -> nn.Module:
        if config.layout == "aigcdetect":
            return BottleneckResNet(config.layers, num_outputs, config.width)
        return LNPResNet(config.layers, num_outputs, config.width)

    def make_extractor(self, config: LNPConfig) -> nn.Module:
        return DenoiseNet(config.num_rrg, config.num_dab, config.channels, config.reduction)

    @property
    def input_policy(self) -> InputPolicy:
        aigc = self.config.layout == "aigcdetect"
        return InputPolicy(
            resize=256 if aigc else None, crop=self.config.crop, mean=IMAGENET_MEAN, std=IMAGENET_STD,
            notes="denoiser at full resolution on RGB/255; classifier input: the noise image (clamp, img_as_ubyte, "
                  "x255 wrap, channels reversed), ImageNet mean/std, "
                  + ("3-channel ResNet-50 (AIGCDetectBenchmark)" if aigc
                     else "5-channel ResNet-50 with FFT amplitude/phase; crop zero-pads smaller images"),
        )

    def compute_view(self, image: np.ndarray) -> np.ndarray:
        return noise_image(self.extractor, image)

    def test_geometry(self, image: np.ndarray) -> np.ndarray:
        if self.config.layout == "aigcdetect":
            image = resize(image, 256, "shorter_side")
        return center_crop(image, self.config.crop) if self.config.crop else image

    def to_input(self, image: np.ndarray) -> torch.Tensor:
        return to_tensor(image, IMAGENET_MEAN, IMAGENET_STD)

    # ------------------------------------------------------------------ official files
    def read_extractor_state(self, path: Path) -> dict[str, torch.Tensor]:
        raw = load_raw(path, allow_pickle=self.allow_pickle)
        state = strip_prefix(pick(raw, "state_dict", path), "module.")
        if "head.0.weight" not in state:
            raise UserError(f"{path} is not a CycleISP DenoiseNet checkpoint (expected {{'state_dict': "
                            "{head.0.weight, "
                            f"body.0.body.0.body.0.weight, ...}}}}; found {list(state)[:4]}). {self.weights_help}")
        return state

    def load_classifier(self, path: Path) -> None:
        raw = load_raw(path, allow_pickle=self.allow_pickle)
        if self.config.layout == "aigcdetect" or (isinstance(raw, dict) and "model" in raw):
            state = pick(raw, "model", path)
        else:
            state = tensors_only(raw, path)
        state = strip_prefix(state, "module.")
        want = self.network.conv1.in_channels
        fc = state.get("fc.weight")
        if fc is not None and fc.shape[0] == 1000 and self.network.fc.out_features != 1000:
            log.warning("%s is an ImageNet classifier: fc re-initialised N(0, 0.02) (the official training start "
                        "point, not a detector)", path)
            state = reinit_head_from_imagenet(state, self.network)
            if want != 3:  # resnet.py's resnet50(pretrained=True) copies every tensor but conv1's
                state["conv1.weight"] = self.network.conv1.weight.detach().clone()
        conv1 = state.get("conv1.weight")
        if conv1 is not None and conv1.ndim == 4 and conv1.shape[1] != want:
            other = "lnp:aigcdetect (3-channel ResNet-50)" if conv1.shape[1] == 3 else "lnp (official 5-channel)"
            raise UserError(f"{path} has a {conv1.shape[1]}-channel conv1 but {self.name}:{self.config_name} expects "
                            f"{want} channels; this file is for {other}")
        self.load_strict_hinted(self.network, state, path)
