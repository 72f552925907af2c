"""Gram-Net: "Global Texture Enhancement for Fake Face Detection in the Wild".

Liu, Qi, Torr, CVPR 2020. Official code: liuzhengzhe/Global_Texture_Enhancement_for_Fake_Face_
Detection_in_the-Wild (``*/resnet18_gram.py``, ``*/demo.py``, ``*/main.py``; the three folders
hold the same network). AIGCDetectBenchmark re-trains it (``networks/resnet_gram.py``).

- Network (written here): a ResNet-18 trunk (``conv1``, ``bn1``, ``layer1..4``, no ``fc``) and six
  Gram branches on the input, the post-ReLU stem, the post-max-pool stem and ``layer1..3``: a
  3×3 conv to 32 channels + BN + ReLU, the Gram matrix ``F Fᵀ / (C·H·W)`` as a 1×32×32 image, two
  stride-2 3×3 convs (16, 32 channels) + BN + ReLU, global average pooling; every branch is
  multiplied by one shared learnable ``ScaleLayer`` (``scale.scale``). The 512 + 6·32 = 704
  features go to ``fcnewr``: Linear(704, 512), ReLU, Dropout(0.5), Linear(512, 2), LogSoftmax.
  **Index 0 = fake, 1 = real** (README); the plugin returns the standard [p_real, p_fake].
- Official test policy (``demo.py``): ``cv2.imread`` (BGR), ``cv2.resize`` to 512×512 (bilinear,
  no antialiasing), raw 0–255 floats, no normalisation. Odd or tiny sizes need no special
  case: every image is resized to 512×512 first, and the Gram matrices are 32×32 at any size.
- Official checkpoints (Google Drive, README): ``stylegan-ffhq.pth``, ``stylegan-cele.pth``,
  ``pggan-celeba.pth`` are whole pickled ``nn.Module`` objects (``torch.save(model)``). They load
  only with ``--allow-pickle`` (the official ``resnet18_gram`` module is replaced by stubs, so it
  need not be importable); or pass their ``.state_dict()`` (docs/baselines.md gives the one-liner).
- ``aigc`` configuration: AIGCDetectBenchmark's re-trained ``Gram`` weights: the same network with
  ``fcnewr`` ending in Linear(512, 1) (one logit, sigmoid = P(fake)), file ``{'netC': state}``
  (``module.`` stripped), test policy Resize(256, shorter side, PIL bilinear), CenterCrop(224),
  RGB, ImageNet mean/std. Not weight-compatible with the official 2-way head: each configuration
  refuses the other's file with one line.
- Training (``main.py``): Adam (weight decay 1e-4; lr 3e-4 then overwritten to 1e-5), NLLLoss,
  batch 14, 5 epochs, every image cv2-resized to a random square side in [64, 256] and back to
  512×512 (BGR, raw), no flip. Deviation: the official loop selects the model on *test* images
  after every step; here selection is on the validation split after every epoch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
import numpy as np
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from baselines.common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SingleLogitDetector,
    center_crop,
    check_shorter_side_resize,
    resize,
    to_tensor,
)
from baselines.training import TrainRecipe
from bench.checkpoint import load_pickled_module_state, load_strict, strip_prefix, tensors_only
from bench.errors import UserError
from bench.model import InputPolicy

log = logging.getLogger(__name__)
DOCS = "see docs/baselines.md#gram-net"
OFFICIAL_SOURCE = "resnet18_gram"
# Gram branches in official order: (input conv, first stride-2 conv, second stride-2 conv).
BRANCHES = (
    ("conv_interi_0", "gi_fc1", "gi_fc2"),  # the input image
    ("conv_inter0_0", "g0_fc1", "g0_fc2"),  # stem after conv1-bn1-ReLU
    ("conv_inter1_0", "g_fc1r", "g_fc2r"),  # stem after max-pool
    ("conv_inter2_0", "g2_fc1", "g2_fc2"),  # layer1
    ("conv_inter3_0", "g3_fc1", "g3_fc2"),  # layer2
    ("conv_inter4_0", "g4_fc1", "g4_fc2"),  # layer3
)


def gram_matrix(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, 1, C, C): ``F Fᵀ / (C·H·W)`` with F = x as (B, C, H·W)."""
    b, c, h, w = x.shape
    f = x.reshape(b, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)).unsqueeze(1).div(c * h * w)


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class ScaleLayer(nn.Module):
    """Multiplies its input by one learnable scalar (``scale``, initialised to 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class GramResNet(nn.Module):
    """Gram-Net with the official key names; ``forward`` returns standard-order logits.

    Args:
        layers, width: BasicBlocks per stage and stem width ((2, 2, 2, 2), 64 = ResNet-18).
        gram_channels: channels of each branch's first conv (= the Gram matrix side, 32).
        branch_width: channels of a branch's first stride-2 conv (16; the second has twice that).
        hidden: width of ``fcnewr``'s hidden layer (512).
        num_outputs: 1 (binary) or 3 (ternary retraining head).
        log_softmax_head: True = the official ``fcnewr`` (2-way + LogSoftmax, index 0 = fake;
            3-way + LogSoftmax for the ternary head); False = AIGCDetectBenchmark's Linear(512, n).
    """

    def __init__(self, layers: tuple[int, int, int, int] = (2, 2, 2, 2), width: int = 64, gram_channels: int = 32,
                 branch_width: int = 16, hidden: int = 512, num_outputs: int = 1,
                 log_softmax_head: bool = True) -> None:
        super().__init__()
        self.log_softmax_head = log_softmax_head
        self.official_binary = log_softmax_head and num_outputs == 1
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = width
        for i, blocks in enumerate(layers):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes:
                downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                           nn.BatchNorm2d(planes))
            stage = [BasicBlock(inplanes, planes, stride, downsample)] + [BasicBlock(planes, planes)
                                                                          for _ in range(1, blocks)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.scale = ScaleLayer()
        taps = (3, width, width, width, 2 * width, 4 * width)  # channels of the six tapped features
        for (inter, fc1, fc2), cin in zip(BRANCHES, taps):
            setattr(self, inter, _conv_bn_relu(cin, gram_channels, 1))
            setattr(self, fc1, _conv_bn_relu(1, branch_width, 2))
            setattr(self, fc2, _conv_bn_relu(branch_width, 2 * branch_width, 2))
        head_out = (2 if self.official_binary else num_outputs)
        tail: list[nn.Module] = [nn.LogSoftmax(dim=1)] if log_softmax_head else []
        self.fcnewr = nn.Sequential(nn.Linear(inplanes + 6 * 2 * branch_width, hidden), nn.ReLU(), nn.Dropout(0.5),
                                    nn.Linear(hidden, head_out), *tail)
        for m in self.modules():  # the official (torchvision) initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def head_output(self, x: torch.Tensor) -> torch.Tensor:
        """The official output: ``fcnewr`` of the 704 features (log-probabilities [fake, real]
        for the official binary head; one logit for the AIGCDetectBenchmark head)."""
        stem = self.relu(self.bn1(self.conv1(x)))
        pooled = self.maxpool(stem)
        f1 = self.layer1(pooled)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        trunk = torch.flatten(self.avgpool(self.layer4(f3)), 1)
        feats = [trunk]
        for (inter, fc1, fc2), tap in zip(BRANCHES, (x, stem, pooled, f1, f2, f3)):
            g = gram_matrix(getattr(self, inter)(tap))
            g = getattr(self, fc2)(getattr(self, fc1)(g))
            feats.append(self.scale(torch.flatten(self.avgpool(g), 1)))
        return self.fcnewr(torch.cat(feats, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, 1) fake logit (official head: log p_fake − log p_real) or (B, 3)."""
        out = self.head_output(x)
        return out[:, :1] - out[:, 1:] if self.official_binary else out


