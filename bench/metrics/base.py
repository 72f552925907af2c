"""Base class of streaming metrics: ``update`` / ``merge`` / ``compute``.

State is bounded (counts, histograms, or per-sample score lists for exact AUC, which hold
one float per *image*, never per pixel). ``compute`` is pure: it never mutates the state or
the inputs, so calling it twice gives the same result, and merging two shards equals one pass.
"""

from __future__ import annotations

import abc
import copy
from typing import Any, ClassVar

import numpy as np


class Metric(abc.ABC):
    """A metric over scored samples.

    Class attributes:
        name: registry name.
        task: ``"detection"`` (inputs: labels and class probabilities) or ``"localization"``
            (inputs: ground-truth and predicted masks).

    Detection metrics implement ``update(labels, probs, groups=None)`` with labels (N,) int,
    probs (N, K) float and optional per-sample group names (generator/source).
    Localization metrics implement ``update(gt_masks, pred_masks, labels)`` with lists of
    boolean (H, W) and float (H, W) arrays of matching shapes.
    """

    name: ClassVar[str]
    task: ClassVar[str] = "detection"

    @abc.abstractmethod
    def update(self, *args: Any, **kwargs: Any) -> None:
        """Accumulate a batch."""

    @abc.abstractmethod
    def merge(self, other: "Metric") -> None:
        """Add the state of ``other`` (same class and conventions) into this one."""

    @abc.abstractmethod
    def compute(self) -> dict[str, float]:
        """The metric values, named; pure."""

    def convention(self) -> dict[str, Any]:
        """The conventions that define the numbers (threshold, aggregation, ...)."""
        return {}

    def clone(self) -> "Metric":
        return copy.deepcopy(self)


def as_float_array(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)
