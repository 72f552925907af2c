"""SIDA's two input branches, as the official data code builds them (``utils/SID_Set.py``).

- SAM branch: RGB uint8 → ResizeLongestSide(S) (torchvision PIL resize, bilinear; S = 1024 for
  the released models) → (x − SAM mean) / SAM std on the 0..255 scale → zero-pad bottom/right to
  S×S. Returns (3, S, S) float32 and the resized (h, w).
- CLIP branch: ``CLIPImageProcessor`` behaviour (transformers 4.31, used by the official code):
  resize the shorter side to C (PIL bicubic, longer side ``int(C · long / short)``), centre crop
  C×C, scale to [0, 1], normalise with CLIP mean/std. Returns (3, C, C) float32. Done with PIL
  and torch here; nothing is fetched from the hub.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from segment_anything.utils.transforms import ResizeLongestSide

from bench.image_size import check_long_side_resize, check_resized_size
from sida.config import CLIP_MEAN, CLIP_STD, SAM_MEAN, SAM_STD


@dataclass
class SidaInput:
    """One preprocessed image: both branches and the size bookkeeping for masks."""

    image_sam: torch.Tensor  # (3, S, S) float32
    image_clip: torch.Tensor  # (3, C, C) float32
    resize_size: tuple[int, int]  # (h, w) after ResizeLongestSide, before padding
    original_size: tuple[int, int]  # (H, W) of the input image

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.image_sam.shape)


def check_rgb_uint8(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")


def sam_input(image: np.ndarray, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """RGB uint8 (H, W, 3) → ((3, size, size) float32 normalised and padded, resized (h, w))."""
    check_rgb_uint8(image)
    check_long_side_resize(f"SIDA SAM input (ResizeLongestSide {size})", image.shape[:2], size)
    resized = ResizeLongestSide(size).apply_image(image)
    h, w = resized.shape[:2]
    x = torch.from_numpy(np.array(resized)).permute(2, 0, 1).float()
    mean = torch.tensor(SAM_MEAN).view(3, 1, 1)
    std = torch.tensor(SAM_STD).view(3, 1, 1)
    x = (x - mean) / std
    x = torch.nn.functional.pad(x, (0, size - w, 0, size - h))
    return x, (h, w)


def clip_input(image: np.ndarray, size: int) -> torch.Tensor:
    """RGB uint8 (H, W, 3) → (3, size, size) float32, CLIP-normalised centre crop."""
    check_rgb_uint8(image)
    h, w = image.shape[:2]
    short, long = (h, w) if h <= w else (w, h)
    new_short, new_long = size, int(size * long / short)
    new_h, new_w = (new_short, new_long) if h <= w else (new_long, new_short)
    check_resized_size(f"SIDA CLIP input (shorter side to {size}, centre crop)", (h, w), (new_h, new_w))
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), resample=Image.Resampling.BICUBIC))
    top = max(int((new_h - size) / 2.0), 0) if new_h > size else 0
    left = max(int((new_w - size) / 2.0), 0) if new_w > size else 0
    crop = resized[top : top + size, left : left + size]
    x = torch.from_numpy(np.array(crop)).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return (x - mean) / std


def preprocess_image(image: np.ndarray, sam_size: int, clip_size: int) -> SidaInput:
    """Both branches for one RGB uint8 image."""
    image_sam, resize_size = sam_input(image, sam_size)
    return SidaInput(image_sam, clip_input(image, clip_size), resize_size, (int(image.shape[0]), int(image.shape[1])))
