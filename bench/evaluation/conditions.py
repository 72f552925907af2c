"""The perturbation grid of a protocol, instantiated: one :class:`Condition` per row of the grid.

Shared by the runner (which applies them), the predictions import (which re-applies them to
the ground truth) and the scorer (which names them in results); it depends on the protocol only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bench.evaluation.protocol import CLEAN, Protocol
from bench.perturbations.base import Perturbation


@dataclass(frozen=True)
class Condition:
    """One perturbation of the grid, instantiated: ``perturbation`` is None for the clean one.

    ``neutralise``: the protocol's re-encoding applied before the perturbation (None = off);
    it is then also in ``params`` (hence in the row key and the results)."""

    key: str
    name: str
    params: dict[str, Any]
    label: str
    perturbation: Perturbation | None
    neutralise: Perturbation | None = None

    @property
    def params_json(self) -> str:
        return json.dumps(self.params, sort_keys=True, default=str)


def build_conditions(protocol: Protocol) -> list[Condition]:
    """The protocol's perturbation grid in protocol order (the clean condition has key ``none``)."""
    from bench.perturbations.spec import perturbation_from_spec
    from bench.plugins import create_perturbation

    neutral = perturbation_from_spec(protocol.neutralise.step()) if protocol.neutralise else None
    extra = {"neutralise": {"name": neutral.name, **neutral.params()}} if neutral else {}
    out = []
    for spec in protocol.perturbations:
        if spec.name == CLEAN:
            out.append(Condition(CLEAN, CLEAN, dict(extra), spec.display, None, neutral))
            continue
        pert = create_perturbation(spec.name, **spec.params)
        out.append(Condition(pert.key, spec.name, {**pert.params(), **extra}, spec.display, pert, neutral))
    return out
