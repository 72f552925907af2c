"""Fixed 2-D DCT-II filter banks: deterministic patch embeddings for the frozen encoders of
``tiny`` configurations.

The official models (SIDA, UnivFD) load PRETRAINED CLIP / SAM encoders and keep them frozen.
Tiny configurations have random weights, and random frozen encoders hide the pixel-level traces
that forensics data relies on. As a stand-in for "pretrained", a tiny configuration may set its
frozen patch embedding to a fixed orthonormal DCT basis per colour channel, low frequencies
down-weighted and high ones amplified, so a periodic up-sampling trace shows in the patch tokens.
Nothing becomes trainable.
"""

from __future__ import annotations

import math

import torch


def dct_basis(size: int) -> torch.Tensor:
    """(size, size) orthonormal DCT-II matrix; row k is the k-th cosine over ``size`` pixels."""
    n = torch.arange(size, dtype=torch.float64)
    k = n[:, None]
    basis = torch.cos(math.pi * (2 * n[None] + 1) * k / (2 * size)) * math.sqrt(2.0 / size)
    basis[0] /= math.sqrt(2.0)
    return basis


def dct_patch_filters(patch: int, channels_out: int, low_gain: float, high_gain: float) -> torch.Tensor:
    """(channels_out, 3, patch, patch) filters: a 2-D DCT-II basis per colour channel.

    The weight of frequency (ky, kx) grows linearly with ky + kx from ``low_gain`` (DC) to
    ``high_gain`` (the highest frequency). Filters are ordered highest frequency first, colour
    channels interleaved; extra output channels are zero, surplus filters (low frequencies) are dropped.
    """
    b = dct_basis(patch)
    freqs = sorted(((ky, kx) for ky in range(patch) for kx in range(patch)), key=lambda f: -(f[0] + f[1]))
    filters = []
    for ky, kx in freqs:
        gain = low_gain + (high_gain - low_gain) * (ky + kx) / (2 * (patch - 1))
        for c in range(3):
            f = torch.zeros(3, patch, patch, dtype=torch.float64)
            f[c] = gain * torch.outer(b[ky], b[kx])
            filters.append(f)
    out = torch.zeros(channels_out, 3, patch, patch, dtype=torch.float64)
    n = min(channels_out, len(filters))
    out[:n] = torch.stack(filters[:n])
    return out.float()
