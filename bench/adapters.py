"""Adapters between label spaces and task types, each a small documented rule.

- :class:`TernaryToBinary`: a ternary model scored on binary data,
  ``p_fake = p_synthetic + p_tampered``.
- :class:`BinaryOnTernary`: a binary detector scored on ternary data. The rule (as in the
  SIDA paper's Table 2 for binary baselines): a real image is correct when predicted real;
  fully synthetic and tampered images are correct when predicted fake.
- :class:`LocalizerAsDetector`: a localizer without its own detection output used as a
  detector: ``p_fake = max`` of its mask (max-pooling, as ForensicHub's Mask2LabelWrapper).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from bench.types import LabelSpace, Prediction


@dataclass(frozen=True)
class TernaryToBinary:
    """Map ternary probabilities [real, synthetic, tampered] to binary [real, fake].

    The sum is clipped to [0, 1]: float32 softmax outputs can exceed 1 by ~1e-7 when added.
    """

    def __call__(self, pred: Prediction) -> Prediction:
        p = np.asarray(pred.probs, dtype=np.float64)
        if p.shape != (3,):
            raise ValueError(f"TernaryToBinary expects 3 probabilities, got shape {p.shape}")
        return replace(pred, probs=self.apply(p[None])[0])

    @staticmethod
    def apply(probs: np.ndarray) -> np.ndarray:
        """(N, 3) ternary → (N, 2) binary probabilities."""
        p = np.asarray(probs, dtype=np.float64)
        return np.clip(np.stack([p[:, 0], p[:, 1] + p[:, 2]], axis=1), 0.0, 1.0)


@dataclass(frozen=True)
class BinaryOnTernary:
    """Score binary predictions against ternary labels.

    ``threshold``: an image is predicted fake when ``p_fake >= threshold`` (0.5 by default,
    the sigmoid > 0 rule of the single-logit baselines up to the tie at exactly 0.5).
    """

    threshold: float = 0.5

    def predicted_fake(self, binary_probs: np.ndarray) -> np.ndarray:
        """(N,) bool: predicted fake, from (N, 2) binary probabilities."""
        p = np.asarray(binary_probs, dtype=np.float64)
        return p[:, 1] >= self.threshold

    def correct(self, ternary_labels: np.ndarray, binary_probs: np.ndarray) -> np.ndarray:
        """(N,) bool: real correct iff predicted real; synthetic/tampered correct iff predicted fake."""
        labels = np.asarray(ternary_labels)
        return self.predicted_fake(binary_probs) == (labels != 0)

    @staticmethod
    def binary_labels(ternary_labels: np.ndarray) -> np.ndarray:
        """0 real → 0; 1 synthetic and 2 tampered → 1 fake."""
        return (np.asarray(ternary_labels) != 0).astype(np.int64)


@dataclass(frozen=True)
class LocalizerAsDetector:
    """Turn a mask-only prediction into binary probabilities by max-pooling the mask.

    A prediction that already carries probabilities (the model has its own detection
    output) is returned unchanged.
    """

    def __call__(self, pred: Prediction) -> Prediction:
        if pred.probs is not None and np.asarray(pred.probs).size and np.all(np.isfinite(pred.probs)):
            return pred
        if pred.mask is None:
            raise ValueError("LocalizerAsDetector needs a predicted mask")
        p_fake = float(np.max(pred.mask)) if pred.mask.size else 0.0
        return replace(pred, probs=np.array([1.0 - p_fake, p_fake]))


def to_label_space(pred: Prediction, source: LabelSpace, target: LabelSpace) -> Prediction:
    """Convert a prediction's probabilities between label spaces where a rule exists.

    ternary → binary uses :class:`TernaryToBinary`; binary → ternary has no probability rule
    (use :class:`BinaryOnTernary` for scoring instead), so the prediction is returned as is.
    """
    if source == target or pred.error is not None:
        return pred
    if source == LabelSpace.TERNARY and target == LabelSpace.BINARY:
        return TernaryToBinary()(pred)
    return pred
