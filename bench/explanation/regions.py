"""The position vocabulary of explanations and where a mask lies.

Image coordinates are normalised to the unit square: ``y`` = 0 at the top edge, 1 at the bottom;
``x`` = 0 at the left edge, 1 at the right (the viewer's left and right, never the subject's).

A stated position is a set of constraints on a point (:class:`Region`):

- ``upper`` / ``top``: y < 1/2; ``lower`` / ``bottom``: y >= 1/2;
- ``left``: x < 1/2; ``right``: x >= 1/2;
- ``centre`` / ``center`` / ``middle`` / ``central``: 1/3 <= coordinate < 2/3 on every axis that no
  other word of the phrase constrains (so ``"centre"`` alone constrains both axes, ``"middle left"``
  only y, ``"upper middle"`` only x).

A mask's location is the centroid of its positive pixels (pixel centres, normalised by the mask's
height and width); a region *agrees* with a mask when it contains that centroid. An empty mask has
no location.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VERTICAL = {"upper": "upper", "top": "upper", "lower": "lower", "bottom": "lower"}
HORIZONTAL = {"left": "left", "right": "right"}
CENTRE = ("centre", "center", "middle", "central")
POSITION_WORDS = (*VERTICAL, *HORIZONTAL, *CENTRE)
CENTRE_BAND = (1.0 / 3.0, 2.0 / 3.0)


@dataclass(frozen=True)
class Region:
    """A named image region: each of ``y`` and ``x`` is ``None`` (free) or a half-open interval."""

    name: str
    y: tuple[float, float] | None = None
    x: tuple[float, float] | None = None

    def contains(self, point: tuple[float, float]) -> bool:
        """Whether the normalised ``(y, x)`` point lies in the region."""
        return all(band is None or band[0] <= v < band[1] for band, v in ((self.y, point[0]), (self.x, point[1])))


def region_from_words(words: list[str]) -> Region | None:
    """The region of one position phrase (its position words, lower case); ``None`` if contradictory.

    ``["lower"]`` → lower half; ``["upper", "left"]`` → upper-left quadrant; ``["centre"]`` → the
    central ninth; ``["middle", "right"]`` → y in the central band, right half. Two different
    vertical (or horizontal) words, or no position word, are contradictory.
    """
    vert = {VERTICAL[w] for w in words if w in VERTICAL}
    horz = {HORIZONTAL[w] for w in words if w in HORIZONTAL}
    centre = any(w in CENTRE for w in words)
    if len(vert) > 1 or len(horz) > 1 or not (vert or horz or centre):
        return None
    y = {"upper": (0.0, 0.5), "lower": (0.5, 1.0 + 1e-9)}.get(next(iter(vert), ""))
    x = {"left": (0.0, 0.5), "right": (0.5, 1.0 + 1e-9)}.get(next(iter(horz), ""))
    if centre:
        y = CENTRE_BAND if y is None else y
        x = CENTRE_BAND if x is None else x
    return Region(" ".join(words), y, x)


def mask_centroid(mask: np.ndarray, threshold: float = 0.5) -> tuple[float, float] | None:
    """Normalised ``(y, x)`` centroid of ``mask > threshold`` (boolean masks: ``True`` pixels); ``None`` if empty."""
    m = np.asarray(mask)
    positive = m if m.dtype == np.bool_ else m > threshold
    if positive.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {m.shape}")
    rows, cols = np.nonzero(positive)
    if not rows.size:
        return None
    h, w = positive.shape
    return (float((rows.mean() + 0.5) / h), float((cols.mean() + 0.5) / w))


def describe_position(point: tuple[float, float]) -> str:
    """A phrase of the vocabulary that contains ``point`` (used to write sid-mini descriptions).

    Thirds on each axis: ``upper``/``middle``/``lower`` × ``left``/``middle``/``right``; the centre
    ninth is ``"centre"``. Each name, read back with :func:`region_from_words`, contains the point.
    """
    y, x = point
    vert = "upper" if y < 1 / 3 else "lower" if y >= 2 / 3 else "middle"
    horz = "left" if x < 1 / 3 else "right" if x >= 2 / 3 else "middle"
    if vert == horz == "middle":
        return "centre"
    return f"{vert} {horz}"
