"""The two records that travel through the harness: :class:`Sample` and :class:`Prediction`.

Label conventions (DESIGN.md):
- ternary (SID-Set order): 0 real, 1 fully synthetic, 2 tampered;
- binary: 0 real, 1 fake.
Masks: ground truth is boolean H×W at the image's own resolution (True = forged pixel);
predicted masks are float32 H×W forgery probabilities in [0, 1]; an optional confidence map
(TruFor's) is a float32 H×W reliability in [0, 1] of the same mask, pixel for pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np


class LabelSpace(str, Enum):
    """The label space of a dataset or a model's output probabilities."""

    BINARY = "binary"
    TERNARY = "ternary"

    @property
    def class_names(self) -> tuple[str, ...]:
        return LABEL_NAMES[self]

    @property
    def num_classes(self) -> int:
        return len(LABEL_NAMES[self])


LABEL_NAMES: dict[LabelSpace, tuple[str, ...]] = {
    LabelSpace.BINARY: ("real", "fake"),
    LabelSpace.TERNARY: ("real", "full_synthetic", "tampered"),
}
REAL, FULL_SYNTHETIC, TAMPERED = 0, 1, 2
FAKE = 1
PROB_SUM_TOLERANCE = 1e-3
"""How far a model's class probabilities may sum from 1 (float32 softmax is well within it)."""


@dataclass
class Sample:
    """One dataset item.

    Attributes:
        id: stable string id, unique within a dataset split (e.g. ``"tampered/0001"``).
        image: RGB uint8 array of shape (H, W, 3); ``None`` only when ``error`` is set.
        label: class index in the dataset's label space (see module docstring).
        mask: optional boolean (H, W) forgery mask at the image's resolution.
        meta: source/generator, original size, path, and any decoding notes.
        error: why the sample could not be decoded; such a sample is recorded, never dropped.
    """

    id: str
    image: np.ndarray | None
    label: int
    mask: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def __post_init__(self) -> None:
        if self.image is not None:
            if self.image.dtype != np.uint8 or self.image.ndim != 3 or self.image.shape[2] != 3:
                raise ValueError(
                    f"Sample {self.id!r}: image must be uint8 (H, W, 3), got {self.image.dtype} {self.image.shape}"
                )
            if self.mask is not None and self.mask.shape != self.image.shape[:2]:
                raise ValueError(
                    f"Sample {self.id!r}: mask shape {self.mask.shape} != image shape {self.image.shape[:2]}"
                )
        if self.mask is not None and self.mask.dtype != np.bool_:
            raise ValueError(f"Sample {self.id!r}: mask must be boolean, got {self.mask.dtype}")
        if self.image is None and self.error is None:
            raise ValueError(f"Sample {self.id!r}: no image and no error")


@dataclass
class Prediction:
    """A model's output for one image.

    Attributes:
        probs: float class probabilities in the model's declared label space, shape (K,),
            summing to 1 (binary: [p_real, p_fake]; ternary: [p_real, p_synthetic, p_tampered]).
        mask: optional float32 (H, W) forgery probabilities in [0, 1], at the resolution of the
            image the model was given.
        text: optional explanation.
        error: set when the model failed on this image; then ``probs`` is NaN.
        logits: optional raw network outputs before the probability mapping, float64 (L,), in the
            model's own head layout (one logit, sigmoid = P(fake), for the single-logit baselines;
            the class logits otherwise), for comparison with official code; None when not exposed.
        confidence: optional float32 (H, W) map in [0, 1] of how reliable each pixel of ``mask`` is
            (TruFor's ``sigmoid(conf)``), under the same resolution rules as ``mask`` (so of its
            shape); only with a mask. None for models that make none.
    """

    probs: np.ndarray
    mask: np.ndarray | None = None
    text: str | None = None
    error: str | None = None
    logits: np.ndarray | None = None
    confidence: np.ndarray | None = None

    @classmethod
    def failed(cls, num_classes: int, error: str) -> "Prediction":
        return cls(probs=np.full(num_classes, np.nan, dtype=np.float64), error=error)

    @property
    def predicted_class(self) -> int:
        return int(np.argmax(self.probs))

    def problem(self, num_classes: int | None, size: tuple[int, int]) -> str | None:
        """Why this prediction cannot be scored, or None: ``probs`` not ``num_classes`` finite values in
        [0, 1] summing to 1 (not checked when ``num_classes`` is None, e.g. a localizer scored through its
        mask), a mask that is not a finite (H, W) map in [0, 1] at ``size``, or a confidence map that
        is not one either, or comes without a mask."""
        if num_classes is not None:
            p = np.asarray(self.probs, dtype=np.float64)
            if p.shape != (num_classes,):
                return f"returned probabilities of shape {p.shape}, expected ({num_classes},)"
            if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1 or abs(p.sum() - 1.0) > PROB_SUM_TOLERANCE:
                return f"returned probabilities {np.round(p, 6).tolist()} (need finite values in [0, 1] summing to 1)"
        if self.mask is not None:
            m = np.asarray(self.mask)
            if m.shape != tuple(size):
                return f"returned a mask of shape {m.shape} for an image of {tuple(size)} (H, W)"
            if m.size and (not np.all(np.isfinite(m)) or m.min() < 0 or m.max() > 1):
                return "returned a mask with values that are not finite probabilities in [0, 1]"
        if self.confidence is not None:
            c = np.asarray(self.confidence)
            if self.mask is None:
                return "returned a confidence map without a mask"
            if c.shape != tuple(size):
                return f"returned a confidence map of shape {c.shape} for an image of {tuple(size)} (H, W)"
            if c.size and (not np.all(np.isfinite(c)) or c.min() < 0 or c.max() > 1):
                return "returned a confidence map with values that are not finite values in [0, 1]"
        return None
