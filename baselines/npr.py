"""NPR: "Rethinking the Up-Sampling Operations in CNN-based Generative Network for
Generalizable Deepfake Detection" (Tan et al., CVPR 2024). Official code:
chuangchuangtan/NPR-DeepfakeDetection (networks/resnet.py, test.py, train.py).

- Neighbouring Pixel Relationships: ``NPR = x - up_nearest(down_nearest(x, 1/2))`` on the
  ImageNet-normalised input, i.e. each pixel minus the top-left pixel of its 2×2 cell; the
  network sees ``NPR * 2/3``.
- Network (written here; no library has it): 3×3 stride-2 ``conv1`` (64), BN, ReLU, 3×3
  stride-2 max-pool, ResNet ``layer1`` and ``layer2`` only (Bottleneck blocks [3, 4]),
  global average pooling, ``fc1 = Linear(512, 1)``; about 1.44M parameters, trained from scratch.
- Test preprocessing (``test.py``): ``Resize((256, 256))`` (bilinear) for ForenSynths,
  DiffusionForensics and UniversalFakeDetect, no crop, ImageNet mean/std (config
  ``default``); no resize for GANGen-Detection and AIGCDetectBenchmark (config ``no_resize``
  or option ``resize=None``). Odd heights/widths lose their last row/column (the nearest
  down/up-sampling needs even sizes).
- Checkpoint: ``NPR.pth`` / ``model_epoch_last_3090.pth`` in the repository are raw state dicts
  (``{'model': ...}`` files from its trainer are accepted too).
- Training (README): Adam lr 2e-4, batch 32, 50 epochs, lr ×0.9 every 10 epochs, resize
  (256, 256), random crop 224, flip, no blur/JPEG.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from baselines.common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SingleLogitDetector,
    bottleneck_stage,
    crop_to_even,
    init_resnet_,
    resize,
    to_tensor,
)
from baselines.training import TrainRecipe
from bench.checkpoint import load_raw, load_strict, strip_prefix, tensors_only
from bench.errors import ImageSizeError
from bench.model import InputPolicy


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """x minus its nearest-neighbour 2× down-then-up sampled copy; x is (B, C, H, W), H and W even."""
    coarse = x[:, :, ::2, ::2].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    return x - coarse


class NPRNet(nn.Module):
    """The truncated ResNet of NPR; returns (B, num_outputs) logits. Key names follow the official file.

    ``width`` is the stem width (64 = official; the ``tiny`` configuration narrows every layer)."""

    def __init__(self, layers: tuple[int, int] = (3, 4), num_outputs: int = 1, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = bottleneck_stage(width, width, layers[0], stride=1)
        self.layer2 = bottleneck_stage(width * Bottleneck.expansion, 2 * width, layers[1], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc1 = nn.Linear(2 * width * Bottleneck.expansion, num_outputs)
        init_resnet_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(npr_residual(x) * (2.0 / 3.0))
        x = self.maxpool(self.relu(self.bn1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc1(torch.flatten(self.avgpool(x), 1))


@dataclass(frozen=True)
class NPRConfig:
    """layers: Bottleneck blocks of layer1/layer2; width: stem width (64 official); resize: square side or None."""

    layers: tuple[int, int] = (3, 4)
    width: int = 64
    resize: int | None = 256
    train: TrainRecipe = field(default_factory=lambda: TrainRecipe(
        optimizer="adam", lr=2e-4, batch_size=32, epochs=50, schedule="step", step_epochs=10, lr_factor=0.9,
        load_size=256, resize_mode="square", crop_size=224))
    weights_source: str = "chuangchuangtan/NPR-DeepfakeDetection: NPR.pth (in the repository)"


_TINY_TRAIN = TrainRecipe(optimizer="adam", lr=2e-3, batch_size=32, epochs=4, schedule="step", step_epochs=10,
                          lr_factor=0.9, load_size=None, crop_size=64)


def check_npr_size(image: np.ndarray) -> None:
    """NPR's residual (2x nearest down/up-sampling) needs an even image of at least 2x2 pixels."""
    if min(image.shape[:2]) < 2:
        raise ImageSizeError("NPR input (crop to even height and width, 2x2 down/up-sampling)", image.shape[:2],
                             "it needs at least 2x2 pixels")


class NPR(SingleLogitDetector):
    """NPR detector; options: ``resize`` (int or None), ``num_classes`` (2 or 3)."""

    name = "npr"
    configs = {
        "default": NPRConfig(),
        "no_resize": NPRConfig(resize=None),
        "tiny": NPRConfig(layers=(1, 1), width=16, resize=None, train=_TINY_TRAIN, weights_source="random"),
    }
    weights_help = (
        "Official NPR weights: NPR.pth in github.com/chuangchuangtan/NPR-DeepfakeDetection "
        "(committed to the repository); pass the file with --weights."
    )

    def option_names(self) -> tuple[str, ...]:
        return ("num_classes", "init_seed", "resize")

    def make_network(self, config: NPRConfig, num_outputs: int) -> nn.Module:
        if "resize" in self.options:
            self.config = replace(config, resize=self.options["resize"])
        return NPRNet(config.layers, num_outputs, config.width)

    @property
    def input_policy(self) -> InputPolicy:
        return InputPolicy(
            resize=self.config.resize, resize_mode="square", crop=None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
            notes="NPR test.py; odd heights/widths cropped to even (last row/column dropped)",
        )

    def test_geometry(self, image: np.ndarray) -> np.ndarray:
        if self.config.resize is not None:
            image = resize(image, self.config.resize, "square")
        check_npr_size(image)
        return crop_to_even(image)

    def to_input(self, image: np.ndarray) -> torch.Tensor:
        check_npr_size(image)
        return to_tensor(crop_to_even(image), IMAGENET_MEAN, IMAGENET_STD)

    def load_official(self, path: Path) -> None:
        raw = load_raw(path, allow_pickle=self.allow_pickle)
        state = tensors_only(raw["model"] if isinstance(raw, dict) and "model" in raw else raw, path)
        load_strict(self.network, strip_prefix(state, "module."), path)
