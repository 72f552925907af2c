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
    """One perturbation of the grid, instantiated: ``perturbation`` is None for the clean one."""

    key: str
    name: str
    params: dict[str, Any]
    label: str
    perturbation: Perturbation | None

    @property
    def params_json(self) -> str:
        return json.dumps(self.params, sort_keys=True, default=str)


def build_conditions(protocol: Protocol) -> list[Condition]:
    """The protocol's perturbation grid in protocol order (the clean condition has key ``none``)."""
    from bench.plugins import create_perturbation

    out = []
    for spec in protocol.perturbations:
        if spec.name == CLEAN:
            out.append(Condition(CLEAN, CLEAN, {}, spec.display, None))
            continue
        pert = create_perturbation(spec.name, **spec.params)
        out.append(Condition(pert.key, spec.name, pert.params(), spec.display, pert))
    return out
