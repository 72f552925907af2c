"""LGrad: "Learning on Gradients: Generalized Artifacts Representation for GAN-Generated Images
Detection" (Tan, Zhao, Wei, Gu, Wei, CVPR 2023). Official code: chuangchuangtan/LGrad
(img2gad_pytorch/gen_imggrad.py, CNNDetection/eval_test8gan.py, train-detector.sh).

- Extractor (frozen): the StyleGAN discriminator of LSUN bedroom 256 in genforce's PyTorch layout
  (``build_model(gan_type='stylegan', module='discriminator', resolution=256, label_size=0)``,
  loaded strictly from ``karras2019stylegan-bedrooms-256x256_discriminator.pth``; keys ``lod``,
  ``input{i}.*``, ``layer{j}.*``, ``layer{j}.blur.kernel``). Per image: PIL bilinear
  ``Resize((256, 256))``, ``(x/255 - 0.5) / 0.5``, gradient of ``D(x).sum()`` w.r.t. the input,
  min-max normalised to [0, 255] over the whole H×W×3 array (all-zero stays zero), then the uint8
  PNG that ``cv2.imwrite(grad[..., ::-1])`` writes: float → uint8 by round-half-to-even with
  saturation (OpenCV's ``convertTo(CV_8U)``); the ``[..., ::-1]`` undoes cv2's BGR order, so the
  file holds the gradient in RGB order. Each image is its own minibatch: the discriminator's
  minibatch-std layer then adds a constant channel, exactly as the official script run with its
  batch size 1 (``transform_img2grad.sh``); larger official batches mix images in that layer.
- Classifier: CNNDetection ResNet-50, ``fc = Linear(2048, 1)``; ``eval_test8gan.py`` reads the
  256×256 gradient PNG with no resize and no crop, ImageNet mean/std; sigmoid(logit) = P(fake).
  Official classifier files (Google Drive, ``LGrad-4class-Trainon-Progan_car_cat_chair_horse.pth``
  …) are raw state dicts.
- Config ``aigcdetect``: AIGCDetectBenchmark's LGrad path (``data/process.py::processing_LGrad``):
  the gradient PNG is encoded without ``[..., ::-1]`` (channels reversed relative to the official
  pipeline), then Resize(256, shorter side) and CenterCrop 224 (its ``cropSize=256`` is never
  read); checkpoint ``{'model': state_dict}``.
- Training (``train-detector.sh``): Adam lr 5e-4 (β1 0.9), batch 16, 100 epochs, lr ×0.8 after
  every 10th epoch, Resize((256, 256)), random crop 224, flip, no blur/JPEG; ImageNet-initialised
  ResNet-50 with fc N(0, 0.02). Selection here is on validation accuracy (official: last epoch).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines.common import IMAGENET_MEAN, IMAGENET_STD, bottleneck_resnet, center_crop, reinit_head_from_imagenet
from baselines.common import resize, to_tensor
from baselines.frozen_extractor import ExtractorDetector
from baselines.training import TrainRecipe
from bench.checkpoint import load_raw, tensors_only
from bench.fixed_filters import dct_patch_filters
from bench.errors import UserError
from bench.model import InputPolicy

log = logging.getLogger(__name__)

DISCRIMINATOR_FILE = "karras2019stylegan-bedrooms-256x256_discriminator.pth"
_LRELU = 0.2
_FUSED_MIN_RES = 128  # genforce fused_scale='auto': strided conv from this resolution up


class _BlurFn(torch.autograd.Function):
    """Depthwise 3×3 blur whose backward is the flipped-kernel convolution (genforce's ``Blur``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(kernel)
        return F.conv2d(x, kernel, padding=1, groups=x.shape[1])

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (kernel,) = ctx.saved_tensors
        return F.conv2d(dy, kernel.flip((2, 3)), padding=1, groups=dy.shape[1]), None


class Blur(nn.Module):
    """[1, 2, 1]ᵀ[1, 2, 1] / 16 per channel; the kernel is a buffer (key ``blur.kernel``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        k = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]).astype(np.float32)
        self.register_buffer("kernel", torch.from_numpy(np.tile((k / k.sum())[None, None], (channels, 1, 1, 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _BlurFn.apply(x, self.kernel)


def minibatch_std(x: torch.Tensor, group_size: int, channels: int, eps: float = 1e-8) -> torch.Tensor:
    """StyleGAN's minibatch standard-deviation channel(s), groups of ``min(group_size, N)``."""
    g = min(group_size, x.shape[0])
    y = x.view(g, -1, channels, x.shape[1] // channels, x.shape[2], x.shape[3])
    y = torch.sqrt(torch.mean((y - y.mean(dim=0, keepdim=True)) ** 2, dim=0) + eps)
    y = y.mean(dim=[2, 3, 4], keepdim=True).mean(dim=2)
    return torch.cat([x, y.repeat(g, 1, x.shape[2], x.shape[3])], dim=1)


class ConvBlock(nn.Module):
    """Weight-scaled conv (+ minibatch std, blur, downsampling) + leaky ReLU 0.2, genforce order."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, *, downsample: bool = False, fused: bool = False,
                 mbstd: tuple[int, int] = (0, 1)) -> None:
        super().__init__()
        self.mbstd = mbstd if mbstd[0] > 1 else None
        cin += mbstd[1] if self.mbstd else 0
        self.blur = Blur(cin) if downsample else None
        self.fused, self.pool = downsample and fused, downsample and not fused
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.wscale = np.sqrt(2.0) / np.sqrt(kernel * kernel * cin)
        self.padding = 1 if self.fused else kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mbstd:
            x = minibatch_std(x, *self.mbstd)
        if self.blur is not None:
            x = self.blur(x)
        w = self.weight * self.wscale
        if self.fused:  # conv + 2×2 average pool as one stride-2 conv with a 4×4 kernel
            w = F.pad(w, (1, 1, 1, 1, 0, 0, 0, 0), "constant", 0.0)
            w = (w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]) * 0.25
        x = F.conv2d(x, w, self.bias * 1.0, stride=2 if self.fused else 1, padding=self.padding)
        if self.pool:
            x = F.avg_pool2d(x, 2, 2, 0)
        return F.leaky_relu(x, _LRELU)


class DenseBlock(nn.Module):
    def __init__(self, cin: int, cout: int, gain: float = np.sqrt(2.0), activation: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.wscale, self.activation = gain / np.sqrt(cin), activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x.reshape(x.shape[0], -1), self.weight * self.wscale, self.bias * 1.0)
        return F.leaky_relu(x, _LRELU) if self.activation else x


class StyleGANDiscriminator(nn.Module):
    """genforce's StyleGAN discriminator at level of detail 0 (the trained network); input RGB in
    [-1, 1], (B, 3, R, R) → (B, 1) scores. Keys as genforce (``input{i}`` from-RGB convs of every
    resolution are kept for the strict load; only ``input0`` is used at lod 0)."""

    def __init__(self, resolution: int = 256, fmaps_base: int = 16 << 10, fmaps_max: int = 512,
                 mbstd_group: int = 4, mbstd_channels: int = 1) -> None:
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise UserError(f"StyleGAN discriminator resolution must be a power of two >= 8, got {resolution}")
        self.resolution = resolution
        self.register_buffer("lod", torch.zeros(()))

        def nf(res: int) -> int:
            return min(fmaps_base // res, fmaps_max)

        final = int(np.log2(resolution))
        for block, log2 in enumerate(range(final, 1, -1)):
            res = 2**log2
            self.add_module(f"input{block}", ConvBlock(3, nf(res), kernel=1))
            if res != 4:
                self.add_module(f"layer{2 * block}", ConvBlock(nf(res), nf(res)))
                self.add_module(f"layer{2 * block + 1}", ConvBlock(nf(res), nf(res // 2), downsample=True,
                                                                   fused=res >= _FUSED_MIN_RES))
            else:
                self.add_module(f"layer{2 * block}", ConvBlock(nf(res), nf(res), mbstd=(mbstd_group, mbstd_channels)))
                self.add_module(f"layer{2 * block + 1}", DenseBlock(nf(res) * 16, nf(2)))
        self.add_module(f"layer{2 * block + 2}", DenseBlock(nf(2), 1, gain=1.0, activation=False))
        self.num_layers = 2 * block + 3

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if tuple(image.shape[1:]) != (3, self.resolution, self.resolution):
            raise ValueError(f"the discriminator needs (B, 3, {self.resolution}, {self.resolution}) inputs, "
                             f"got {tuple(image.shape)}")
        x = self.input0(image)
        for i in range(self.num_layers):
            x = getattr(self, f"layer{i}")(x)
        return x


def set_dct_front_end(discriminator: StyleGANDiscriminator, low_gain: float, high_gain: float) -> None:
    """Tiny configurations' stand-in for a pretrained discriminator (the official one is trained on
    LSUN bedrooms; a random one's input gradient barely depends on the image): ``input0`` passes R, G, B
    to its first three channels (others zero) and ``layer0`` applies a fixed 3×3 DCT filter bank
    (:func:`bench.fixed_filters.dct_patch_filters`, high frequencies first) to them, so the leaky-ReLU
    gates, and through them the gradient image, follow the image's high-frequency content. Effective
    weights are set (the stored ones divided by the layer's ``wscale``); biases are zero."""
    rgb, first = discriminator.input0, discriminator.layer0
    if rgb.weight.shape[0] < 3:
        raise UserError(f"a fixed DCT front end needs at least 3 feature maps in input0, got {rgb.weight.shape[0]}")
    with torch.no_grad():
        w = torch.zeros_like(rgb.weight)
        w[:3, :, 0, 0] = torch.eye(3) / rgb.wscale
        rgb.weight.copy_(w)
        rgb.bias.zero_()
        w = torch.zeros_like(first.weight)
        w[:, :3] = dct_patch_filters(3, w.shape[0], low_gain, high_gain) / first.wscale
        first.weight.copy_(w)
        first.bias.zero_()


def gradient_image(discriminator: StyleGANDiscriminator, image: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) → the official gradient PNG's pixels: (R, R, 3) uint8, RGB order."""
    size = discriminator.resolution
    device = next(discriminator.parameters()).device
    with torch.inference_mode(False), torch.enable_grad():
        x = to_tensor(resize(image, size, "square"), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))[None].to(device)
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(discriminator(x).sum(), x)
    return quantise_like_cv2(min_max_255(grad[0].permute(1, 2, 0).detach().cpu().numpy()))


def min_max_255(grad: np.ndarray) -> np.ndarray:
    """gen_imggrad.py's ``normlize_np`` (float32): minus the minimum, divided by the maximum unless it is 0, ×255."""
    img = grad.astype(np.float32, copy=True)
    img -= img.min()
    if img.max() != 0:
        img /= img.max()
    return img * np.float32(255.0)


def quantise_like_cv2(img: np.ndarray) -> np.ndarray:
    """OpenCV's float → uint8 ``convertTo`` (what ``imwrite`` does for PNG): round half to even, saturate."""
    return np.clip(np.rint(np.nan_to_num(img, nan=0.0)), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class LGradConfig:
    """Discriminator shape (official: LSUN bedroom 256), classifier ResNet and the AIGCDetectBenchmark quirks."""

    resolution: int = 256
    fmaps_base: int = 16 << 10
    fmaps_max: int = 512
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    width: int = 64
    layout: str = "official"  # "official": raw state dict, RGB gradient, no crop; "aigcdetect": see the docstring
    dct_gains: tuple[float, float] | None = None
    """Tiny configurations only: a fixed DCT filter bank with these (low, high) gains stands in for the
    pretrained discriminator (see :func:`set_dct_front_end`); None = the discriminator file's (official)."""
    train: TrainRecipe = field(default_factory=lambda: TrainRecipe(
        optimizer="adam", lr=5e-4, batch_size=16, epochs=100, schedule="step", step_epochs=10, lr_factor=0.8,
        load_size=256, resize_mode="square", crop_size=224))
    weights_source: str = (f"chuangchuangtan/LGrad: {DISCRIMINATOR_FILE} (img2gad_pytorch/README.md) + "
                           "LGrad-4class-Trainon-Progan_car_cat_chair_horse.pth (README, Google Drive)")


# sid-mini-sized recipe: the 128×128 gradient image (of a 128 px discriminator: 96 px sid-mini images are
# up-sampled; down-sampling them to 64 px erased the traces a random discriminator's gradient keeps), no crop,
# no blur/JPEG.
_TINY_TRAIN = TrainRecipe(optimizer="adam", lr=1e-3, batch_size=16, epochs=6, schedule="step", step_epochs=10,
                          lr_factor=0.8, load_size=None, crop_size=None)


class LGrad(ExtractorDetector):
    """LGrad detector; options: ``discriminator`` (path), ``num_classes`` (2 or 3), ``init_seed``."""

    name = "lgrad"
    configs = {
        "default": LGradConfig(),
        "aigcdetect": LGradConfig(layout="aigcdetect", weights_source=(
            f"{DISCRIMINATOR_FILE} + AIGCDetectBenchmark weights/classifier/LGrad.pth ({{'model': ...}})")),
        "tiny": LGradConfig(resolution=128, fmaps_base=2048, fmaps_max=16, layers=(1, 1, 1, 1), width=16,
                            dct_gains=(0.0, 4.0), train=_TINY_TRAIN,
                            weights_source="random; fixed DCT front end of the discriminator (bench.fixed_filters)"),
    }
    weights_help = (
        f"LGrad weights: {DISCRIMINATOR_FILE} (link in img2gad_pytorch/README.md of github.com/chuangchuangtan/LGrad) "
        "and a classifier .pth (README Google Drive link; lgrad:aigcdetect takes AIGCDetectBenchmark's LGrad.pth); "
        "put both in one folder and pass it with --weights, or pass the classifier with --weights and "
        "--option discriminator=PATH. See docs/baselines.md#lgrad."
    )
    extractor_option = "discriminator"
    docs_anchor = "docs/baselines.md#lgrad"
    extractor_file = DISCRIMINATOR_FILE

    def make_network(self, config: LGradConfig, num_outputs: int) -> nn.Module:
        return bottleneck_resnet(config.layers, num_outputs, config.width)

    def make_extractor(self, config: LGradConfig) -> nn.Module:
        discriminator = StyleGANDiscriminator(config.resolution, config.fmaps_base, config.fmaps_max)
        if config.dct_gains is not None:
            set_dct_front_end(discriminator, *config.dct_gains)
        return discriminator

    @property
    def input_policy(self) -> InputPolicy:
        aigc = self.config.layout == "aigcdetect"
        return InputPolicy(
            resize=self.config.resolution, resize_mode="square", crop=224 if aigc else None,
            mean=IMAGENET_MEAN, std=IMAGENET_STD,
            notes=(f"discriminator input: Resize(({self.config.resolution}, {self.config.resolution})), [-1, 1]; "
                   "classifier input: the min-max uint8 gradient image, ImageNet mean/std, "
                   + ("channels reversed and centre crop 224 (AIGCDetectBenchmark)" if aigc
                      else "no resize, no crop (eval_test8gan.py)")),
        )

    def compute_view(self, image: np.ndarray) -> np.ndarray:
        grad = gradient_image(self.extractor, image)
        return np.ascontiguousarray(grad[..., ::-1]) if self.config.layout == "aigcdetect" else grad

    def test_geometry(self, image: np.ndarray) -> np.ndarray:
        if self.config.layout == "aigcdetect":
            return center_crop(resize(image, 256, "shorter_side"), 224)
        return image

    def to_input(self, image: np.ndarray) -> torch.Tensor:
        return to_tensor(image, IMAGENET_MEAN, IMAGENET_STD)

    # ------------------------------------------------------------------ official files
    def read_extractor_state(self, path: Path) -> dict[str, torch.Tensor]:
        raw = load_raw(path, allow_pickle=self.allow_pickle)
        if not isinstance(raw, dict) or "lod" not in raw or "input0.weight" not in raw:
            keys = list(raw)[:5] if isinstance(raw, dict) else type(raw).__name__
            raise UserError(f"{path} is not a genforce StyleGAN discriminator state dict (expected keys lod, "
                            f"input0.weight, layer0.weight, ...; found {keys}). {self.weights_help}")
        state = tensors_only(raw, path)
        if float(state["lod"]) != 0.0:
            raise UserError(f"{path}: discriminator lod is {float(state['lod'])}; LGrad uses the trained network "
                            "(lod 0)")
        return state

    def load_classifier(self, path: Path) -> None:
        raw = load_raw(path, allow_pickle=self.allow_pickle)
        wrapped = isinstance(raw, dict) and "model" in raw
        if self.config.layout == "aigcdetect":
            if not wrapped:
                raise UserError(f"{path} is not an AIGCDetectBenchmark checkpoint (expected {{'model': ResNet-50 "
                                "state dict}}); official LGrad classifier files (raw state dicts) load with lgrad")
            state = tensors_only(raw["model"], path)
        else:
            if wrapped:
                raise UserError(f"{path} holds {{'model': ...}} (the AIGCDetectBenchmark layout); the official LGrad "
                                "classifier is a raw ResNet-50 state dict: use lgrad:aigcdetect for this file")
            state = tensors_only(raw, path)
        fc = state.get("fc.weight")
        if fc is not None and fc.shape[0] == 1000 and self.network.fc.out_features != 1000:
            log.warning("%s is an ImageNet classifier: fc re-initialised N(0, 0.02) (the official training start "
                        "point, not a detector)", path)
            state = reinit_head_from_imagenet(state, self.network)
        self.load_strict_hinted(self.network, state, path)
