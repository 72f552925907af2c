"""TruFor: forensic fusion of RGB and Noiseprint++ for forgery detection and localization (plugin ``trufor``).

Paper: Guillaro, Cozzolino, Sud, Dufour, Verdoliva, "TruFor: Leveraging all-round clues for
trustworthy image forgery detection and localization", CVPR 2023. Official code and weights:
https://github.com/grip-unina/TruFor (``test_docker/src``; research-only licence for the weights),
re-written here.

Network (``models/cmx/builder_np_conf.py::myEncoderDecoder``, ``trufor.yaml``):
- ``dncnn``: Noiseprint++, a 17-layer DnCNN (3→64, 15 × conv+BN+ReLU, →1; frozen) on the RGB
  input in [0, 1); its map is tiled to 3 channels;
- ``backbone``: the dual-stream MiT-B2 with CMX fusion (:mod:`baselines.mit`) over the
  ImageNet-normalised RGB (normalised *inside* the network) and Noiseprint++;
- ``decode_head`` (2 classes) and ``decode_head_conf`` (1 channel): SegFormer MLP decoders
  (embedding 512); the localisation decoder's BatchNorm has eps 1e-3 (``init_weight`` with
  ``BN_EPS``), the confidence decoder's keeps 1e-5, as in the official model;
- ``detection``: ``weighted_statistics_pooling`` of the confidence logits and of the localisation
  logit difference weighted by ``log sigmoid(conf)`` (min, max, mean, mean square each) →
  Linear(8, 128) → ReLU → Dropout → Linear(128, 1).
Both maps are bilinearly upsampled (align_corners=False) to the input size before pooling.

Inference policy (``data_core.py`` + ``trufor_test.py``): full-resolution RGB **/256.0** (not 255),
batch size 1; ``map = softmax(out)[1]`` (index 1 = forged), ``score = sigmoid(det)``,
``conf = sigmoid(conf)``. probs = [1 − score, score]; the mask is the map at full resolution, and
the confidence map (``Prediction.confidence``, same forward pass, resized with the mask) is stored
with it, so a localization protocol can weight pixels by it (``confidence_weighting: true``,
docs/metrics.md). :meth:`TruFor.confidence` computes the map of one image on its own.

Weights (``--weights PATH``): ``weights/trufor.pth.tar`` from ``TruFor_weights.zip``
(https://www.grip.unina.it/download/prog/TruFor/TruFor_weights.zip, MD5
7bee48f3476c75616c3c5721ab256ff8): ``{'state_dict': ...}`` with unprefixed keys (``dncnn.*``,
``backbone.*``, ``decode_head.*``, ``decode_head_conf.*``, ``detection.*``), loaded strictly.
The file is a full pickle of a training checkpoint: it needs ``--allow-pickle`` only if it holds
objects besides tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from baselines.common import IMAGENET_MEAN, IMAGENET_STD
from baselines.mit import DualMiT, MiTConfig, mit_b2
from bench.checkpoint import is_our_checkpoint, load_checkpoint, load_raw, load_strict, pick, save_checkpoint
from bench.errors import UserError
from bench.model import Capability, Detector, DetectorOutput, InputPolicy, TrainOptions
from bench.types import LabelSpace


MIN_SIDE = 29
"""Smallest image side: stage 1 (7×7, stride 4) must give >= 8 rows for the 8×8 spatial reduction."""


@dataclass(frozen=True)
class TruForConfig:
    """Sizes of one TruFor configuration (``default`` = the released model)."""

    encoder: MiTConfig = field(default_factory=mit_b2)
    decoder_dim: int = 512
    np_layers: int = 17
    np_width: int = 64
    loc_bn_eps: float = 1e-3  # ``BN_EPS`` applied to decode_head only
    max_side: int | None = None  # None = the official full resolution


def noiseprint_dncnn(layers: int = 17, width: int = 64) -> nn.Sequential:
    """``make_net`` of ``models/DnCNN.py``: conv(bias)+ReLU, (layers−2) × conv+BN+ReLU, conv(bias) → 1 channel."""
    mods: list[nn.Module] = [nn.Conv2d(3, width, 3, 1, 1), nn.ReLU(inplace=True)]
    for _ in range(layers - 2):
        mods += [nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    mods.append(nn.Conv2d(width, 1, 3, 1, 1))
    return nn.Sequential(*mods)


class MLP(nn.Module):
    def __init__(self, cin: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cin, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.flatten(2).transpose(1, 2))


class DecoderHead(nn.Module):
    """SegFormer all-MLP decoder: per-scale Linear to ``dim``, upsample to 1/4 (bilinear, align_corners=False),
    concatenate (c4, c3, c2, c1), 1×1 conv+BN+ReLU, 1×1 conv to ``classes``."""

    def __init__(self, channels: Sequence[int], classes: int, dim: int, bn_eps: float = 1e-5) -> None:
        super().__init__()
        for k, c in enumerate(channels, start=1):
            setattr(self, f"linear_c{k}", MLP(c, dim))
        self.linear_fuse = nn.Sequential(nn.Conv2d(4 * dim, dim, 1), nn.BatchNorm2d(dim, eps=bn_eps),
                                         nn.ReLU(inplace=True))
        self.linear_pred = nn.Conv2d(dim, classes, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        c1 = feats[0]
        n = c1.shape[0]
        maps = []
        for k in (4, 3, 2, 1):
            f = feats[k - 1]
            m = getattr(self, f"linear_c{k}")(f).permute(0, 2, 1).reshape(n, -1, f.shape[2], f.shape[3])
            maps.append(m if k == 1 else F.interpolate(m, size=c1.shape[2:], mode="bilinear", align_corners=False))
        return self.linear_pred(self.linear_fuse(torch.cat(maps, dim=1)))


def weighted_statistics_pooling(x: torch.Tensor, log_w: torch.Tensor | None = None) -> torch.Tensor:
    """(B, C, H, W) → (B, 4C): soft-min, soft-max, mean and mean square under weights ``softmax(log_w)``."""
    b, c = x.shape[:2]
    x = x.reshape(b, c, -1)
    if log_w is None:
        log_w = torch.zeros((b, 1, x.shape[-1]), device=x.device, dtype=x.dtype)
    log_w = log_w.reshape(b, 1, -1)
    log_w = F.log_softmax(log_w, dim=-1)
    w = torch.exp(log_w)
    return torch.cat((-torch.logsumexp(log_w - x, dim=-1), torch.logsumexp(log_w + x, dim=-1),
                      torch.sum(w * x, dim=-1), torch.sum(w * x * x, dim=-1)), dim=1)


class TruForNetwork(nn.Module):
    """``forward(rgb in [0, 1))`` → (loc logits (B, 2, H, W), conf logits (B, 1, H, W), det logit (B, 1),
    NP++ (B, 3, H, W))."""

    def __init__(self, config: TruForConfig) -> None:
        super().__init__()
        dims = config.encoder.embed_dims
        self.dncnn = noiseprint_dncnn(config.np_layers, config.np_width)
        self.dncnn.requires_grad_(False)
        self.backbone = DualMiT(config.encoder)
        self.decode_head = DecoderHead(dims, 2, config.decoder_dim, config.loc_bn_eps)
        self.decode_head_conf = DecoderHead(dims, 1, config.decoder_dim)
        self.detection = nn.Sequential(nn.Linear(8, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 1))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        size = rgb.shape[2:]
        npp = self.dncnn(rgb).repeat(1, 3, 1, 1)
        feats = self.backbone((rgb - self.mean) / self.std, npp)
        out = F.interpolate(self.decode_head(feats), size=size, mode="bilinear", align_corners=False)
        conf = F.interpolate(self.decode_head_conf(feats), size=size, mode="bilinear", align_corners=False)
        f1 = weighted_statistics_pooling(conf)
        f2 = weighted_statistics_pooling(out[:, 1:2] - out[:, 0:1], F.logsigmoid(conf))
        return out, conf, self.detection(torch.cat((f1, f2), dim=-1)), npp


#: ``tiny``: MiT widths 8/16/32/64, one block per stage, decoder 16, a 4-layer 8-wide DnCNN
TINY = TruForConfig(encoder=MiTConfig(embed_dims=(8, 16, 32, 64), num_heads=(1, 2, 2, 4), depths=(1, 1, 1, 1)),
                    decoder_dim=16, np_layers=4, np_width=8)


class TruFor(Detector):
    """TruFor detector + localizer.

    Options: ``max_side`` (None = the configuration's value; official: full resolution): a limit
    on the longer image side; larger images are downscaled (bicubic, aspect kept) before the
    network and the map is resized back (a deviation from the official policy, for memory);
    ``train_phase`` (2 or 3): which official training phase ``fit`` runs
    (:mod:`baselines.trufor_training`; phase 3 starts from phase-2 weights given as ``--weights``).
    """

    name = "trufor"
    label_space = LabelSpace.BINARY
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.DETECT, Capability.LOCALIZE})
    configs: ClassVar[dict[str, TruForConfig]] = {
        "default": TruForConfig(),
        "max1024": TruForConfig(max_side=1024),
        "tiny": TINY,
    }
    weights_help = (
        "The official TruFor weights are weights/trufor.pth.tar inside TruFor_weights.zip "
        "(https://www.grip.unina.it/download/prog/TruFor/TruFor_weights.zip, linked from "
        "https://github.com/grip-unina/TruFor; MD5 7bee48f3476c75616c3c5721ab256ff8); pass that file as "
        "--weights. Nothing is downloaded at run time (docs/localizers.md)."
    )

    def build(self, config: TruForConfig, max_side: int | None = None, train_phase: int = 2, **unknown: Any) -> None:
        if unknown:
            raise UserError(f"Unknown option(s) for trufor: {', '.join(sorted(unknown))}; known: max_side, train_phase")
        if train_phase not in (2, 3):
            raise UserError(f"trufor train_phase must be 2 or 3 (phase 1, Noiseprint++, is not released), "
                            f"got {train_phase!r}")
        self.train_phase = train_phase
        if max_side is not None and (not isinstance(max_side, int) or max_side < 32):
            raise UserError(f"trufor max_side must be None or an integer >= 32, got {max_side!r}")
        self.max_side = config.max_side if max_side is None else max_side
        self.net = TruForNetwork(config)

    def load_weights(self, path: Path) -> None:
        if is_our_checkpoint(path):
            state, saved = load_checkpoint(path)
            if saved.get("model") not in (None, self.name):
                raise UserError(f"{path} holds a {saved.get('model')!r} checkpoint, not {self.name!r}")
            load_strict(self.net, state, path)
            return
        if path.is_dir():
            raise UserError(f"{path} is a directory; trufor expects weights/trufor.pth.tar. {self.weights_help}")
        raw = load_raw(path, allow_pickle=self.allow_pickle)
        load_strict(self.net, pick(raw, "state_dict", path), path)

    def save(self, out_dir: Path, extra: dict[str, Any] | None = None) -> Path:
        """Our format (``model.safetensors`` + ``config.json``; the official key names) into ``out_dir``."""
        config = {"model": self.name, "config": self.config_name, "options": {"max_side": self.max_side},
                  **(extra or {})}
        return save_checkpoint(out_dir, self.net.state_dict(), config)

    def fit(self, train: Any, val: Any, options: TrainOptions) -> dict[str, Any]:
        """The official phase-2 or phase-3 recipe (option ``train_phase``); selection on ``val``."""
        from dataclasses import replace

        from baselines.trufor_training import RECIPES, TruForRecipe, train_trufor

        recipe = replace(RECIPES.get(self.config_name, TruForRecipe()), phase=self.train_phase)
        return train_trufor(self, train, val, options, recipe)

    @property
    def input_policy(self) -> InputPolicy:
        return InputPolicy(
            resize=self.max_side, resize_mode="longest_side", interpolation="bicubic", scale=256.0,
            colour_order="RGB",
            notes=("official data_core.py: full-resolution RGB / 256.0, batch size 1; ImageNet mean/std are "
                   "applied inside the network (RGB stream only); map = softmax(out)[1], score = sigmoid(det); "
                   "resize only when max_side is set (downscale only, aspect kept)"),
        )

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """RGB uint8 (H, W, 3) → float32 (3, H', W') = pixels / 256 (H', W' = H, W unless max_side applies).

        Sides below :data:`MIN_SIDE` are refused (a per-sample error): the stride-4 stage-1 map must be
        at least as large as the stage-1 spatial-reduction kernel (8), or the official network fails too.
        """
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        if self.max_side is not None and max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            image = np.asarray(Image.fromarray(image).resize(size, resample=Image.Resampling.BICUBIC))
        if min(image.shape[:2]) < MIN_SIDE:
            raise ValueError(f"trufor needs images of at least {MIN_SIDE} px per side (network input "
                             f"{image.shape[0]}x{image.shape[1]}): the official MiT stage 1 cannot reduce a "
                             "smaller map")
        return torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(256.0)

    def forward(self, batch: torch.Tensor) -> DetectorOutput:
        """probs (B, 2) = [1 − sigmoid(det), sigmoid(det)]; mask (B, H, W) = softmax(out)[:, 1];
        confidence (B, H, W) = sigmoid(conf)."""
        out, conf, det, _ = self.net(batch)
        score = torch.sigmoid(det.float())[:, 0]
        mask = torch.softmax(out.float(), dim=1)[:, 1]
        return DetectorOutput(probs=torch.stack([1.0 - score, score], dim=1), mask=mask,
                              confidence=torch.sigmoid(conf.float())[:, 0])

    def confidence(self, image: np.ndarray) -> np.ndarray:
        """The official confidence map ``sigmoid(conf)`` (H', W') of one RGB uint8 image, float32 in [0, 1]."""
        with torch.inference_mode():
            _, conf, _, _ = self.net(self.preprocess(image)[None].to(self.device))
        return torch.sigmoid(conf[0, 0].float()).cpu().numpy()
