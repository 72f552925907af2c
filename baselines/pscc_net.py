"""PSCC-Net: a manipulation localizer *and* detector (model plugin ``pscc_net``).

Paper: Liu, Liu, Chen, Yang, Chen, "PSCC-Net: Progressive Spatio-Channel Correlation Network for
Image Manipulation Detection and Localization", IEEE TCSVT 2022.
Official code and weights: https://github.com/proteus1991/PSCC-Net (MIT licence).

Network: HRNet-W18-small-v2 with a stride-1 stem (:mod:`baselines.hrnet`) → NLCDetection
localisation head + 2-way DetectionHead (:mod:`baselines.pscc_heads`).

Conventions (official ``test.py`` / ``utils/load_vdata.py``):
- input: RGB uint8 → float RGB/255 at full resolution, no mean/std normalisation;
- detection: softmax over 2 logits, index 1 = forged, so probs = [p_real, p_fake] (binary order);
- localisation: ``mask1`` (sigmoid, crop_size², 256² officially) upsampled bilinearly with
  ``align_corners=True`` to the input size; probabilities in [0, 1].

Weights (``--weights PATH``):
- the official ``checkpoint/`` directory, holding ``HRNet_checkpoint/HRNet.pth``,
  ``NLCDetection_checkpoint/NLCDetection.pth`` and ``DetectionHead_checkpoint/DetectionHead.pth``
  (or a folder with the three ``<name>.pth`` side by side): raw state dicts saved from
  ``nn.DataParallel`` (``module.`` prefix), loaded strictly;
- our own format (a directory with ``model.safetensors`` + ``config.json``, from ``sida-bench train``);
- the ImageNet ``hrnet_w18_small_v2.pth`` (a training initialisation: backbone only, heads random).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from baselines.hrnet import HRNet, HRNetConfig, StageSpec, pscc_hrnet_w18_small_v2
from baselines.pscc_heads import DetectionHead, NLCDetection
from bench.checkpoint import (
    OUR_WEIGHTS,
    is_our_checkpoint,
    load_checkpoint,
    load_raw,
    load_strict,
    save_checkpoint,
    strip_prefix,
    tensors_only,
)
from bench.errors import UserError
from bench.model import Capability, Detector, DetectorOutput, InputPolicy, TrainOptions
from bench.types import LabelSpace

log = logging.getLogger(__name__)

#: official file stem → attribute of :class:`PSCCNetwork` it initialises
OFFICIAL_PARTS: dict[str, str] = {
    "HRNet": "backbone",
    "NLCDetection": "localization_head",
    "DetectionHead": "detection_head",
}


@dataclass(frozen=True)
class PSCCConfig:
    """Sizes of one PSCC-Net configuration (``default`` = official)."""

    backbone: HRNetConfig = field(default_factory=pscc_hrnet_w18_small_v2)
    crop_size: int = 256  # heads resize features to crop_size (and /2, /4, /8); training input size
    mask_hidden: int = 16  # channels of each mask predictor's hidden conv
    head_width: int = 128  # DetectionHead final 1x1 conv width
    head_fc_hidden: int = 16  # DetectionHead hidden Linear width
    max_side: int | None = None  # inference size limit (None = official full resolution)

    def __post_init__(self) -> None:
        if self.crop_size % 8:
            raise ValueError(f"crop_size must be a multiple of 8, got {self.crop_size}")


#: ``tiny``: same structure, one block per branch, widths 4/8/16/32, a basic (not bottleneck)
#: stage-1 block so the full-resolution stage stays 8 channels wide, and PyTorch's default conv
#: init (the official N(0, 0.001²) learns far slower in a short run; docs/pscc_net.md)
TINY_BACKBONE = HRNetConfig(
    stem_width=8,
    stage1=StageSpec(1, (1,), (8,), "basic"),
    stage2=StageSpec(1, (1, 1), (4, 8)),
    stage3=StageSpec(1, (1, 1, 1), (4, 8, 16)),
    stage4=StageSpec(1, (1, 1, 1, 1), (4, 8, 16, 32)),
    init_std=None,
)


class PSCCNetwork(nn.Module):
    """Backbone + both heads. ``forward(x)`` → ((mask1..mask4) each (B, 1, s, s), logits (B, K))."""

    def __init__(self, config: PSCCConfig, num_classes: int = 2) -> None:
        super().__init__()
        channels = config.backbone.out_channels
        self.backbone = HRNet(config.backbone)
        self.localization_head = NLCDetection(channels, config.crop_size, config.mask_hidden)
        self.detection_head = DetectionHead(
            channels, config.crop_size, config.head_width, config.head_fc_hidden, num_classes
        )

    def forward(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        feats = self.backbone(x)
        return self.localization_head(feats), self.detection_head(feats)


class PSCCNet(Detector):
    """PSCC-Net detector + localizer.

    Options:
        max_side: None (the configuration's value; official: full resolution) or a pixel limit on the longer image side;
            larger images are downscaled (bicubic, aspect kept) before the network and the mask
            is resized back to the image size. The stride-1 HRNet keeps 256 channels at full
            resolution in stage 1, so memory grows fast with image size (see docs/pscc_net.md).
        num_classes: 2 (official; [real, fake]) or 3 (retrained on SID-Set; [real,
            full_synthetic, tampered]). Official checkpoints are 2-way.
    """

    name = "pscc_net"
    label_space = LabelSpace.BINARY
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.DETECT, Capability.LOCALIZE})
    configs: ClassVar[dict[str, PSCCConfig]] = {
        "default": PSCCConfig(),
        "max1024": PSCCConfig(max_side=1024),
        "tiny": PSCCConfig(backbone=TINY_BACKBONE, crop_size=64, mask_hidden=4, head_width=16, head_fc_hidden=8),
    }
    weights_help = (
        "The official PSCC-Net weights are committed in https://github.com/proteus1991/PSCC-Net under "
        "checkpoint/ (HRNet_checkpoint/HRNet.pth, NLCDetection_checkpoint/NLCDetection.pth, "
        "DetectionHead_checkpoint/DetectionHead.pth; a git clone brings them) — "
        "pass that checkpoint/ directory as --weights. The ImageNet initialisation for training is "
        "models/hrnet_w18_small_v2.pth in the same repository. Nothing is downloaded at run time."
    )

    def build(self, config: PSCCConfig, max_side: int | None = None, num_classes: int = 2, **unknown: Any) -> None:
        if unknown:
            names = ", ".join(sorted(unknown))
            raise UserError(f"Unknown option(s) for pscc_net: {names}; known: max_side, num_classes")
        if num_classes not in (2, 3):
            raise UserError(f"pscc_net num_classes must be 2 or 3, got {num_classes!r}")
        if max_side is not None and (not isinstance(max_side, int) or max_side < 8):
            raise UserError(f"pscc_net max_side must be None or an integer >= 8, got {max_side!r}")
        self.max_side = config.max_side if max_side is None else max_side
        self.label_space = LabelSpace.BINARY if num_classes == 2 else LabelSpace.TERNARY
        self.weights_format: str | None = None
        self.net = PSCCNetwork(config, num_classes)

    # ------------------------------------------------------------------ weights
    def load_weights(self, path: Path) -> None:
        if is_our_checkpoint(path):
            self._load_ours(path)
        elif path.is_dir():
            self._load_official(path)
        else:
            self._load_imagenet_backbone(path)

    def _load_ours(self, path: Path) -> None:
        state, cfg = load_checkpoint(path)
        expected = {"model": self.name, "num_classes": self.num_classes}
        clash = {k: (cfg.get(k), v) for k, v in expected.items() if k in cfg and cfg[k] != v}
        if clash:
            detail = ", ".join(f"{k}: checkpoint {a!r} vs requested {b!r}" for k, (a, b) in clash.items())
            raise UserError(f"{path} was saved for another configuration ({detail})")
        load_strict(self.net, state, path)
        self.weights_format = "safetensors"

    def _load_official(self, folder: Path) -> None:
        for stem, attr in OFFICIAL_PARTS.items():
            candidates = [folder / f"{stem}_checkpoint" / f"{stem}.pth", folder / f"{stem}.pth"]
            found = next((p for p in candidates if p.is_file()), None)
            if found is None:
                raise UserError(
                    f"{folder} is neither an official PSCC-Net checkpoint/ directory nor a folder with "
                    f"{OUR_WEIGHTS}: missing {candidates[0].relative_to(folder)} (or {stem}.pth). {self.weights_help}"
                )
            raw = tensors_only(load_raw(found, allow_pickle=self.allow_pickle), found)
            load_strict(getattr(self.net, attr), strip_prefix(raw, "module."), found)
        self.weights_format = "official"

    def _load_imagenet_backbone(self, path: Path) -> None:
        raw = tensors_only(load_raw(path, allow_pickle=self.allow_pickle), path)
        # The official init (HRNet.init_weights) strips "model." and keeps the keys the backbone has.
        state = {k.replace("model.", ""): v for k, v in strip_prefix(raw, "module.").items()}
        if "classifier.weight" not in state:
            raise UserError(
                f"{path}: a single file must be the ImageNet hrnet_w18_small_v2.pth (a training "
                f"initialisation) or our {OUR_WEIGHTS}; for the official PSCC-Net weights pass the "
                "checkpoint/ directory that holds the three files."
            )
        own = self.net.backbone.state_dict()
        load_strict(self.net.backbone, {k: v for k, v in state.items() if k in own}, path)
        log.warning("%s: loaded the ImageNet backbone only; both PSCC-Net heads are randomly initialised", path)
        self.weights_format = "imagenet_backbone"

    def reinitialise(self, seed: int) -> None:
        """Fresh random weights drawn from ``seed`` (training from scratch is then seeded)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = PSCCNetwork(self.config, self.num_classes).to(self.device)

    def save(self, out_dir: Path, extra: dict[str, Any] | None = None) -> Path:
        """Write our format (``model.safetensors`` + ``config.json``) into ``out_dir``."""
        config = {
            "model": self.name,
            "config": self.config_name,
            "num_classes": self.num_classes,
            "options": {"max_side": self.max_side},
            **(extra or {}),
        }
        return save_checkpoint(out_dir, self.net.state_dict(), config)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "weights_format": self.weights_format}

    # ------------------------------------------------------------------ inference
    @property
    def input_policy(self) -> InputPolicy:
        return InputPolicy(
            resize=self.max_side,
            resize_mode="longest_side",
            interpolation="bicubic",
            scale=255.0,
            colour_order="RGB",
            notes=(
                "official utils/load_vdata.py: RGB/255 at full resolution, no mean/std; RGBA is "
                "composited on white at decode; resize only when max_side is set and the longer "
                "side exceeds it (downscale only, aspect kept)"
            ),
        )

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """RGB uint8 (H, W, 3) → float32 (3, H', W') in [0, 1]; H', W' = H, W unless max_side applies."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        if self.max_side is not None and max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            image = np.asarray(Image.fromarray(image).resize(size, resample=Image.Resampling.BICUBIC))
        return torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255.0)

    def forward(self, batch: torch.Tensor) -> DetectorOutput:
        """probs (B, K) = softmax(logits) (index 1 = forged); mask (B, H, W) = mask1 resized to the input."""
        masks, logits = self.net(batch)
        mask = masks[0]
        if mask.shape[-2:] != batch.shape[-2:]:  # same size: the align_corners=True resize is the identity
            mask = F.interpolate(mask, size=batch.shape[-2:], mode="bilinear", align_corners=True)
        mask = mask[:, 0]
        return DetectorOutput(probs=torch.softmax(logits.float(), dim=1), mask=mask, logits=logits)

    # ------------------------------------------------------------------ training
    def fit(self, train: Any, val: Any, options: TrainOptions) -> dict[str, Any]:
        """The configuration's recipe (:data:`RECIPES`; official by default), selection on ``val``."""
        from baselines.pscc_training import RECIPES, PSCCRecipe, train_pscc

        return train_pscc(self, train, val, options, RECIPES.get(self.config_name, PSCCRecipe()))
