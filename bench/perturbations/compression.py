"""Lossy re-compression: JPEG and WebP, encoded and decoded in memory with Pillow."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import PIL
from PIL import Image, features

from bench.errors import ImageSizeError, UserError
from bench.perturbations.base import Perturbation, check_inputs

SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


def _quality(name: str, quality: Any, low: int) -> int:
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not low <= quality <= 100:
        raise UserError(f"{name}: quality must be an integer in [{low}, 100], got {quality!r}")
    return int(quality)


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


class Jpeg(Perturbation):
    """JPEG at ``quality`` (1-100, IJG scale) with Pillow's encoder (libjpeg), chroma
    ``subsampling`` 4:2:0 by default (Pillow's and OpenCV's default), then decoded. The mask is
    unchanged. Deterministic: ``rng`` is not used."""

    name = "jpeg"

    def __init__(self, quality: int = 75, subsampling: str = "4:2:0") -> None:
        if subsampling not in SUBSAMPLING:
            raise UserError(f"jpeg: subsampling must be one of {list(SUBSAMPLING)}, got {subsampling!r}")
        super().__init__(quality=_quality("jpeg", quality, 1), subsampling=subsampling)

    def params(self) -> dict[str, Any]:
        return {**self._params, "library": "Pillow"}

    def library_versions(self) -> dict[str, str]:
        return {"Pillow": PIL.__version__, "libjpeg": str(features.version("jpg"))}

    def encode(self, image: np.ndarray) -> bytes:
        """The JPEG bytes of an RGB uint8 image."""
        buf = io.BytesIO()
        Image.fromarray(image, "RGB").save(buf, format="JPEG", quality=self._params["quality"],
                                           subsampling=SUBSAMPLING[self._params["subsampling"]])
        return buf.getvalue()

    def __call__(self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        check_inputs(image, mask)
        if max(image.shape[:2]) > WEBP_MAX_SIDE:
            raise ImageSizeError(f"webp q{self._params['quality']}", image.shape[:2],
                                 f"WebP allows at most {WEBP_MAX_SIDE} pixels per side")
        return _decode(self.encode(image)), mask


WEBP_MAX_SIDE = 16383
"""The largest width or height the WebP format can store."""


class Webp(Perturbation):
    """Lossy WebP at ``quality`` (0-100) with Pillow's libwebp encoder, compression ``method``
    (0 fast - 6 slow, Pillow's default 4), then decoded. The mask is unchanged."""

    name = "webp"

    def __init__(self, quality: int = 80, method: int = 4) -> None:
        if isinstance(method, bool) or not isinstance(method, (int, np.integer)) or not 0 <= method <= 6:
            raise UserError(f"webp: method must be an integer in [0, 6], got {method!r}")
        if not features.check("webp"):
            raise UserError("webp: this Pillow build has no WebP support")
        super().__init__(quality=_quality("webp", quality, 0), method=int(method))

    def params(self) -> dict[str, Any]:
        return {**self._params, "library": "Pillow", "lossless": False}

    def library_versions(self) -> dict[str, str]:
        return {"Pillow": PIL.__version__, "libwebp": str(features.version("webp"))}

    def encode(self, image: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(image, "RGB").save(buf, format="WEBP", quality=self._params["quality"],
                                           method=self._params["method"], lossless=False)
        return buf.getvalue()

    def __call__(self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        check_inputs(image, mask)
        if max(image.shape[:2]) > WEBP_MAX_SIDE:
            raise ImageSizeError(f"webp q{self._params['quality']}", image.shape[:2],
                                 f"WebP allows at most {WEBP_MAX_SIDE} pixels per side")
        return _decode(self.encode(image)), mask


class Png(Perturbation):
    """Lossless re-encoding through PNG (Pillow, ``compress_level`` 6), then decoded: the pixels
    are unchanged. Used to neutralise file-format cues (a protocol's ``neutralise: {format: png}``)."""

    name = "png"

    def params(self) -> dict[str, Any]:
        return {"library": "Pillow", "lossless": True}

    def library_versions(self) -> dict[str, str]:
        return {"Pillow": PIL.__version__, "zlib": str(features.version("zlib"))}

    def encode(self, image: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(image, "RGB").save(buf, format="PNG", compress_level=6)
        return buf.getvalue()

    def __call__(self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        check_inputs(image, mask)
        return _decode(self.encode(image)), mask
