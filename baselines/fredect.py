"""FreDect: "Leveraging Frequency Analysis for Deep Fake Image Recognition" (Frank et al., ICML 2020).

The official code (RUB-SysSec/GANDCTAnalysis) is TensorFlow/Keras only; this is the PyTorch
re-implementation of AIGCDetectBenchmark (Ekko-zn/AIGCDetectBenchmark: util.py ``get_model``,
data/process.py ``processing_DCT`` / ``dct2_wrapper``), whose weights are the ones usable here.

- Network: torchvision ResNet-50 with ``fc = Linear(2048, 1)``; sigmoid(logit) = P(fake).
- Test preprocessing: Resize(256, shorter side, bilinear), CenterCrop(224) (images smaller
  than 224 after the resize cannot occur), then on the uint8 pixels (not /255) a 2-D DCT-II
  (``norm='ortho'``, along H then W, per channel), ``log(|x| + 1e-12)``, and
  ``(x - dct_mean) / sqrt(dct_var)`` with per-coefficient statistics of shape [3, 224, 224].
- Weights: the classifier file ``{'netC': state_dict}`` (``module.`` prefixes stripped) plus the
  committed tensors ``weights/auxiliary/dct_mean`` and ``dct_var`` (torch float64 [3, 224, 224]).
  Pass ``--weights`` as a directory holding the classifier ``.pth`` and the files ``dct_mean``
  and ``dct_var``, or as the ``.pth`` file with the two statistics beside it, or set the options
  ``dct_mean=PATH`` / ``dct_var=PATH``. Without statistics (random init) the standardisation is
  the identity (mean 0, var 1). Our own checkpoints store the statistics with the weights.
- Training (AIGCDetectBenchmark ``train.py``, README command): from scratch, Adam lr 1e-4,
  batch 64, blur/JPEG p=0.1, resize 256, random crop 224, flip; lr/10 on a 5-epoch plateau.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import scipy.fft
import torch

from baselines.common import SingleLogitDetector, bottleneck_resnet, center_crop, resize
from baselines.training import TrainRecipe
from bench.checkpoint import load_raw, load_strict, pick, strip_prefix
from bench.errors import UserError
from bench.model import InputPolicy

LOG_EPS = 1e-12
STAT_FILES = ("dct_mean", "dct_var")


def dct_log_spectrum(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 → float64 ``log(|DCT-II_ortho(image)| + 1e-12)`` over H and W per channel."""
    x = scipy.fft.dct(image.astype(np.float64), type=2, norm="ortho", axis=0)
    x = scipy.fft.dct(x, type=2, norm="ortho", axis=1)
    return np.log(np.abs(x) + LOG_EPS)


@dataclass(frozen=True)
class FreDectConfig:
    """layers: ResNet Bottleneck blocks; load_size: shorter-side resize; crop: centre crop (= stats size)."""

    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    width: int = 64
    load_size: int = 256
    crop: int = 224
    train: TrainRecipe = field(default_factory=lambda: TrainRecipe(
        optimizer="adam", lr=1e-4, batch_size=64, epochs=100, schedule="plateau", patience=5,
        load_size=256, crop_size=224, blur_prob=0.1, jpeg_prob=0.1))
    weights_source: str = "Ekko-zn/AIGCDetectBenchmark: FreDect classifier (BaiduNetdisk/ModelScope) + weights/auxiliary"


# sid-mini-sized recipe: no resize, no blur/JPEG (they erase a few-grey-level up-sampling trace).
_TINY_TRAIN = TrainRecipe(optimizer="adam", lr=3e-3, batch_size=16, epochs=8, schedule="plateau",
                          load_size=None, crop_size=64)


