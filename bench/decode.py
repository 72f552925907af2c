"""Safe image and mask decoding, shared by every dataset.

Images become RGB uint8 arrays of shape (H, W, 3) by one documented rule:

- EXIF orientation is applied (the array is what a viewer shows);
- ``L`` and ``1`` (grey) are replicated to three channels;
- ``P`` (palette) is expanded through its palette; a palette with transparency is treated as alpha;
- ``LA``, ``RGBA``, ``PA`` and ``RGBa`` (alpha) are composited on **white**, the way a browser
  shows a transparent PNG on a white page (alpha is not a colour and is never fed to a model);
- 16-bit (``I;16*``, ``I``) values are mapped linearly to 0..255 by ``round(v / 257)``;
  float (``F``) values in [0, 1] are scaled by 255, others are clipped to [0, 255];
- ``CMYK``, ``YCbCr``, ``LAB`` and ``HSV`` use Pillow's conversion to RGB (no ICC colour management;
  embedded ICC profiles are ignored for every mode).

Multi-frame files (GIF, TIFF) give their first frame. Anything that cannot be decoded (zero-byte
file, non-image, truncated file, more pixels than ``max_pixels``) raises :class:`DecodeError`;
datasets turn it into a :class:`~bench.types.Sample` with ``error`` set, so a bad file is
recorded, never dropped and never fatal.

Masks (:func:`decode_mask`) become boolean (H, W) arrays by an explicit :class:`MaskPolicy`.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from bench.safe_text import path_text

DEFAULT_MAX_PIXELS = 100_000_000
"""Default decompression-bomb limit (pixels); raise it per dataset with ``max_pixels=``."""

OFFICIAL_LONG_SIDE = 1024
"""Long side used by the official SIDA code (SAM ``ResizeLongestSide(1024)``)."""

Source = str | Path | bytes

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DecodeError",
    "MaskNote",
    "MaskPolicy",
    "decode_image",
    "decode_mask",
    "fit_mask",
    "long_side_size",
]


class DecodeError(Exception):
    """An image or mask that cannot be decoded; the message says why."""


def _describe(source: Source) -> str:
    return f"{len(source)} bytes in memory" if isinstance(source, bytes) else path_text(source)


def _file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as an image file (None when it is a non-empty regular file)."""
    name = path_text(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return f"broken symbolic link: {name} -> {path_text(os.readlink(path))} does not exist"
        return f"file not found: {name}"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"symbolic link loop: {name}"
        return f"cannot open {name}: {exc.strerror or exc}"
    if stat.S_ISDIR(info.st_mode):
        return f"{name} is a folder, not an image file"
    if not stat.S_ISREG(info.st_mode):
        return f"{name} is not a regular file (a FIFO, socket or device)"
    if info.st_size == 0:
        return f"zero-byte file: {name}"
    return None


def _open(source: Source, max_pixels: int) -> Image.Image:
    """Open and fully load ``source``, checking the pixel count before decoding pixel data."""
    name = _describe(source)
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow errors at 2x this; our own check below is the limit
    try:
        if isinstance(source, bytes):
            if not source:
                raise DecodeError("empty image data (0 bytes)")
            fp: Any = io.BytesIO(source)
        else:
            path = Path(source)
            problem = _file_problem(path)
            if problem is not None:
                raise DecodeError(problem)
            fp = path
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
            width, height = img.size
            if width * height > max_pixels:
                raise DecodeError(
                    f"{name}: {width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels} "
                    "(decompression-bomb guard; raise max_pixels if the file is trusted)"
                )
            img.load()
    except DecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"{name}: {exc} (raise max_pixels if the file is trusted)") from exc
    except UnidentifiedImageError as exc:
        raise DecodeError(f"{name}: not a recognised image format") from exc
    except PermissionError as exc:
        raise DecodeError(f"{name}: permission denied (the file is not readable by this user)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated / corrupt data
        raise DecodeError(f"{name}: corrupt or truncated image ({exc})") from exc
    return img


def _high_depth_to_uint8(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img)
    if img.mode == "F":
        arr = arr.astype(np.float64)
        finite = arr[np.isfinite(arr)]
        if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
            arr = arr * 255.0
        return np.clip(np.nan_to_num(arr), 0, 255).round().astype(np.uint8)
    return np.clip(np.round(arr.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def _to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba).convert("RGB")
    elif mode.startswith("I") or mode == "F":
        grey = _high_depth_to_uint8(img)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    elif mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def decode_image(source: Source, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a file path or encoded bytes into an RGB uint8 (H, W, 3) array (see module rules).

    Raises:
        DecodeError: zero-byte, missing, non-image, truncated or corrupt data, or more than
            ``max_pixels`` pixels.
    """
    img = _open(source, max_pixels)
    try:
        img = ImageOps.exif_transpose(img)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError) as exc:  # malformed EXIF block
        raise DecodeError(f"{_describe(source)}: unreadable EXIF orientation ({exc})") from exc
    return _to_rgb(img)


# ----------------------------------------------------------------------------------------- masks

Binarize = Literal["gt127", "official"]
SizeMismatch = Literal["resize", "error", "official"]
NonBinary = Literal["threshold", "error"]


@dataclass(frozen=True)
class MaskPolicy:
    """How a stored mask becomes a boolean (H, W) array at the image's resolution.

    Attributes:
        binarize: ``"gt127"`` (default): a pixel is forged when its grey value is > 127;
            ``"official"``: only 255 counts, as the official SIDA code's ``(mask / 255).int()`` does.
        size_mismatch: when the mask's size differs from the image's:
            ``"resize"`` (default): nearest-neighbour resize to the image size, counted;
            ``"error"``: the sample gets a per-sample error;
            ``"official"``: the official code's rule: the mask is resized (bilinear) so its long side
            is 1024, then binarised; if that still differs from the image size, it is fitted to the
            image with nearest neighbour (the official code instead resizes the prediction to the
            mask; both compare the same pixels up to interpolation).
        non_binary: a mask is *binary-like* when at most ``soft_fraction`` of its pixels are
            strictly between 0 and 255 (after scaling). ``"threshold"`` (default): binarise anyway and
            note it; ``"error"``: per-sample error.
        soft_fraction: see ``non_binary``.

    Multi-channel masks: an alpha channel is dropped; if the remaining channels are identical the
    mask is that channel, otherwise it is not a mask and :class:`DecodeError` is raised.
    ``{0, 1}``-valued 8-bit masks are read as 0/255 under ``gt127`` (noted), and as stored under
    ``official``. 16-bit masks are scaled like images (``v / 257``).
    """

    binarize: Binarize = "gt127"
    size_mismatch: SizeMismatch = "resize"
    non_binary: NonBinary = "threshold"
    soft_fraction: float = 0.05

    def __post_init__(self) -> None:
        for field, value, allowed in (
            ("binarize", self.binarize, ("gt127", "official")),
            ("size_mismatch", self.size_mismatch, ("resize", "error", "official")),
            ("non_binary", self.non_binary, ("threshold", "error")),
        ):
            if value not in allowed:
                raise ValueError(f"Expected mask policy `{field}` to be one of {allowed}, but got {value!r}")
        if not 0.0 <= self.soft_fraction <= 1.0:
            raise ValueError(f"Expected `soft_fraction` in [0, 1], but got {self.soft_fraction!r}")

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MaskNote:
    """What :func:`decode_mask` had to do; datasets count these per split."""

    resized: bool = False
    soft: bool = False
    rescaled_01: bool = False
    original_size: tuple[int, int] = (0, 0)


def _mask_grey(img: Image.Image, name: str) -> np.ndarray:
    """A single-channel uint8 array from any mask mode (see :class:`MaskPolicy`)."""
    if img.mode == "1":
        return np.asarray(img.convert("L"), dtype=np.uint8)
    if img.mode.startswith("I") or img.mode == "F":
        return _high_depth_to_uint8(img)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode not in ("L", "LA", "RGB", "RGBA"):
        img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        return arr
    channels = arr[..., :-1] if img.mode in ("LA", "RGBA") else arr
    if not all(np.array_equal(channels[..., 0], channels[..., c]) for c in range(1, channels.shape[2])):
        raise DecodeError(f"{name}: mask has {channels.shape[2]} differing colour channels; expected a grey mask")
    return np.ascontiguousarray(channels[..., 0])


def long_side_size(height: int, width: int, long_side: int = OFFICIAL_LONG_SIDE) -> tuple[int, int]:
    """(H, W) after SAM's ``ResizeLongestSide`` rule: scale so the long side equals ``long_side``."""
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def _resize_grey(grey: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    return np.asarray(Image.fromarray(grey).resize((size[1], size[0]), resample), dtype=np.uint8)


def _binarise(grey: np.ndarray, policy: MaskPolicy) -> np.ndarray:
    return grey == 255 if policy.binarize == "official" else grey > 127


def fit_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a boolean mask to (H, W)."""
    if mask.shape == size:
        return mask
    grey = mask.astype(np.uint8) * 255
    return _resize_grey(grey, size, Image.Resampling.NEAREST) > 127


def decode_mask(
    source: Source,
    image_size: tuple[int, int] | None = None,
    policy: MaskPolicy = MaskPolicy(),
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, MaskNote]:
    """Decode a stored mask into a boolean (H, W) array at ``image_size`` (H, W), by ``policy``.

    Returns the mask and a :class:`MaskNote` of what was done. Raises :class:`DecodeError` for
    undecodable data, colour masks, and (under the ``error`` policies) size mismatches or
    non-binary masks. EXIF orientation is not applied to masks (masks are stored as pixel grids).
    """
    name = _describe(source)
    grey = _mask_grey(_open(source, max_pixels), name)
    original = (int(grey.shape[0]), int(grey.shape[1]))
    rescaled = False
    if policy.binarize == "gt127" and grey.size and grey.max() == 1:
        grey = grey * np.uint8(255)
        rescaled = True
    soft = float(np.count_nonzero((grey > 0) & (grey < 255))) > policy.soft_fraction * grey.size
    if soft and policy.non_binary == "error":
        raise DecodeError(f"{name}: mask is not binary-like (more than {policy.soft_fraction:.0%} grey pixels)")
    resized = False
    if policy.size_mismatch == "official":
        target = long_side_size(*original)
        if target != original:
            grey = _resize_grey(grey, target, Image.Resampling.BILINEAR)
            resized = True
    mask = _binarise(grey, policy)
    if image_size is not None and mask.shape != tuple(image_size):
        if policy.size_mismatch == "error":
            raise DecodeError(
                f"{name}: mask size {original[0]}x{original[1]} (HxW) differs from image size "
                f"{image_size[0]}x{image_size[1]} (size_mismatch='error')"
            )
        mask = fit_mask(mask, (int(image_size[0]), int(image_size[1])))
        resized = True
    return mask, MaskNote(resized=resized, soft=soft, rescaled_01=rescaled, original_size=original)
