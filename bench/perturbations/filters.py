"""Pixel-value perturbations: additive Gaussian noise and Gaussian blur. Masks are unchanged."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy
from scipy.ndimage import gaussian_filter

from bench.errors import UserError
from bench.perturbations.base import Perturbation, check_inputs


def _non_negative(name: str, what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise UserError(f"{name}: {what} must be a non-negative number, got {value!r}")
    return float(value)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Round half to even, then clip to [0, 255]."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


class GaussianNoise(Perturbation):
    """Additive zero-mean Gaussian noise on the 0-255 scale, independent per pixel and channel.

    Give exactly one of ``sigma`` (standard deviation) or ``variance`` (σ = √variance): papers
    that say "variance 5 and 10" are ambiguous, so ``params()`` names the ``reading`` used and
    the resulting ``sigma``. Noise is added in float64, then rounded and clipped to uint8
    (rounding adds a variance of about 1/12 away from the clipping bounds).
    """

    name = "gaussian_noise"

    def __init__(self, sigma: float | None = None, variance: float | None = None) -> None:
        if (sigma is None) == (variance is None):
            raise UserError("gaussian_noise: give exactly one of sigma or variance (0-255 scale)")
        if sigma is not None:
            super().__init__(sigma=_non_negative(self.name, "sigma", sigma))
            self.sigma = self._params["sigma"]
        else:
            super().__init__(variance=_non_negative(self.name, "variance", variance))
            self.sigma = math.sqrt(self._params["variance"])

    def params(self) -> dict[str, Any]:
        reading = "sigma" if "sigma" in self._params else "variance"
        return {**self._params, "reading": reading, "sigma": self.sigma, "scale": "0-255",
                "per_channel": True, "rounding": "add in float, round half to even, clip to [0, 255]"}

    def library_versions(self) -> dict[str, str]:
        return {"numpy": np.__version__}

    def __call__(self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        check_inputs(image, mask)
        noise = rng.normal(0.0, self.sigma, size=image.shape)
        return to_uint8(image.astype(np.float64) + noise), mask


class GaussianBlur(Perturbation):
    """Gaussian blur of standard deviation ``sigma`` pixels per channel with
    ``scipy.ndimage.gaussian_filter`` (as CNNDetection/UnivFD), kernel truncated at
    ``truncate`` σ, ``reflect`` borders; filtered in float64, then rounded and clipped."""

    name = "gaussian_blur"

    def __init__(self, sigma: float = 1.0, truncate: float = 4.0) -> None:
        super().__init__(sigma=_non_negative(self.name, "sigma", sigma),
                         truncate=_non_negative(self.name, "truncate", truncate))

    def params(self) -> dict[str, Any]:
        return {**self._params, "library": "scipy.ndimage.gaussian_filter", "mode": "reflect",
                "rounding": "round half to even, clip to [0, 255]"}

    def library_versions(self) -> dict[str, str]:
        return {"scipy": scipy.__version__}

    def __call__(self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        check_inputs(image, mask)
        s = self._params["sigma"]
        out = gaussian_filter(image.astype(np.float64), sigma=(s, s, 0), mode="reflect",
                              truncate=self._params["truncate"])
        return to_uint8(out), mask
