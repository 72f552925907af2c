"""Fixed DCT patch embeddings for the frozen encoders of the ``tiny`` configuration.

The official model loads PRETRAINED CLIP and SAM encoders and keeps them frozen; the tiny
configuration has random weights, and random frozen encoders hide the pixel-level traces that
image-forensics data (sid-mini) relies on. As a stand-in for "pretrained", the tiny
configuration sets the frozen patch embeddings to a fixed orthonormal 2-D DCT-II basis per colour
channel, with the low frequencies down-weighted and the high ones amplified (see
:func:`dct_patch_filters`), so a periodic up-sampling trace shows in the patch tokens. Everything
else stays random; the trainable set is unchanged.
"""

from __future__ import annotations

import torch

from bench.fixed_filters import dct_basis, dct_patch_filters

__all__ = ["dct_basis", "dct_patch_filters", "set_dct_patch_embeddings"]


@torch.no_grad()
def set_dct_patch_embeddings(net: torch.nn.Module, low_gain: float, high_gain: float) -> None:
    """Overwrite the CLIP and SAM patch embeddings of a :class:`sida.model.SidaModel` in place."""
    clip_conv = net.vision_tower.embeddings.patch_embedding
    sam_conv = net.visual_model.image_encoder.patch_embed.proj
    for conv in (clip_conv, sam_conv):
        w = dct_patch_filters(conv.kernel_size[0], conv.out_channels, low_gain, high_gain)
        conv.weight.copy_(w.to(conv.weight.dtype))
        if conv.bias is not None:
            conv.bias.zero_()
