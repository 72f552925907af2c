"""Base class of perturbation plugins (JPEG, resize, noise, ...)."""

from __future__ import annotations

import abc
import hashlib
from typing import Any, ClassVar

import numpy as np


class Perturbation(abc.ABC):
    """A degradation applied to an RGB uint8 image (and its mask, for geometric ones).

    Randomness comes only from the ``rng`` argument, which the runner derives from
    (protocol seed, sample id, perturbation key) with :func:`sample_rng`, so results do not
    depend on order, batch size or workers.
    """

    name: ClassVar[str]

    def __init__(self, **params: Any) -> None:
        self._params = params

    @abc.abstractmethod
    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Return the perturbed uint8 (H', W', 3) image and the co-transformed boolean mask."""

    def params(self) -> dict[str, Any]:
        """Every parameter that defines the result, including stated conventions."""
        return dict(self._params)

    def spec(self) -> dict[str, Any]:
        """``{"name": ..., **constructor arguments}``: rebuilds this perturbation with
        :func:`bench.perturbations.spec.perturbation_from_spec`."""
        return {"name": self.name, **self._params}

    def library_versions(self) -> dict[str, str]:
        """Versions of the libraries that produce the output (for the run record, not the key)."""
        return {}

    @property
    def key(self) -> str:
        """A short, stable identifier, e.g. ``jpeg(quality=70,subsampling=4:2:0)``.

        Built from the constructor arguments (which, with the code, fix the output); the
        stated constants of :meth:`params` (library, rounding, ...) are left out to keep it short.
        """
        inner = ",".join(f"{k}={v}" for k, v in sorted(self._params.items()))
        return f"{self.name}({inner})"


def sample_rng(seed: int, sample_id: str, key: str = "") -> np.random.Generator:
    """A generator seeded from (seed, sample id, key) only, stable across runs and platforms."""
    digest = hashlib.sha256(f"{seed}\x1f{sample_id}\x1f{key}".encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "little")))


def check_inputs(image: np.ndarray, mask: np.ndarray | None) -> None:
    """Raise ``ValueError`` (a per-sample failure for the runner) on a malformed image or mask."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"perturbations expect an RGB uint8 (H, W, 3) image, got {got}")
    if mask is not None and np.shape(mask) != image.shape[:2]:
        raise ValueError(f"mask shape {np.shape(mask)} does not match image size {image.shape[:2]}")
