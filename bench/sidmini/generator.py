"""Seeded families of tiny up-sampling "generators" whose traces resemble real generator fingerprints.

A generator re-synthesises an RGB image: area down-sampling x2 (it loses detail, like a decoder's
latent), an up-sampler, then a 3x3 near-identity "refiner". Each family member perturbs the
kernels by a zero-mean random pattern per (input, output) channel pair, so it leaves a periodic
(period-2) trace of a few grey levels, as transposed convolutions do, without a colour cast.

Kinds:
- ``"tconv"``: stride-2 4x4 transposed convolution initialised as bilinear up-sampling
  (the in-domain family of sid-mini);
- ``"nearest_conv"``: nearest-neighbour up-sampling followed by a 3x3 convolution initialised as
  a [1, 2, 1] blur, i.e. "resize-convolution" (the held-out family of dmimage-mini; a different
  fingerprint: little energy at the Nyquist frequency, unlike the transposed convolution).

``strength`` scales the perturbation per sample (sid-mini draws it log-uniformly in [0.25, 4]).
All arithmetic is numpy float64 with a fixed operation order, so outputs repeat bit for bit run to run.
Images are RGB uint8 (H, W, 3) with even H and W.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Kind = Literal["tconv", "nearest_conv"]
KINDS: tuple[Kind, ...] = ("tconv", "nearest_conv")

UP_AMPLITUDE = 0.01
"""Std of the up-sampler perturbation at strength 1 (about +-4 grey levels of checkerboard)."""
REFINER_AMPLITUDE = 0.004
STRENGTH_RANGE = (0.25, 4.0)

_BILINEAR_1D = np.array([0.25, 0.75, 0.75, 0.25])
_BLUR_1D = np.array([0.25, 0.5, 0.25])
_IDENTITY_1D = np.array([0.0, 1.0, 0.0])
# transposed conv (stride 2, kernel 4, padding 1): output phase -> ((input offset, kernel tap), ...)
_TCONV_TAPS = {0: ((0, 1), (-1, 3)), 1: ((0, 2), (1, 0))}


@dataclass(frozen=True)
class Fingerprint:
    """One family member: base kernels plus unit-scale zero-mean perturbations.

    ``up_base``/``up_noise``: (k, k, 3, 3) kernels indexed [ky, kx, c_in, c_out]
    (k = 4 for tconv, 3 for nearest_conv); ``refiner_noise``: (3, 3, 3, 3).
    """

    kind: Kind
    seed: int
    up_base: np.ndarray
    up_noise: np.ndarray
    refiner_noise: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.seed}"


def _zero_mean_noise(rng: np.random.Generator, k: int) -> np.ndarray:
    """(k, k, 3, 3) noise, zero mean and unit std over the k*k taps of every channel pair."""
    noise = rng.standard_normal((k, k, 3, 3))
    noise -= noise.mean(axis=(0, 1), keepdims=True)
    return noise / noise.std(axis=(0, 1), keepdims=True)


def make_fingerprint(kind: Kind, seed: int) -> Fingerprint:
    """The family member of ``kind`` drawn from ``seed``."""
    if kind not in KINDS:
        raise ValueError(f"Expected generator kind in {KINDS}, but got {kind!r}")
    rng = np.random.default_rng([0x51D, KINDS.index(kind), seed])
    taps = _BILINEAR_1D if kind == "tconv" else _BLUR_1D
    k = len(taps)
    base = np.einsum("y,x,io->yxio", taps, taps, np.eye(3))
    return Fingerprint(kind, seed, base, _zero_mean_noise(rng, k), _zero_mean_noise(rng, 3))


def make_family(kind: Kind, seeds: range | list[int]) -> list[Fingerprint]:
    return [make_fingerprint(kind, s) for s in seeds]


def _apply_taps(patches: list[np.ndarray], kernels: list[np.ndarray]) -> np.ndarray:
    """Sum over taps of ``patch @ kernel``: (h, w, 3) patches, (3, 3) kernels -> (h, w, 3).

    One matrix product per call; its reduction axis (at most 27 taps) is never split across threads,
    so results repeat run to run on a given platform and library build.
    """
    stacked = np.concatenate(patches, axis=2)
    h, w, k = stacked.shape
    return (stacked.reshape(h * w, k) @ np.concatenate(kernels, axis=0)).reshape(h, w, 3)


def _conv3x3(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    h, w = x.shape[:2]
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
    taps = [(ky, kx) for ky in range(3) for kx in range(3)]
    return _apply_taps([xp[ky:ky + h, kx:kx + w] for ky, kx in taps], [kernel[ky, kx] for ky, kx in taps])


def _tconv_up(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    h, w = x.shape[:2]
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
    out = np.empty((2 * h, 2 * w, 3))
    for py, ytaps in _TCONV_TAPS.items():
        for px, xtaps in _TCONV_TAPS.items():
            taps = [(dy, ky, dx, kx) for dy, ky in ytaps for dx, kx in xtaps]
            out[py::2, px::2] = _apply_taps([xp[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, _, dx, _ in taps],
                                            [kernel[ky, kx] for _, ky, _, kx in taps])
    return out


def synthesize(image: np.ndarray, fingerprint: Fingerprint, strength: float = 1.0) -> np.ndarray:
    """Re-synthesise an RGB uint8 (H, W, 3) image (H, W even) through ``fingerprint``."""
    h, w = image.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"synthesize needs even height and width, got {h}x{w}")
    x = image.astype(np.float64)
    down = x.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
    up_kernel = fingerprint.up_base + UP_AMPLITUDE * strength * fingerprint.up_noise
    if fingerprint.kind == "tconv":
        up = _tconv_up(down, up_kernel)
    else:
        up = _conv3x3(np.repeat(np.repeat(down, 2, axis=0), 2, axis=1), up_kernel)
    refiner = np.einsum("y,x,io->yxio", _IDENTITY_1D, _IDENTITY_1D, np.eye(3))
    out = _conv3x3(up, refiner + REFINER_AMPLITUDE * strength * fingerprint.refiner_noise)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def draw_strength(rng: np.random.Generator) -> float:
    """Per-sample strength, log-uniform in :data:`STRENGTH_RANGE`."""
    lo, hi = np.log(STRENGTH_RANGE[0]), np.log(STRENGTH_RANGE[1])
    return float(np.exp(rng.uniform(lo, hi)))
