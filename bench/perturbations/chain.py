"""A sequence of perturbations applied in order (e.g. resize, then JPEG)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bench.errors import UserError
from bench.perturbations.base import Perturbation
from bench.perturbations.spec import perturbation_from_spec


class Chain(Perturbation):
    """Apply ``steps`` (a list of specs ``{"name": ..., **params}``) in order, drawing
    randomness from the one ``rng`` in turn; masks are co-transformed by every step."""

    name = "chain"

    def __init__(self, steps: Sequence[Mapping[str, Any]] = ()) -> None:
        if isinstance(steps, (str, Mapping)) or not steps:
            raise UserError(f"chain: steps must be a non-empty list of perturbation specs, got {steps!r}")
        self.steps = [perturbation_from_spec(s) for s in steps]
        super().__init__(steps=[p.spec() for p in self.steps])

    def params(self) -> dict[str, Any]:
        return {"steps": [{"name": p.name, **p.params()} for p in self.steps]}

    def library_versions(self) -> dict[str, str]:
        return {k: v for p in self.steps for k, v in p.library_versions().items()}

    @property
    def key(self) -> str:
        return "+".join(p.key for p in self.steps)

    def __call__(self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        for step in self.steps:
            image, mask = step(image, mask, rng)
        return image, mask
