"""A minimal model plugin used by the core tests (deterministic, no weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.model import Capability, Detector, DetectorOutput, InputPolicy
from bench.types import LabelSpace


class DummyDetector(Detector):
    """p_fake = mean intensity of the image; mask = per-pixel intensity at half resolution."""

    name = "dummy"
    label_space = LabelSpace.BINARY
    capabilities = frozenset({Capability.DETECT, Capability.LOCALIZE})
    configs = {"default": {"scale": 1.0}, "tiny": {"scale": 0.5}}

    def build(self, config: Any, **options: Any) -> None:
        self.net = torch.nn.Identity()

    def load_weights(self, path: Path) -> None:
        self.loaded_from = path

    @property
    def input_policy(self) -> InputPolicy:
        return InputPolicy(scale=255.0, notes="test model")

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(image).permute(2, 0, 1).float() / 255.0

    def forward(self, batch: torch.Tensor) -> DetectorOutput:
        p = batch.mean(dim=(1, 2, 3)) * self.config["scale"]
        mask = batch.mean(dim=1)[:, ::2, ::2]
        return DetectorOutput(probs=torch.stack([1 - p, p], dim=1), mask=mask)
