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

    @property
    def key(self) -> str:
        """A short, stable identifier, e.g. ``jpeg(quality=70)``."""
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.params().items()))
        return f"{self.name}({inner})"


def sample_rng(seed: int, sample_id: str, key: str = "") -> np.random.Generator:
    """A generator seeded from (seed, sample id, key) only, stable across runs and platforms."""
    digest = hashlib.sha256(f"{seed}\x1f{sample_id}\x1f{key}".encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "little")))
