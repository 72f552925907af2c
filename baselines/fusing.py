"""Fusing: "Fusing Global and Local Features for Generalized AI-Synthesized Image Detection".

Ju, Jia, Ke, Xue, Nagano, Lyu, ICIP 2022. Official code: littlejuyan/FusingGlobalandLocal
(``networks/trainer.py::Patch5Model``, ``networks/resnet.py``, ``data/dataset_train.py``,
``eval.py``, ``train.sh``); AIGCDetectBenchmark ships the same model (``networks/Patch5Model.py``).

- Network (``Patch5Model``, written here): one shared ImageNet-layout ResNet-50 (``resnet.*``; its
  unused 1000-way ``resnet.fc`` is part of the file) gives the 7×7×2048 layer-4 map and the
  pooled 2048-d embedding of the **global view** (Resize(224) shorter side, CenterCrop(224)).
  ``COOI`` picks 3 patches of 224² and 3 of 112² from the layer-4 map: per size, a stride-1
  average pool (3×3 / 2×2) summed over channels scores every window, the best is taken and its
  3×3 neighbourhood erased (NMS), three times; windows map to the **full-resolution** image as if
  the crop covered its central min(H, W) square, shifted inside the image (whole image when the
  image is smaller than the patch). Patches other than exactly 224×224 are bilinearly resized to
  224 (``align_corners=True``). The 6 patch embeddings and the global one (last) go through
  ``fc1`` (2048→128) + ReLU, three ``SA_layer``s (MultiheadAttention 4 heads, LayerNorms, MLP),
  and ``fc`` (128→1) on the global token: one logit, sigmoid = P(fake).
- Test policy (``data/dataset_train.py``): RGB, ImageNet mean/std on the full image and the
  crop; the test-time ``data_augment`` has probability 0. Images are run one at a time here
  (the patch choice is an argmax, so batching never changes it).
- Checkpoint: **no official weights are released.** ``eval.py`` loads ``torch.load(p)['model']``
  (``module.`` from DataParallel stripped here); AIGCDetectBenchmark's ``Fusing.pth`` has the
  same layout. An ImageNet ResNet-50 state dict (torchvision keys) is accepted as the official
  training start point (backbone only; the rest keeps its random initialisation).
- Training (``train.sh``): Adam lr 5e-5 (β1 0.9), batch 128, blur σ~U[0,3] and JPEG q~U{30..100}
  each with p=0.1, flip, no resize (full image); lr halved after 10 epochs without
  validation-accuracy gain. Deviations: the official loop keeps training at lr 1e-6 forever and
  validates with the same p=0.1 blur/JPEG; here training stops when lr falls below 1e-6 and
  validation is clean.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines.common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BottleneckResNet,
    SingleLogitDetector,
    center_crop,
    check_shorter_side_resize,
    logits_to_probs,
    resize,
    to_tensor,
)
from baselines.training import TrainRecipe, augment_crop
from bench.checkpoint import load_raw, load_strict, strip_prefix, tensors_only
from bench.errors import UserError
from bench.model import InputPolicy
from bench.types import Prediction

log = logging.getLogger(__name__)
DOCS = "see docs/baselines.md#fusing"

FusingItem = tuple[torch.Tensor, torch.Tensor]
"""(full-resolution image (3, H, W), global view (3, S, S)), both ImageNet-normalised."""


class Backbone(BottleneckResNet):
    """torchvision-layout ResNet returning (layer-4 map (B, C, h, w), pooled embedding (B, C))."""

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        fm = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return fm, torch.flatten(self.avgpool(fm), 1)


class SALayer(nn.Module):
    """Self-attention block: x + MHA(x) → LayerNorm, then x + MLP(x) → LayerNorm (post-norm)."""

    def __init__(self, dim: int = 128, heads: int = 4) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads)
        self.ln1 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim)
        self.ac = nn.ReLU()
        self.fc2 = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, dim) → (B, L, dim)."""
        t = x.transpose(0, 1)  # MultiheadAttention is sequence-first
        t = self.ln1(t + self.mha(t, t, t)[0]).transpose(0, 1)
        return self.ln2(t + self.fc2(self.ac(self.fc1(t))))


@dataclass(frozen=True)
class PatchSpec:
    """COOI: per patch size, the window (on the layer-4 map) that scores it and how many to pick."""

    sizes: tuple[int, ...] = (224, 112)
    windows: tuple[int, ...] = (3, 2)
    counts: tuple[int, ...] = (3, 3)


