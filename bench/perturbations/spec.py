"""Build perturbations from plain specs (protocol YAML entries and ``chain`` steps)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from typing import Any

from bench.errors import UserError
from bench.perturbations.base import Perturbation


def perturbation_from_spec(spec: Mapping[str, Any]) -> Perturbation:
    """``{"name": "jpeg", "quality": 70}`` → the registered perturbation with those params.

    Unknown names and parameters raise :class:`UserError` naming the closest valid ones.
    """
    from bench.plugins import PERTURBATIONS  # plugins imports this package: import lazily

    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise UserError(f"A perturbation spec needs a 'name' string, got {spec!r}")
    params = {k: v for k, v in spec.items() if k != "name"}
    cls = PERTURBATIONS.get(spec["name"])
    check_params(spec["name"], cls, params)
    return cls(**params)


def check_params(name: str, cls: type, params: Mapping[str, Any]) -> None:
    """Raise :class:`UserError` if ``params`` do not fit ``cls``'s constructor."""
    valid = [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
    for key in params:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(f"Unknown parameter {key!r} for perturbation {name!r}.{hint} Valid: {', '.join(valid)}")
