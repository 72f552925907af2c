"""CNNSpot (CNNDetection): "CNN-generated images are surprisingly easy to spot... for now".

Wang, Wang, Zhang, Owens, Efros, CVPR 2020. Official code: PeterWang512/CNNDetection
(networks/resnet.py, eval.py, train.py); weights licence: CC BY-NC-SA 4.0.

- Network: torchvision-layout ResNet-50 with ``fc = Linear(2048, 1)``; sigmoid(logit) = P(fake).
- Test preprocessing (``eval.py``): no resize, centre crop 224, ImageNet mean/std. Images
  smaller than 224 are zero-padded (black) to 224, as torchvision ``CenterCrop`` does in the
  official code. Config ``no_crop`` (or option ``crop=None``) feeds the full image instead,
  as the README's "no crop" results (run with batch size 1 there; here images of different
  sizes are simply not stacked together).
- Checkpoint: ``blur_jpg_prob0.5.pth`` / ``blur_jpg_prob0.1.pth`` = ``{'model': state_dict,
  'optimizer': ..., 'total_steps': ...}``; a raw ResNet state dict is accepted as well. An
  ImageNet ResNet-50 file (1000-way fc, e.g. torchvision's ``resnet50-19c8e357.pth``) is
  accepted as the official *training* start point: fc is re-initialised N(0, 0.02).
- Training (README ``blur_jpg_prob0.5``): Adam lr 1e-4 (β1 0.9), batch 64, resize 256
  (shorter side), blur σ~U[0,3] and JPEG q~U{30..100} each with p=0.5, random crop 224, flip;
  lr/10 after 5 epochs without validation-accuracy gain, stop below 1e-6.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from baselines.common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SingleLogitDetector,
    bottleneck_resnet,
    center_crop,
    reinit_head_from_imagenet,
    to_tensor,
)
from baselines.training import TrainRecipe
from bench.checkpoint import load_raw, load_strict, strip_prefix, tensors_only
from bench.model import InputPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CNNSpotConfig:
    """layers: Bottleneck blocks per stage ((3, 4, 6, 3) = ResNet-50); crop: centre crop side or None."""

    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    width: int = 64
    crop: int | None = 224
    train: TrainRecipe = field(default_factory=lambda: TrainRecipe(
        optimizer="adam", lr=1e-4, batch_size=64, epochs=100, schedule="plateau", patience=5,
        load_size=256, crop_size=224, blur_prob=0.5, jpeg_prob=0.5))
    weights_source: str = "PeterWang512/CNNDetection weights/download_weights.sh: blur_jpg_prob0.5.pth"


# sid-mini-sized recipe: no resize, no crop (96 px images), no blur/JPEG (they erase a few-grey-level
# up-sampling trace). Measured on sid-mini (lead, 1 thread): 57 CPU-s, test 3-class accuracy 0.48.
_TINY_TRAIN = TrainRecipe(optimizer="adam", lr=1e-3, batch_size=16, epochs=10, schedule="plateau", patience=5,
                          load_size=None, crop_size=96)


class CNNSpot(SingleLogitDetector):
    """CNNSpot detector; options: ``crop`` (int or None), ``num_classes`` (2 or 3)."""

    name = "cnnspot"
    configs = {
        "default": CNNSpotConfig(),
        "no_crop": CNNSpotConfig(crop=None),
        "tiny": CNNSpotConfig(layers=(1, 1, 1, 1), width=16, crop=None, train=_TINY_TRAIN, weights_source="random"),
    }
    weights_help = (
        "Official CNNSpot weights: run weights/download_weights.sh from github.com/PeterWang512/CNNDetection "
        "(blur_jpg_prob0.5.pth or blur_jpg_prob0.1.pth) and pass the .pth file with --weights."
    )

    def option_names(self) -> tuple[str, ...]:
        return ("num_classes", "init_seed", "crop")

    def make_network(self, config: CNNSpotConfig, num_outputs: int) -> torch.nn.Module:
        if "crop" in self.options:
            self.config = replace(config, crop=self.options["crop"])
        return bottleneck_resnet(config.layers, num_outputs, config.width)

    @property
    def input_policy(self) -> InputPolicy:
        return InputPolicy(
            resize=None, crop=self.config.crop, mean=IMAGENET_MEAN, std=IMAGENET_STD,
            notes="CNNDetection eval.py: no resize; images smaller than the crop are zero-padded "
                  "(torchvision CenterCrop)" if self.config.crop else "no resize, no crop (README 'no crop' variant)",
        )

    def test_geometry(self, image: np.ndarray) -> np.ndarray:
        return center_crop(image, self.config.crop) if self.config.crop else image

    def to_input(self, image: np.ndarray) -> torch.Tensor:
        return to_tensor(image, IMAGENET_MEAN, IMAGENET_STD)

    def load_official(self, path: Path) -> None:
        raw = load_raw(path, allow_pickle=self.allow_pickle)
        state = tensors_only(raw["model"] if isinstance(raw, dict) and "model" in raw else raw, path)
        state = strip_prefix(state, "module.")
        fc = state.get("fc.weight")
        if fc is not None and fc.shape[0] == 1000 and self.network.fc.out_features != 1000:
            log.warning("%s is an ImageNet classifier: fc re-initialised N(0, 0.02) (a training start point, "
                        "not a detector)", path)
            state = reinit_head_from_imagenet(state, self.network)
        load_strict(self.network, state, path)