def select_patches(fm: torch.Tensor, scale: torch.Tensor, spec: PatchSpec) -> torch.Tensor:
    """COOI boxes (B, n, 4) = (top, left, bottom, right) on the full-resolution images.

    ``fm``: (B, C, h, w) layer-4 maps of the global views (non-negative: after ReLU);
    ``scale``: (B, 2) integer (H, W). The arithmetic (float32 rates, truncation) follows the
    official ``COOI.get_coordinates`` so that the same windows are chosen.
    """
    b, _, fm_h, fm_w = fm.shape
    scale = scale.long()
    scale_min = scale.min(dim=1, keepdim=True)[0]
    scale_base = (scale - scale_min) // 2
    boxes = []
    for size, window, count in zip(spec.sizes, spec.windows, spec.counts):
        score = F.avg_pool2d(fm, window, stride=1).sum(dim=1, keepdim=True)
        s_h, s_w = score.shape[2:]
        for _ in range(count):
            best, flat = score.view(b, -1).max(dim=1)
            row, col = flat // s_w, flat % s_w
            neighbourhood_max = F.max_pool2d(score, 3, stride=1, padding=1)
            score = score * (neighbourhood_max != best.view(-1, 1, 1, 1)).float()
            rate = torch.stack(((2 * row + fm_h - s_h + 1) / (2 * fm_h), (2 * col + fm_w - s_w + 1) / (2 * fm_w)), 1)
            centre = (scale_base + scale_min * rate).long()
            tl = centre - size // 2
            br = centre + size // 2 + size % 2
            below = tl.clamp(max=0)  # shift windows that start before the image ...
            tl, br = tl - below, br - below
            over = (br - scale).clamp(min=0)  # ... or end after it
            tl, br = (tl - over).clamp(min=0), br - over
            boxes.append(torch.cat((tl, br), dim=1))
    return torch.stack(boxes, dim=1)


