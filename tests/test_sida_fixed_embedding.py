"""The tiny configuration's fixed DCT patch embeddings (stand-in for pretrained frozen encoders)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.fft import dct

from sida.batch import SpecialTokenIds
from sida.config import CONFIGS, TINY
from bench.fixed_filters import dct_basis, dct_patch_filters
from sida.model import SidaModel

TOKENS = SpecialTokenIds(cls=1000, seg=1001, im_start=1002, im_end=1003, pad=0, eos=2)


def test_dct_basis_matches_scipy_orthonormal_dct2() -> None:
    x = np.random.default_rng(0).standard_normal(6)
    ours = dct_basis(6).numpy() @ x
    assert np.allclose(ours, dct(x, type=2, norm="ortho"))


def test_filters_weight_high_frequencies_and_order_them_first() -> None:
    f = dct_patch_filters(4, 50, low_gain=0.5, high_gain=2.0).double()
    # first three filters: the highest frequency (3, 3) of R, G, B, at the high gain
    b = dct_basis(4)
    assert torch.allclose(f[0, 0], 2.0 * torch.outer(b[3], b[3]), atol=1e-6)
    assert torch.count_nonzero(f[0, 1:]) == 0 and torch.allclose(f[1, 1], f[0, 0], atol=1e-6)
    assert math.isclose(float(f[0].norm()), 2.0, rel_tol=1e-6)
    # 48 = 16 frequencies x 3 channels; the DC filters are last at the low gain, extra channels zero
    assert math.isclose(float(f[47].norm()), 0.5, rel_tol=1e-6) and float(f[47, 2].std()) < 1e-6
    assert torch.count_nonzero(f[48:]) == 0


def test_a_periodic_trace_shows_at_high_gain_and_smooth_content_at_low_gain() -> None:
    f = dct_patch_filters(8, 192, low_gain=0.1, high_gain=4.0)
    conv = torch.nn.Conv2d(3, 192, 8, 8, bias=False)
    conv.weight.data.copy_(f)
    yy, xx = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    checker = ((-1.0) ** (yy + xx)).expand(1, 3, 8, 8)
    flat = torch.ones(1, 3, 8, 8)
    assert conv(checker).norm() > 10 * conv(flat).norm()


def test_only_tiny_uses_fixed_embeddings_and_the_model_applies_them() -> None:
    assert CONFIGS["default"].dct_patch_gains is None and CONFIGS["13b"].dct_patch_gains is None
    torch.manual_seed(0)
    net = SidaModel(TINY, TOKENS, 1010)
    clip_w = net.vision_tower.embeddings.patch_embedding.weight
    sam = net.visual_model.image_encoder.patch_embed.proj
    assert torch.equal(clip_w, dct_patch_filters(TINY.clip.patch_size, TINY.clip.hidden_size, *TINY.dct_patch_gains))
    assert torch.equal(sam.weight, dct_patch_filters(TINY.sam.patch_size, TINY.sam.encoder_dim, *TINY.dct_patch_gains))
    assert torch.count_nonzero(sam.bias) == 0
    trainable = net.set_official_trainable()
    assert not any("patch_embed" in n for n in trainable)


@pytest.mark.parametrize("gains", [(0.1, 4.0), (1.0, 1.0)])
def test_equal_gains_give_an_orthogonal_embedding(gains: tuple[float, float]) -> None:
    f = dct_patch_filters(6, 108, *gains).reshape(108, -1).double()
    gram = f @ f.T
    expected = torch.diag(torch.diagonal(gram))
    assert torch.allclose(gram, expected, atol=1e-5)
    if gains[0] == gains[1]:
        assert torch.allclose(gram, torch.eye(108, dtype=torch.float64), atol=1e-5)
