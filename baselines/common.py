"""Helpers shared by the single-logit baselines (CNNSpot, UnivFD, NPR, FreDect).

Image conventions: inputs are RGB uint8 arrays of shape (H, W, 3); tensors are float32
(3, H, W). Geometric steps reproduce torchvision's PIL-image transforms that the official
code uses (``Resize`` = PIL bilinear with its built-in antialiasing, ``CenterCrop`` =
zero padding when the image is smaller than the crop), so the images a network sees match
the official test scripts.

:class:`SingleLogitDetector` is the base of the four baselines: one logit → probabilities
``[1 - sigmoid, sigmoid]`` = [p_real, p_fake] (binary), or, with ``num_classes=3`` (the
retrained-on-SID-Set rows), three logits → softmax over [real, full_synthetic, tampered].
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.checkpoint import OUR_CONFIG, is_our_checkpoint, load_checkpoint, load_strict
from bench.errors import UserError
from bench.image_size import check_resized_size
from bench.model import Detector, DetectorOutput, TrainOptions
from bench.types import LabelSpace

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

RESIZE_MODES = ("shorter_side", "square")


def resize(image: np.ndarray, size: int, mode: str = "shorter_side") -> np.ndarray:
    """Bilinear PIL resize, as torchvision ``Resize(size)`` / ``Resize((size, size))`` on a PIL image.

    ``shorter_side``: the shorter side becomes ``size`` and the longer one
    ``int(size * long / short)`` (torchvision's truncation); ``square``: (size, size).
    """
    h, w = image.shape[:2]
    if mode == "square":
        new_h, new_w = size, size
    elif mode == "shorter_side":
        if h <= w:
            new_h, new_w = size, int(size * w / h)
        else:
            new_h, new_w = int(size * h / w), size
    else:
        raise UserError(f"Unknown resize mode {mode!r}; expected one of {RESIZE_MODES}")
    if (new_h, new_w) == (h, w):
        return image
    check_resized_size(f"resize ({mode} to {size})", (h, w), (new_h, new_w))
    return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))


MAX_RESIZED_PIXELS = 64_000_000


def check_shorter_side_resize(image: np.ndarray, size: int) -> None:
    """Raise ValueError (a recorded per-sample failure) when a shorter-side resize to ``size`` of a
    degenerate image (e.g. 1×100000 px) would need more than ``MAX_RESIZED_PIXELS`` pixels."""
    h, w = image.shape[:2]
    if min(h, w) < 1:
        raise ValueError(f"empty image ({w}x{h})")
    if size * size * max(h, w) / min(h, w) > MAX_RESIZED_PIXELS:
        raise ValueError(f"a {w}x{h} image resized to {size} on its shorter side would have "
                         f"{int(size * size * max(h, w) / min(h, w))} pixels (limit {MAX_RESIZED_PIXELS})")


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Square centre crop as torchvision ``CenterCrop(size)``: images smaller than ``size`` are
    first zero-padded (black) symmetrically, the extra pixel going right/bottom."""
    h, w = image.shape[:2]
    if h < size or w < size:
        pad_h, pad_w = max(size - h, 0), max(size - w, 0)
        image = np.pad(image, ((pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2), (0, 0)))
        h, w = image.shape[:2]
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return image[top:top + size, left:left + size]


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Square crop at a uniformly random position (zero-padded first when too small)."""
    h, w = image.shape[:2]
    if h < size or w < size:
        return center_crop(image, size)
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return image[top:top + size, left:left + size]


def crop_to_even(image: np.ndarray) -> np.ndarray:
    """Drop the last row/column of odd-sized images (NPR needs even H and W)."""
    h, w = image.shape[:2]
    return image[: h - h % 2, : w - w % 2]


def to_tensor(image: np.ndarray, mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> torch.Tensor:
    """uint8 (H, W, 3) → float32 (3, H, W) in [0, 1], then ``(x - mean) / std`` per channel."""
    t = torch.from_numpy(np.require(image, np.uint8, ["C", "W"])).permute(2, 0, 1).float().div_(255.0)
    if mean is not None and std is not None:
        t = (t - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return t


def logits_to_probs(logits: torch.Tensor) -> torch.Tensor:
    """(B, 1) logit → (B, 2) [1 - sigmoid, sigmoid]; (B, K>1) → softmax."""
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits.float())
        return torch.cat([1.0 - p, p], dim=1)
    return torch.softmax(logits.float(), dim=1)


def num_outputs_for(num_classes: int) -> int:
    """2 classes → 1 logit (the official heads); 3 → 3 logits."""
    if num_classes not in (2, 3):
        raise UserError(f"num_classes must be 2 (binary) or 3 (ternary), got {num_classes!r}")
    return 1 if num_classes == 2 else 3


class SingleLogitDetector(Detector):
    """Base of the CNNDetection-family baselines.

    Subclasses set ``name``, ``configs`` (frozen dataclasses with a ``train`` recipe),
    ``weights_help`` and implement:

    - :meth:`make_network` → the ``nn.Module`` stored as ``self.network`` (logits (B, n));
    - :meth:`test_geometry` → the official test-time resize/crop of a uint8 image;
    - :meth:`to_input` → uint8 image (after geometry) → network input tensor;
    - :meth:`load_official` → load an official checkpoint file into ``self.network``;
    - optionally :meth:`extractor_view` → the uint8 image a frozen extractor makes of the input
      (LGrad's gradient image, LNP's noise image), before the geometry; identity by default.

    Options: ``num_classes`` (2 = official binary head, 3 = ternary head for retraining);
    ``init_seed`` (default 0): the seed of the random initialisation, so two builds of the
    same configuration start from identical weights.
    """

    def build(self, config: Any, **options: Any) -> None:
        unknown = set(options) - set(self.option_names())
        if unknown:
            raise UserError(
                f"Unknown option(s) {sorted(unknown)} for model {self.name!r}; known: {sorted(self.option_names())}"
            )
        self.num_outputs = num_outputs_for(int(options.get("num_classes", 2)))
        self.label_space = LabelSpace.BINARY if self.num_outputs == 1 else LabelSpace.TERNARY
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(options.get("init_seed", 0)))
            self.network = self.make_network(config, self.num_outputs)

    def option_names(self) -> tuple[str, ...]:
        """Options this plugin accepts (extend in subclasses)."""
        return ("num_classes", "init_seed")

    # ------------------------------------------------------------------ to implement
    @abc.abstractmethod
    def make_network(self, config: Any, num_outputs: int) -> torch.nn.Module:
        """The network with random weights, returning (B, num_outputs) logits."""

    @abc.abstractmethod
    def test_geometry(self, image: np.ndarray) -> np.ndarray:
        """The official test-time resize/crop of one RGB uint8 image."""

    @abc.abstractmethod
    def to_input(self, image: np.ndarray) -> torch.Tensor:
        """RGB uint8 image (after resize/crop) → the network's (3, H, W) float32 input."""

    @abc.abstractmethod
    def load_official(self, path: Path) -> None:
        """Load an official checkpoint into ``self.network`` (strict)."""

    def extractor_view(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 image → the uint8 image the classifier reads (training and test); identity here."""
        return image

    # ------------------------------------------------------------------ Detector API
    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return self.to_input(self.test_geometry(self.extractor_view(image)))

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Raw (B, num_outputs) logits for a preprocessed batch."""
        return self.network(batch)

    def forward(self, batch: torch.Tensor) -> DetectorOutput:
        logits = self.logits(batch)
        return DetectorOutput(probs=logits_to_probs(logits), logits=logits)

    def load_weights(self, path: Path) -> None:
        if is_our_checkpoint(path):
            state, saved = load_checkpoint(path)
            self.check_saved_config(saved, path)
            self.load_our_state(state, path)
        elif path.is_dir():
            self.load_official_dir(path)
        else:
            self.load_official(path)

    def load_official_dir(self, path: Path) -> None:
        """A directory that is not our format; override when an official release is several files."""
        raise UserError(f"{path} is a directory without {OUR_CONFIG}/model.safetensors. {self.weights_help}")

    def check_saved_config(self, saved: Mapping[str, Any], path: Path) -> None:
        """Our checkpoints record the model name, config and head size; they must match."""
        if saved.get("model") not in (None, self.name):
            raise UserError(f"{path} holds a {saved.get('model')!r} checkpoint, not {self.name!r}")
        want = saved.get("num_outputs")
        if want is not None and int(want) != self.num_outputs:
            raise UserError(
                f"{path} has a head with {want} output(s) but the model was built with {self.num_outputs}; "
                f"pass num_classes={2 if int(want) == 1 else 3} (--num-classes)"
            )

    # ------------------------------------------------------------------ training hooks
    def trainable_parameters(self) -> Iterator[torch.nn.Parameter]:
        """Parameters the optimizer updates (all by default)."""
        return (p for p in self.network.parameters() if p.requires_grad)

    def state_for_checkpoint(self) -> dict[str, torch.Tensor]:
        """What our safetensors checkpoint stores (the whole network by default)."""
        return dict(self.network.state_dict())

    def load_our_state(self, state: Mapping[str, torch.Tensor], source: Path | str) -> None:
        load_strict(self.network, state, source)

    def checkpoint_config(self) -> dict[str, Any]:
        """Identity written into config.json next to the weights."""
        info = self.describe()
        info.update(model=self.name, num_outputs=self.num_outputs)
        return info

    def set_train_mode(self, training: bool) -> None:
        self.network.train(training)

    def train_item(self, image: np.ndarray, recipe: Any, rng: np.random.Generator) -> Any:
        """One training input from a (``load_size``-resized) RGB uint8 image: the recipe's
        blur / JPEG / random crop / flip, then :meth:`to_input`."""
        from baselines.training import augment_crop

        return self.to_input(augment_crop(image, recipe, rng))

    def eval_item(self, image: np.ndarray, recipe: Any) -> Any:
        """One validation input: :meth:`extractor_view`, the recipe's resize and centre crop, then
        :meth:`to_input`."""
        from baselines.training import eval_geometry

        return self.to_input(eval_geometry(self.extractor_view(image), recipe))

    def batch_logits(self, items: list[Any]) -> torch.Tensor:
        """(B, num_outputs) logits of a list of training/validation items (with gradients)."""
        return self.network(torch.stack(items).to(self.device))

    def fit(self, train: Any, val: Any, options: TrainOptions) -> dict[str, Any]:
        from baselines.training import fit_detector

        return fit_detector(self, train, val, options, self.config.train)


def bottleneck_stage(inplanes: int, planes: int, blocks: int, stride: int) -> torch.nn.Sequential:
    """torchvision's ``ResNet._make_layer`` for Bottleneck blocks (same key names): ``blocks`` blocks
    of output width ``4 * planes``, the first one with stride ``stride`` and a 1×1 projection."""
    from torch import nn
    from torchvision.models.resnet import Bottleneck

    width = planes * Bottleneck.expansion
    downsample = None
    if stride != 1 or inplanes != width:
        downsample = nn.Sequential(nn.Conv2d(inplanes, width, kernel_size=1, stride=stride, bias=False),
                                   nn.BatchNorm2d(width))
    return nn.Sequential(Bottleneck(inplanes, planes, stride, downsample),
                         *[Bottleneck(width, planes) for _ in range(1, blocks)])


def init_resnet_(network: torch.nn.Module) -> None:
    """torchvision's ResNet initialisation: Kaiming-normal (fan_out) convolutions, BN weight 1 / bias 0."""
    from torch import nn

    for m in network.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BottleneckResNet(torch.nn.Module):
    """torchvision's Bottleneck ResNet (same layout and key names: ``conv1`` 7×7/2, ``bn1``, max-pool,
    ``layer1..4``, ``fc``) with a base width ``width``: 64 and ``layers=(3, 4, 6, 3)`` is exactly
    ResNet-50 (``torchvision.models.resnet50(weights=None)``) with ``fc = Linear(2048, num_outputs)``;
    a smaller width only narrows every stage (the ``tiny`` configurations); ``in_channels`` is the
    width of ``conv1``'s input (5 for LNP's official classifier)."""

    def __init__(self, layers: tuple[int, int, int, int], num_outputs: int, width: int = 64,
                 in_channels: int = 3) -> None:
        from torch import nn

        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = width
        for i, blocks in enumerate(layers):
            planes = width * 2**i
            setattr(self, f"layer{i + 1}", bottleneck_stage(inplanes, planes, blocks, 1 if i == 0 else 2))
            inplanes = planes * 4
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, num_outputs)
        init_resnet_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def bottleneck_resnet(layers: tuple[int, int, int, int], num_outputs: int, width: int = 64) -> torch.nn.Module:
    """A :class:`BottleneckResNet`; ``(3, 4, 6, 3)`` with width 64 is exactly ResNet-50."""
    return BottleneckResNet(layers, num_outputs, width)


def reinit_head_from_imagenet(state: Mapping[str, torch.Tensor], network: torch.nn.Module,
                              gain: float = 0.02) -> dict[str, torch.Tensor]:
    """An ImageNet ResNet state dict (1000-way ``fc``) as the official training start point:
    the backbone is kept, ``fc.weight`` is drawn from N(0, gain) and ``fc.bias`` keeps
    PyTorch's default init, as CNNDetection's ``Trainer`` does after ``resnet50(pretrained=True)``."""
    out = {k: v for k, v in state.items() if not k.startswith("fc.")}
    fc = network.fc
    out["fc.weight"] = torch.randn_like(fc.weight) * gain
    out["fc.bias"] = fc.bias.detach().clone()
    return out