class Patch5Net(nn.Module):
    """Patch5Model with the official key names (``resnet``, ``mha_list``, ``fc1``, ``fc``)."""

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3), width: int = 64, embed: int = 128,
                 heads: int = 4, num_outputs: int = 1, backbone_classes: int = 1000,
                 patch_spec: PatchSpec = PatchSpec(), view: int = 224) -> None:
        super().__init__()
        self.resnet = Backbone(layers, backbone_classes, width)
        self.mha_list = nn.Sequential(*[SALayer(embed, heads) for _ in range(3)])
        self.fc1 = nn.Linear(self.resnet.fc.in_features, embed)
        self.ac = nn.ReLU()
        self.fc = nn.Linear(embed, num_outputs)
        self.patch_spec, self.view, self.embed = patch_spec, view, embed

    def forward(self, images: Sequence[torch.Tensor], views: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``images``: B full-resolution (3, H_i, W_i); ``views``: (B, 3, S, S); ``scale``: (B, 2) (H, W).
        Returns (B, num_outputs) logits."""
        fm, whole = self.resnet.features(views)
        whole = self.ac(self.fc1(whole)).view(-1, 1, self.embed)
        boxes = select_patches(fm.detach(), scale, self.patch_spec)
        n = boxes.shape[1]
        patches = []
        for i in range(len(images)):
            for t, l, b, r in boxes[i].tolist():
                patch = images[i][:, t:b, l:r]
                if patch.shape[1:] != (self.view, self.view):
                    patch = F.interpolate(patch[None], size=(self.view, self.view), mode="bilinear",
                                          align_corners=True)[0]
                patches.append(patch)
        _, local = self.resnet.features(torch.stack(patches).to(views.device))
        local = self.ac(self.fc1(local)).view(-1, n, self.embed)
        tokens = self.mha_list(torch.cat((local, whole), dim=1))
        return self.fc(tokens[:, -1])


@dataclass(frozen=True)
class FusingConfig:
    """layers/width: the ResNet backbone ((3, 4, 6, 3), 64 = ResNet-50); view: global view side;
    patches: the COOI patch sizes on the full image (scored by 3×3 and 2×2 windows)."""

    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    width: int = 64
    embed: int = 128
    heads: int = 4
    backbone_classes: int = 1000
    view: int = 224
    patches: tuple[int, int] = (224, 112)
    train: TrainRecipe = field(default_factory=lambda: TrainRecipe(
        optimizer="adam", lr=5e-5, batch_size=128, epochs=10000, schedule="plateau", patience=10, min_delta=1e-4,
        lr_factor=0.5, load_size=None, crop_size=None, blur_prob=0.1, jpeg_prob=0.1))
    weights_source: str = "none released; AIGCDetectBenchmark weights/classifier/Fusing.pth has the official layout"


# sid-mini-sized: 96 px global view (the image itself), patches of 96 and 48 px, no blur/JPEG.
_TINY_TRAIN = TrainRecipe(optimizer="adam", lr=1e-3, batch_size=16, epochs=3, schedule="plateau", patience=5,
                          lr_factor=0.5, load_size=None, crop_size=None)


class Fusing(SingleLogitDetector):
    """Fusing (Patch5Model) detector; options ``num_classes`` (2 or 3), ``init_seed``."""

    name = "fusing"
    configs = {
        "default": FusingConfig(),
        "tiny": FusingConfig(layers=(1, 1, 1, 1), width=4, embed=16, heads=2, backbone_classes=8, view=96,
                             patches=(96, 48), train=_TINY_TRAIN, weights_source="random"),
    }
    weights_help = (
        "Fusing has no official weights: train with `sida-bench train --model fusing`, or pass "
        "AIGCDetectBenchmark's Fusing.pth ({'model': Patch5Model state dict}); " + DOCS + "."
    )

    def make_network(self, config: FusingConfig, num_outputs: int) -> nn.Module:
        spec = PatchSpec(sizes=tuple(config.patches), windows=(3, 2), counts=(3, 3))
        return Patch5Net(config.layers, config.width, config.embed, config.heads, num_outputs,
                         config.backbone_classes, spec, config.view)

    @property
    def input_policy(self) -> InputPolicy:
        return InputPolicy(resize=self.config.view, crop=self.config.view, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                           notes=f"global view: Resize({self.config.view}) shorter side + CenterCrop; "
                                 f"COOI patches {self.config.patches} px cut from the full-resolution "
                                 "ImageNet-normalised image")

    # ------------------------------------------------------------------ preprocessing
    def test_geometry(self, image: np.ndarray) -> np.ndarray:
        """The global view: Resize(view) shorter side (PIL bilinear), CenterCrop(view)."""
        return center_crop(resize(image, self.config.view, "shorter_side"), self.config.view)

    def to_input(self, image: np.ndarray) -> torch.Tensor:
        return to_tensor(image, IMAGENET_MEAN, IMAGENET_STD)

    def preprocess(self, image: np.ndarray) -> FusingItem:
        check_shorter_side_resize(image, self.config.view)
        return self.to_input(image), self.to_input(self.test_geometry(image))

    def train_item(self, image: np.ndarray, recipe: TrainRecipe, rng: np.random.Generator) -> FusingItem:
        """Official training: blur / JPEG / flip on the full image (no resize, no crop), then both views."""
        return self.preprocess(augment_crop(image, recipe, rng))

    def eval_item(self, image: np.ndarray, recipe: TrainRecipe) -> FusingItem:
        return self.preprocess(image)

    # ------------------------------------------------------------------ forward
    def batch_logits(self, items: list[Any]) -> torch.Tensor:
        full = [f.to(self.device) for f, _ in items]
        views = torch.stack([v for _, v in items]).to(self.device)
        scale = torch.tensor([tuple(f.shape[1:]) for f in full], device=self.device)
        return self.network(full, views, scale)

    def predict_preprocessed(self, items: Sequence[Any], sizes: Sequence[tuple[int, int]]) -> list[Prediction]:
        """One image at a time: results never depend on the batch."""
        out = []
        with torch.inference_mode():
            for item in items:
                probs = logits_to_probs(self.batch_logits([item]))[0]
                out.append(Prediction(probs=probs.double().cpu().numpy()))
        return out

    def logits(self, batch: Any) -> torch.Tensor:
        """Logits of a list of preprocessed items (one row each)."""
        return torch.cat([self.batch_logits([item]) for item in batch])

    # ------------------------------------------------------------------ checkpoints
    def load_official(self, path: Path) -> None:
        raw = load_raw(path, allow_pickle=self.allow_pickle)
        inner = raw["model"] if isinstance(raw, dict) and "model" in raw else raw
        try:
            state = strip_prefix(tensors_only(inner, path), "module.")
        except UserError as exc:
            raise UserError(f"{exc}; expected {{'model': Patch5Model state dict}}; {DOCS}") from exc
        fc = state.get("fc.weight")
        imagenet = fc is not None and fc.shape[0] == 1000 and not any(k.startswith("resnet.") for k in state)
        target = self.network.resnet if imagenet else self.network
        try:
            load_strict(target, state, path)
        except UserError as exc:
            raise UserError(f"{exc}. Expected {{'model': Patch5Model state dict}} (resnet.*, mha_list.*, fc1, fc; "
                            f"`module.` allowed) or an ImageNet ResNet-50 state dict; {DOCS}") from exc
        if imagenet:
            log.warning("%s is an ImageNet ResNet: loaded into the backbone only (the official training start "
                        "point, not a detector)", path)
