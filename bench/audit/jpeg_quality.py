"""Estimate the IJG quality of a JPEG from its quantisation tables.

The IJG (libjpeg) encoder scales the example tables of ITU-T T.81 Annex K by
``s = 5000 / q`` (q < 50) or ``s = 200 - 2q`` (q >= 50), ``t = clip((base * s + 50) // 100, 1, 255)``.
The estimate is the q in 1..100 whose scaled tables are closest (mean absolute difference
over the luminance table, and the chrominance table when the file has one) to the file's;
``exact`` says whether they match bit for bit (a file from another encoder rarely does).
Tables are in natural (row-major) order, as Pillow's ``Image.quantization`` gives them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

ANNEX_K_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99])
ANNEX_K_CHROMA = np.array([17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66] + [99] * 4 + [24, 26, 56] + [99] * 5
                          + [47, 66] + [99] * 38)


def ijg_table(base: np.ndarray, quality: int) -> np.ndarray:
    """The table libjpeg writes for ``quality`` (1-100) from an Annex K ``base`` table."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((base * scale + 50) // 100, 1, 255)


_LUMA = np.stack([ijg_table(ANNEX_K_LUMA, q) for q in range(1, 101)])
_CHROMA = np.stack([ijg_table(ANNEX_K_CHROMA, q) for q in range(1, 101)])


@dataclass(frozen=True)
class QualityEstimate:
    quality: int
    exact: bool
    mean_abs_error: float


def estimate_quality(tables: Mapping[int, Sequence[int]]) -> QualityEstimate:
    """The closest IJG quality to ``{table id: 64 values}`` (id 0 luminance, 1 chrominance)."""
    if 0 not in tables or len(tables[0]) != 64:
        raise ValueError("expected a 64-value luminance quantisation table (id 0)")
    err = np.abs(_LUMA - np.asarray(tables[0])).mean(axis=1)
    if 1 in tables and len(tables[1]) == 64:
        err = (err + np.abs(_CHROMA - np.asarray(tables[1])).mean(axis=1)) / 2
    best = int(np.argmin(err))
    return QualityEstimate(quality=best + 1, exact=bool(err[best] == 0), mean_abs_error=float(err[best]))
