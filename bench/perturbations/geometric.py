"""Geometric perturbations: resize and crop. The mask is co-transformed (nearest neighbour)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL
from PIL import Image

from bench.errors import ImageSizeError, UserError
from bench.perturbations.base import Perturbation, check_inputs

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(H', W') = (floor(H*s + 0.5), floor(W*s + 0.5)), at least 1."""
    return max(1, math.floor(height * scale + 0.5)), max(1, math.floor(width * scale + 0.5))


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a boolean mask to (height, width)."""
    im = Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255, "L")
    return np.asarray(im.resize((width, height), Image.Resampling.NEAREST)) > 127


class Resize(Perturbation):
    """Rescale by ``scale`` with Pillow's ``interpolation`` (Pillow antialiases when it
    downsamples). ``restore=False`` (default, as AIGCDetectBenchmark) keeps the new size;
    ``restore=True`` resizes back to the original size with the same interpolation (as
    albumentations' Downscale), and the mask is then returned unchanged.

    ``max_long_side`` (instead of ``scale``): what platforms do on upload; an image whose long
    side exceeds it is scaled so that its long side equals it (the short side
    ``floor(short * max_long_side / long + 0.5)``), a smaller one is left as it is."""

    name = "resize"

    def __init__(self, scale: float | None = None, interpolation: str = "bilinear", restore: bool = False,
                 max_long_side: int | None = None) -> None:
        if interpolation not in INTERPOLATIONS:
            raise UserError(f"resize: interpolation must be one of {list(INTERPOLATIONS)}, got {interpolation!r}")
        if not isinstance(restore, bool):
            raise UserError(f"resize: restore must be true or false, got {restore!r}")
        if max_long_side is not None:
            if scale is not None:
                raise UserError("resize: give either scale or max_long_side, not both")
            if isinstance(max_long_side, bool) or not isinstance(max_long_side, (int, np.integer)) or max_long_side < 1:
                raise UserError(f"resize: max_long_side must be a positive integer, got {max_long_side!r}")
            super().__init__(max_long_side=int(max_long_side), interpolation=interpolation, restore=restore)
            return
        scale = 0.5 if scale is None else scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 16:
            raise UserError(f"resize: scale must be a number in (0, 16], got {scale!r}")
        super().__init__(scale=float(scale), interpolation=interpolation, restore=restore)

    def params(self) -> dict[str, Any]:
        rule = ("long side = max_long_side if larger, short side floor(short*max_long_side/long+0.5)"
                if "max_long_side" in self._params else "floor(side*scale+0.5), min 1")
        return {**self._params, "library": "Pillow", "size_rule": rule}

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """(H', W') of the output for an input of (height, width)."""
        if "max_long_side" not in self._params:
            return scaled_size(height, width, self._params["scale"])
        limit, long = self._params["max_long_side"], max(height, width)
        if long <= limit:
            return height, width
        short = max(1, math.floor(min(height, width) * limit / long + 0.5))
        return (limit, short) if height >= width else (short, limit)

    def library_versions(self) -> dict[str, str]:
        return {"Pillow": PIL.__version__}

    def __call__(self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        check_inputs(image, mask)
        h, w = image.shape[:2]
        nh, nw = self.target_size(h, w)
        if (nh, nw) == (h, w) and "max_long_side" in self._params:
            return image.copy(), mask
        resample = INTERPOLATIONS[self._params["interpolation"]]
        out = Image.fromarray(image, "RGB").resize((nw, nh), resample)
        if self._params["restore"]:
            return np.asarray(out.resize((w, h), resample)).copy(), mask
        return np.asarray(out).copy(), None if mask is None else resize_mask(mask, nh, nw)


class Crop(Perturbation):
    """Crop a window of ``size`` (int, or [height, width]) pixels or of ``fraction`` of each
    side, at the ``"center"`` or a ``"random"`` position (from ``rng``). A window larger than
    the image is a per-sample error (``ValueError``)."""

    name = "crop"

    def __init__(self, size: int | Sequence[int] | None = None, fraction: float | None = None,
                 position: str = "center") -> None:
        if (size is None) == (fraction is None):
            raise UserError("crop: give exactly one of size (pixels) or fraction (of each side)")
        if position not in ("center", "random"):
            raise UserError(f"crop: position must be 'center' or 'random', got {position!r}")
        params: dict[str, Any] = {"position": position}
        if size is not None:
            hw = [size, size] if isinstance(size, (int, np.integer)) else list(size)
            if len(hw) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in hw):
                raise UserError(f"crop: size must be a positive int or [height, width], got {size!r}")
            params["size"] = [int(v) for v in hw]
        else:
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
                raise UserError(f"crop: fraction must be in (0, 1], got {fraction!r}")
            params["fraction"] = float(fraction)
        super().__init__(**params)

    def window(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(top, left, h, w) of the crop in an image of (height, width)."""
        if "size" in self._params:
            h, w = self._params["size"]
        else:
            h, w = scaled_size(height, width, self._params["fraction"])
        if h > height or w > width:
            raise ImageSizeError(f"crop {h}x{w}", (height, width), f"it needs at least {h}x{w} pixels")
        if self._params["position"] == "center":
            return (height - h) // 2, (width - w) // 2, h, w
        return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w

    def __call__(self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        check_inputs(image, mask)
        top, left, h, w = self.window(*image.shape[:2], rng)
        crop = (slice(top, top + h), slice(left, left + w))
        return image[crop].copy(), None if mask is None else np.asarray(mask)[crop].copy()