class FreDect(SingleLogitDetector):
    """FreDect detector; options: ``dct_mean``/``dct_var`` (paths), ``num_classes`` (2 or 3)."""

    name = "fredect"
    configs = {
        "default": FreDectConfig(),
        "tiny": FreDectConfig(layers=(1, 1, 1, 1), width=8, load_size=96, crop=64, train=_TINY_TRAIN,
                              weights_source="random"),
    }
    weights_help = (
        "FreDect weights: the FreDect classifier of github.com/Ekko-zn/AIGCDetectBenchmark (README download links) "
        "plus weights/auxiliary/dct_mean and dct_var from that repository; pass a folder holding all three "
        "with --weights."
    )

    def option_names(self) -> tuple[str, ...]:
        return ("num_classes", "init_seed", *STAT_FILES)

    def make_network(self, config: FreDectConfig, num_outputs: int) -> torch.nn.Module:
        shape = (3, config.crop, config.crop)
        self.dct_mean = torch.zeros(shape, dtype=torch.float64)
        self.dct_var = torch.ones(shape, dtype=torch.float64)
        self._stats_hwc = self._to_hwc()
        if all(k in self.options for k in STAT_FILES):
            mean_path, var_path = self._stat_paths(Path("."))
            self.set_statistics(self._load_stat(mean_path), self._load_stat(var_path), mean_path.parent)
        return bottleneck_resnet(config.layers, num_outputs, config.width)

    @property
    def input_policy(self) -> InputPolicy:
        return InputPolicy(
            resize=self.config.load_size, resize_mode="shorter_side", crop=self.config.crop, mean=None, std=None,
            scale=1.0, notes="AIGCDetectBenchmark processing_DCT: DCT-II ortho of uint8 pixels, log(|x|+1e-12), "
                             "(x - dct_mean) / sqrt(dct_var)",
        )

    def test_geometry(self, image: np.ndarray) -> np.ndarray:
        return center_crop(resize(image, self.config.load_size, "shorter_side"), self.config.crop)

    def to_input(self, image: np.ndarray) -> torch.Tensor:
        mean, std = self._stats_hwc
        if image.shape != mean.shape:
            raise ValueError(f"FreDect input must be {mean.shape[1]}x{mean.shape[0]} (the DCT statistics' size), "
                             f"got {image.shape[1]}x{image.shape[0]}")
        x = (dct_log_spectrum(image) - mean) / std
        return torch.from_numpy(x).permute(2, 0, 1).float()

    # ------------------------------------------------------------------ statistics
    def _to_hwc(self) -> tuple[np.ndarray, np.ndarray]:
        return self.dct_mean.permute(1, 2, 0).numpy(), np.sqrt(self.dct_var.permute(1, 2, 0).numpy())

    def set_statistics(self, mean: torch.Tensor, var: torch.Tensor, source: Path | str) -> None:
        """Per-coefficient mean and variance, each (3, crop, crop)."""
        for label, t in (("dct_mean", mean), ("dct_var", var)):
            if tuple(t.shape) != tuple(self.dct_mean.shape):
                raise UserError(f"{source}: {label} has shape {tuple(t.shape)}, expected {tuple(self.dct_mean.shape)}")
        if bool((var <= 0).any()):
            raise UserError(f"{source}: dct_var must be positive everywhere")
        self.dct_mean, self.dct_var = mean.double().clone(), var.double().clone()
        self._stats_hwc = self._to_hwc()

    def _load_stat(self, path: Path) -> torch.Tensor:
        obj = load_raw(path, allow_pickle=self.allow_pickle)
        if not isinstance(obj, torch.Tensor):
            raise UserError(f"{path}: expected a tensor of DCT statistics, got {type(obj).__name__}")
        return obj

    def _stat_paths(self, folder: Path) -> tuple[Path, Path]:
        paths = [Path(self.options[k]) if k in self.options else folder / k for k in STAT_FILES]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise UserError(f"FreDect needs its DCT statistics; not found: {', '.join(missing)}. {self.weights_help}")
        return paths[0], paths[1]

    # ------------------------------------------------------------------ loading
    def load_official(self, path: Path) -> None:
        state = strip_prefix(pick(load_raw(path, allow_pickle=self.allow_pickle), "netC", path), "module.")
        mean_path, var_path = self._stat_paths(path.parent)
        load_strict(self.network, state, path)
        self.set_statistics(self._load_stat(mean_path), self._load_stat(var_path), mean_path.parent)

    def load_official_dir(self, path: Path) -> None:
        candidates = sorted(p for p in path.iterdir() if p.suffix in (".pth", ".pt", ".ckpt"))
        if len(candidates) != 1:
            raise UserError(f"{path}: expected exactly one classifier .pth next to dct_mean/dct_var, "
                            f"found {[p.name for p in candidates]}")
        self.load_official(candidates[0])

    def state_for_checkpoint(self) -> dict[str, torch.Tensor]:
        return {**self.network.state_dict(), "dct_mean": self.dct_mean, "dct_var": self.dct_var}

    def load_our_state(self, state: Mapping[str, torch.Tensor], source: Path | str) -> None:
        state = dict(state)
        missing = [k for k in STAT_FILES if k not in state]
        if missing:
            raise UserError(f"{source} does not match FreDect: missing keys: {', '.join(missing)}")
        mean, var = state.pop("dct_mean"), state.pop("dct_var")
        load_strict(self.network, state, source)
        self.set_statistics(mean, var, source)

    def checkpoint_config(self) -> dict[str, Any]:
        return {**super().checkpoint_config(), "dct_statistics": "stored as dct_mean/dct_var in model.safetensors"}