@dataclass(frozen=True)
class GramNetConfig:
    """Network sizes and test policy.

    ``policy``: ``"official"`` (BGR, cv2 square resize to ``size``, raw 0–255) or ``"aigc"``
    (RGB, PIL Resize(``size``) shorter side, CenterCrop(``crop``), ImageNet mean/std).
    ``augment_sizes``: the official training's random square down-scale side range."""

    layers: tuple[int, int, int, int] = (2, 2, 2, 2)
    width: int = 64
    gram_channels: int = 32
    branch_width: int = 16
    hidden: int = 512
    policy: str = "official"
    size: int = 512
    crop: int | None = None
    augment_sizes: tuple[int, int] = (64, 256)
    train: TrainRecipe = field(default_factory=lambda: TrainRecipe(
        optimizer="adam", lr=1e-5, weight_decay=1e-4, batch_size=14, epochs=5, schedule="step", step_epochs=10**6,
        lr_factor=1.0, load_size=None, crop_size=None, flip=False))
    weights_source: str = "Gram-Net README (Google Drive): stylegan-ffhq.pth, stylegan-cele.pth, pggan-celeba.pth"


# AIGCDetectBenchmark's train.py (CNNDetection options): Adam 1e-4, batch 64, resize 256, blur/JPEG p=0.1,
# random crop 224, flip; lr/10 after 5 epochs without validation-accuracy gain.
_AIGC_TRAIN = TrainRecipe(optimizer="adam", lr=1e-4, batch_size=64, epochs=1000, schedule="plateau", patience=5,
                          load_size=256, crop_size=224, blur_prob=0.1, jpeg_prob=0.1)
