"""PSCC-Net's two heads: the localisation head ``NLCDetection`` and the 2-way ``DetectionHead``.

Origin: Liu et al., "PSCC-Net: Progressive Spatio-Channel Correlation Network for Image
Manipulation Detection and Localization" (IEEE TCSVT 2022); facts from ``models/NLCDetection.py``
and ``models/detection_head.py`` of proteus1991/PSCC-Net (MIT licence), re-written here.
Module and parameter names match the official checkpoint keys.

Both heads first resize the 4 HRNet features bilinearly (align_corners=True) to ``crop_size``,
``crop_size/2``, ``/4`` and ``/8`` (256, 128, 64, 32 officially), whatever the input size.
(The official code guards this with ``s1.shape[2:] == crop_size``, a torch.Size-vs-list test that
is never true, so it always resizes; an align_corners=True resize to the same size is the identity.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from baselines.hrnet import BN_MOMENTUM, Bottleneck, conv_bn


def resize_features(feats: Sequence[torch.Tensor], crop_size: int) -> list[torch.Tensor]:
    """Resize the 4 feature maps to ``crop_size / 2**k`` (bilinear, align_corners=True); a map
    already at that size is passed through (the same-size align_corners=True resize is the identity)."""
    return [
        f if f.shape[-2:] == (crop_size >> k, crop_size >> k)
        else F.interpolate(f, size=(crop_size >> k, crop_size >> k), mode="bilinear", align_corners=True)
        for k, f in enumerate(feats)
    ]


class NonLocalMask(nn.Module):
    """Spatio-channel non-local block that predicts one mask.

    The input (B, C, H, W) is *reshaped* (a plain memory reshape, not a pixel unshuffle) to
    (B, C·r², H/r, W/r). Spatial attention ``softmax(θᵀφ)`` (N×N, N = HW/r²) and channel
    attention ``softmax(θφᵀ)`` (C·r² × C·r²) are applied to ``g``; both results are viewed back as
    (B, C, H, W), projected by ``W_s`` / ``W_c``, scaled by ``gamma_s`` / ``gamma_c`` and added to the
    input: z. The mask is ``sigmoid(getmask(z))``, a (B, 1, H, W) probability map.
    """

    def __init__(self, in_channels: int, reduce_scale: int, hidden: int = 16) -> None:
        super().__init__()
        self.r = reduce_scale
        self.ic = in_channels * reduce_scale * reduce_scale
        self.g = nn.Conv2d(self.ic, self.ic, 1)
        self.theta = nn.Conv2d(self.ic, self.ic, 1)
        self.phi = nn.Conv2d(self.ic, self.ic, 1)
        self.W_s = nn.Conv2d(in_channels, in_channels, 1)
        self.W_c = nn.Conv2d(in_channels, in_channels, 1)
        self.gamma_s = nn.Parameter(torch.ones(1))
        self.gamma_c = nn.Parameter(torch.ones(1))
        self.getmask = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, 1, 1), nn.ReLU(), nn.Conv2d(hidden, 1, 3, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (mask (B, 1, H, W) in [0, 1], z (B, C, H, W))."""
        b, c, h, w = x.shape
        x1 = x.reshape(b, self.ic, h // self.r, w // self.r)
        g = self.g(x1).flatten(2).transpose(1, 2)  # (B, N, ic)
        theta = self.theta(x1).flatten(2)  # (B, ic, N)
        phi = self.phi(x1).flatten(2)  # (B, ic, N)
        attn_s = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # (B, N, N)
        attn_c = torch.softmax(theta @ phi.transpose(1, 2), dim=-1)  # (B, ic, ic)
        y_s = (attn_s @ g).transpose(1, 2).contiguous().view(b, c, h, w)
        y_c = (g @ attn_c).view(b, c, h, w)
        z = x + self.gamma_s * self.W_s(y_s) + self.gamma_c * self.W_c(y_c)
        return torch.sigmoid(self.getmask(z)), z


class NLCDetection(nn.Module):
    """Progressive localisation head: masks from coarse (1/8) to fine (full crop size).

    Each mask, upsampled (bilinear, align_corners=True), gates the next finer feature map.
    Reduction scales of the non-local blocks: 4, 2, 2, 1 for scales 1, 1/2, 1/4, 1/8.

    Input: the 4 HRNet features. Output: (mask1, mask2, mask3, mask4), each (B, 1, s, s) with
    s = crop_size / 2**k, probabilities in [0, 1].
    """

    reduce_scales = (4, 2, 2, 1)

    def __init__(self, channels: Sequence[int], crop_size: int = 256, hidden: int = 16) -> None:
        super().__init__()
        self.crop_size = crop_size
        for k, (c, r) in enumerate(zip(channels, self.reduce_scales), start=1):
            setattr(self, f"getmask{k}", NonLocalMask(c, r, hidden))

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        s = resize_features(feats, self.crop_size)
        masks: list[torch.Tensor] = []
        gate: torch.Tensor | None = None
        for k in (4, 3, 2, 1):
            x = s[k - 1]
            if gate is not None:
                x = x * F.interpolate(gate, size=x.shape[-2:], mode="bilinear", align_corners=True)
            gate, _ = getattr(self, f"getmask{k}")(x)
            masks.append(gate)
        return tuple(reversed(masks))


class DetectionHead(nn.Module):
    """HRNet-style classification head on the resized features → ``num_classes`` logits.

    Each branch goes through one bottleneck (expansion 2), is merged top-down with stride-2
    3x3 conv+BN+ReLU downsamplers, then a 1x1 conv to ``width`` channels, global average pooling
    and Linear(width, fc_hidden) → ReLU → Linear(fc_hidden, num_classes). Officially width 128,
    fc_hidden 16, 2 classes with index 1 = forged.
    """

    expansion = 2

    def __init__(
        self,
        channels: Sequence[int],
        crop_size: int = 256,
        width: int = 128,
        fc_hidden: int = 16,
        num_classes: int = 2,
    ) -> None:
        super().__init__()
        self.crop_size = crop_size
        e = self.expansion
        self.incre_modules = nn.ModuleList(self._bottleneck(c, e) for c in channels)
        self.downsamp_modules = nn.ModuleList(
            conv_bn(channels[i] * e, channels[i + 1] * e, 3, 2, relu=True, bias=True) for i in range(len(channels) - 1)
        )
        self.final_layer = nn.Sequential(
            nn.Conv2d(channels[-1] * e, width, 1),
            nn.BatchNorm2d(width, momentum=BN_MOMENTUM),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(nn.Linear(width, fc_hidden), nn.ReLU(), nn.Linear(fc_hidden, num_classes))

    @staticmethod
    def _bottleneck(c: int, e: int) -> nn.Sequential:
        return nn.Sequential(Bottleneck(c, c, 1, conv_bn(c, c * e, 1), expansion=e))

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Returns logits (B, num_classes)."""
        s = resize_features(feats, self.crop_size)
        y = self.incre_modules[0](s[0])
        for i, down in enumerate(self.downsamp_modules):
            y = self.incre_modules[i + 1](s[i + 1]) + down(y)
        y = self.final_layer(y)
        return self.classifier(y.mean(dim=(2, 3)))