# sid-mini-sized recipe: 96×96 input (the sid-mini size: the official resize is the identity there) and no
# down/up-scale augmentation (it erases the few-pixel up-sampling traces of sid-mini, as blur/JPEG do for cnnspot).
_TINY_TRAIN = TrainRecipe(optimizer="adam", lr=1e-3, weight_decay=1e-4, batch_size=16, epochs=4, schedule="step",
                          step_epochs=10**6, lr_factor=1.0, load_size=None, crop_size=None, flip=False)


class GramNet(SingleLogitDetector):
    """Gram-Net detector; options ``num_classes`` (2 or 3), ``init_seed``."""

    name = "gram_net"
    configs = {
        "default": GramNetConfig(),
        "aigc": GramNetConfig(policy="aigc", size=256, crop=224,
                              train=_AIGC_TRAIN, weights_source="AIGCDetectBenchmark weights/classifier/Gram.pth"),
        "tiny": GramNetConfig(layers=(1, 1, 1, 1), width=8, gram_channels=8, branch_width=4, hidden=32, size=96,
                              augment_sizes=(96, 96), train=_TINY_TRAIN, weights_source="random"),
    }
    weights_help = (
        "Official Gram-Net weights: the Google Drive folder linked from the README of github.com/liuzhengzhe/"
        "Global_Texture_Enhancement_for_Fake_Face_Detection_in_the-Wild (whole pickled models: pass --allow-pickle, "
        "or their extracted state dict); AIGCDetectBenchmark's Gram.pth with gram_net:aigc; " + DOCS + "."
    )

    def make_network(self, config: GramNetConfig, num_outputs: int) -> nn.Module:
        if config.policy not in ("official", "aigc"):
            raise UserError(f"Unknown Gram-Net policy {config.policy!r}; expected official or aigc")
        return GramResNet(config.layers, config.width, config.gram_channels, config.branch_width, config.hidden,
                          num_outputs, log_softmax_head=config.policy == "official")

    @property
    def input_policy(self) -> InputPolicy:
        if self.config.policy == "aigc":
            return InputPolicy(resize=self.config.size, crop=self.config.crop, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                               notes="AIGCDetectBenchmark processing(): PIL Resize(256) shorter side, CenterCrop(224)")
        return InputPolicy(resize=self.config.size, resize_mode="square", scale=1.0, colour_order="BGR",
                           notes="Gram-Net demo.py: cv2.resize INTER_LINEAR (no antialiasing) to a square, "
                                 "raw 0-255 BGR floats, no normalisation; output index 0 = fake (converted)")

    # ------------------------------------------------------------------ preprocessing
    def test_geometry(self, image: np.ndarray) -> np.ndarray:
        if image.ndim != 3 or image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"Gram-Net needs a non-empty (H, W, 3) image, got shape {image.shape}")
        if self.config.policy == "aigc":
            check_shorter_side_resize(image, self.config.size)
            image = resize(image, self.config.size, "shorter_side")
            return center_crop(image, self.config.crop) if self.config.crop else image
        return cv2_square(image, self.config.size)

    def to_input(self, image: np.ndarray) -> torch.Tensor:
        if self.config.policy == "aigc":
            return to_tensor(image, IMAGENET_MEAN, IMAGENET_STD)
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        return torch.from_numpy(bgr).permute(2, 0, 1).float()

    def train_item(self, image: np.ndarray, recipe: TrainRecipe, rng: np.random.Generator) -> torch.Tensor:
        """Official policy: cv2 square resize to a random side in ``augment_sizes``, then to
        ``size`` (``main.py``'s ``default_loader``); the AIGC policy uses the shared recipe."""
        if self.config.policy == "aigc":
            return super().train_item(image, recipe, rng)
        lo, hi = self.config.augment_sizes
        return self.to_input(cv2_square(cv2_square(image, int(rng.integers(lo, hi + 1))), self.config.size))

    def eval_item(self, image: np.ndarray, recipe: TrainRecipe) -> torch.Tensor:
        return super().eval_item(image, recipe) if self.config.policy == "aigc" else self.preprocess(image)

    # ------------------------------------------------------------------ checkpoints
    def load_official(self, path: Path) -> None:
        raw = load_pickled_module_state(path, (OFFICIAL_SOURCE,), allow_pickle=self.allow_pickle)
        aigc_file = isinstance(raw, dict) and ("netC" in raw or "model" in raw)
        if aigc_file:
            raw = raw["netC"] if "netC" in raw else raw["model"]
        try:
            state = strip_prefix(tensors_only(raw, path), "module.")
        except UserError as exc:
            raise UserError(f"{exc}; expected {self._expected_layout()}; {DOCS}") from exc
        head = state.get("fcnewr.3.weight")
        fc = state.get("fc.weight")
        if head is None and fc is not None and fc.shape[0] == 1000:
            self._load_imagenet_trunk(state, path)
            return
        if head is None:
            raise UserError(f"{path} is not a Gram-Net checkpoint (no fcnewr.3.weight); expected "
                            f"{self._expected_layout()}; {DOCS}")
        self._check_head(path, int(head.shape[0]), aigc_file)
        try:
            load_strict(self.network, state, path)
        except UserError as exc:
            raise UserError(f"{exc}. Expected {self._expected_layout()}; {DOCS}") from exc

    def _load_imagenet_trunk(self, state: dict[str, torch.Tensor], path: Path) -> None:
        """An ImageNet ResNet-18 (torchvision keys): the official training start point
        (``resnet18(pretrained=True)`` + ``strict=False``): trunk loaded, branches and head random."""
        trunk = nn.Module()  # the network's own trunk modules, so the load is strict on exactly them
        for name in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4"):
            trunk.add_module(name, getattr(self.network, name))
        load_strict(trunk, {k: v for k, v in state.items() if not k.startswith("fc.")}, path)
        log.warning("%s is an ImageNet ResNet-18: trunk loaded, Gram branches and head keep their random "
                    "initialisation (the official training start point, not a detector)", path)

    def _expected_layout(self) -> str:
        if self.config.policy == "aigc":
            return "AIGCDetectBenchmark's {'netC': state dict} with fcnewr.3 = Linear(512, 1)"
        return ("the official whole pickled model (--allow-pickle) or its state dict, "
                "fcnewr.3 = Linear(512, 2) + LogSoftmax")

    def _check_head(self, path: Path, rows: int, aigc_file: bool) -> None:
        """Official (2-way LogSoftmax) and AIGCDetectBenchmark (1 logit) heads are not interchangeable."""
        if self.num_outputs == 3:
            return
        if self.config.policy == "official" and rows == 1:
            raise UserError(f"{path} is an AIGCDetectBenchmark Gram checkpoint (Linear(512, 1) head), not "
                            f"weight-compatible with the official 2-way Gram-Net head: use gram_net:aigc; {DOCS}")
        if self.config.policy == "aigc" and rows == 2:
            raise UserError(f"{path} is an official Gram-Net checkpoint (2-way LogSoftmax head, index 0 = fake), "
                            f"not weight-compatible with the AIGCDetectBenchmark head: use gram_net (default); {DOCS}")


def cv2_square(image: np.ndarray, size: int) -> np.ndarray:
    """``cv2.resize(image, (size, size))`` (INTER_LINEAR, no antialiasing), as the official code;
    colour order does not matter for the resize."""
    import cv2

    if image.shape[0] == size and image.shape[1] == size:
        return image
    return cv2.resize(np.ascontiguousarray(image), (size, size))

