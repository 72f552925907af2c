"""Dual-stream Mix Transformer (SegFormer MiT) with CMX fusion, as TruFor uses it.

Origin: Xie et al., "SegFormer" (NeurIPS 2021) for MiT; Zhang et al., "CMX: Cross-Modal Fusion for
RGB-X Semantic Segmentation" (T-ITS 2023) for the Feature Rectify (FRM) and Feature Fusion (FFM)
modules; the layout follows TruFor's ``models/cmx/encoders/dual_segformer.py`` and
``models/cmx/net_utils.py`` (grip-unina/TruFor), re-written here.

Why not a maintained MiT: timm has no MiT; Hugging Face ``transformers``' ``SegformerModel``
splits the attention's fused ``kv`` projection into ``key``/``value`` and renames every module
(``encoder.block.0.0.attention.self.query``), so the official checkpoint does not load key for key.
The tests check every key of this module against the official names.

Two identical MiT streams (``patch_embed*``/``block*``/``norm*`` for RGB, ``extra_*`` for the
second modality) run in lock-step; after each of the 4 stages the two maps are rectified (FRM:
channel and spatial cross-weights, λ = 0.5) and fused (FFM: cross attention over channels, then a
channel embedding with BatchNorm) into one output map. Outputs: 4 fused maps at strides 4, 8, 16, 32.
LayerNorm eps: 1e-6 in blocks and stage norms, 1e-5 (PyTorch's default) in patch embeddings, the
spatial-reduction norm and the fusion's cross path, as in the official code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class MiTConfig:
    """Widths and depths of one MiT; :func:`mit_b2` is TruFor's."""

    embed_dims: tuple[int, int, int, int] = (64, 128, 320, 512)
    num_heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    depths: tuple[int, int, int, int] = (3, 4, 6, 3)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    mlp_ratio: int = 4


def mit_b2() -> MiTConfig:
    return MiTConfig()


class OverlapPatchEmbed(nn.Module):
    """Strided conv (padding k//2) → tokens (B, N, C) → LayerNorm (eps 1e-5)."""

    def __init__(self, cin: int, dim: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, kernel, stride, kernel // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class Attention(nn.Module):
    """Efficient self-attention: keys/values from a ``sr``-strided conv of the tokens (when sr > 1)."""

    def __init__(self, dim: int, heads: int, sr: int) -> None:
        super().__init__()
        self.heads, self.sr_ratio = heads, sr
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if sr > 1:
            self.sr = nn.Conv2d(dim, dim, sr, sr)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.heads, c // self.heads).permute(0, 2, 1, 3)
        if self.sr_ratio > 1:
            x = self.norm(self.sr(x.permute(0, 2, 1).reshape(b, c, h, w)).reshape(b, c, -1).permute(0, 2, 1))
        k, v = self.kv(x).reshape(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class DWConv(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    """Mix-FFN: Linear → depthwise 3×3 conv → GELU → Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class Block(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-6); drop-path is the identity at inference."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, sr: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, sr)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.mlp(self.norm2(x), h, w)


class ChannelWeights(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(4 * dim, 4 * dim), nn.ReLU(inplace=True), nn.Linear(4 * dim, 2 * dim),
                                 nn.Sigmoid())

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        b = x1.shape[0]
        x = torch.cat((x1, x2), dim=1)
        y = torch.cat((x.mean(dim=(2, 3)), x.amax(dim=(2, 3))), dim=1)
        return self.mlp(y).reshape(b, 2, self.dim, 1, 1).permute(1, 0, 2, 3, 4)


class SpatialWeights(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(2 * dim, dim, 1), nn.ReLU(inplace=True), nn.Conv2d(dim, 2, 1), nn.Sigmoid())

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x1.shape
        return self.mlp(torch.cat((x1, x2), dim=1)).reshape(b, 2, 1, h, w).permute(1, 0, 2, 3, 4)


class FeatureRectifyModule(nn.Module):
    """FRM: each stream gets ``0.5 · (channel + spatial weights) ·`` the other stream added."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.channel_weights = ChannelWeights(dim)
        self.spatial_weights = SpatialWeights(dim)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cw, sw = self.channel_weights(x1, x2), self.spatial_weights(x1, x2)
        return x1 + 0.5 * cw[1] * x2 + 0.5 * sw[1] * x2, x2 + 0.5 * cw[0] * x1 + 0.5 * sw[0] * x1


class CrossAttention(nn.Module):
    """Channel-context cross attention: ``q1 · softmax_cols(k2ᵀ v2 · scale)`` and symmetrically."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.kv1 = nn.Linear(dim, 2 * dim, bias=False)
        self.kv2 = nn.Linear(dim, 2 * dim, bias=False)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, c = x1.shape
        split = lambda t: t.reshape(b, -1, self.heads, c // self.heads).permute(0, 2, 1, 3)  # noqa: E731
        k1, v1 = self.kv1(x1).reshape(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        k2, v2 = self.kv2(x2).reshape(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        ctx1 = ((k1.transpose(-2, -1) @ v1) * self.scale).softmax(dim=-2)
        ctx2 = ((k2.transpose(-2, -1) @ v2) * self.scale).softmax(dim=-2)
        out1 = (split(x1) @ ctx2).permute(0, 2, 1, 3).reshape(b, n, c)
        out2 = (split(x2) @ ctx1).permute(0, 2, 1, 3).reshape(b, n, c)
        return out1, out2


class CrossPath(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.channel_proj1 = nn.Linear(dim, 2 * dim)
        self.channel_proj2 = nn.Linear(dim, 2 * dim)
        self.cross_attn = CrossAttention(dim, heads)
        self.end_proj1 = nn.Linear(2 * dim, dim)
        self.end_proj2 = nn.Linear(2 * dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y1, u1 = torch.relu(self.channel_proj1(x1)).chunk(2, dim=-1)
        y2, u2 = torch.relu(self.channel_proj2(x2)).chunk(2, dim=-1)
        v1, v2 = self.cross_attn(u1, u2)
        return (self.norm1(x1 + self.end_proj1(torch.cat((y1, v1), dim=-1))),
                self.norm2(x2 + self.end_proj2(torch.cat((y2, v2), dim=-1))))


class ChannelEmbed(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.residual = nn.Conv2d(cin, cout, 1, bias=False)
        self.channel_embed = nn.Sequential(nn.Conv2d(cin, cout, 1), nn.Conv2d(cout, cout, 3, 1, 1, groups=cout),
                                           nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 1), nn.BatchNorm2d(cout))
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        x = x.permute(0, 2, 1).reshape(b, c, h, w)
        return self.norm(self.residual(x) + self.channel_embed(x))


class FeatureFusionModule(nn.Module):
    """FFM: cross path on the two token sequences, concatenated, channel embedding → (B, C, H, W)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.cross = CrossPath(dim, heads)
        self.channel_emb = ChannelEmbed(2 * dim, dim)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x1.shape
        t1, t2 = self.cross(x1.flatten(2).transpose(1, 2), x2.flatten(2).transpose(1, 2))
        return self.channel_emb(torch.cat((t1, t2), dim=-1), h, w)


class DualMiT(nn.Module):
    """The official ``RGBXTransformer``: ``forward(rgb, x)`` → 4 fused maps (strides 4, 8, 16, 32)."""

    def __init__(self, config: MiTConfig) -> None:
        super().__init__()
        dims, heads = config.embed_dims, config.num_heads
        self.depths = config.depths
        for prefix in ("", "extra_"):
            for k in range(4):
                cin = 3 if k == 0 else dims[k - 1]
                kernel, stride = (7, 4) if k == 0 else (3, 2)
                setattr(self, f"{prefix}patch_embed{k + 1}", OverlapPatchEmbed(cin, dims[k], kernel, stride))
                setattr(self, f"{prefix}block{k + 1}", nn.ModuleList(
                    Block(dims[k], heads[k], config.mlp_ratio, config.sr_ratios[k]) for _ in range(config.depths[k])))
                setattr(self, f"{prefix}norm{k + 1}", nn.LayerNorm(dims[k], eps=1e-6))
        self.FRMs = nn.ModuleList(FeatureRectifyModule(d) for d in dims)
        self.FFMs = nn.ModuleList(FeatureFusionModule(d, h) for d, h in zip(dims, heads))

    def _stage(self, prefix: str, k: int, x: torch.Tensor) -> torch.Tensor:
        tokens, h, w = getattr(self, f"{prefix}patch_embed{k}")(x)
        for blk in getattr(self, f"{prefix}block{k}"):
            tokens = blk(tokens, h, w)
        tokens = getattr(self, f"{prefix}norm{k}")(tokens)
        return tokens.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous()

    def forward(self, rgb: torch.Tensor, other: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for k in range(1, 5):
            rgb, other = self._stage("", k, rgb), self._stage("extra_", k, other)
            rgb, other = self.FRMs[k - 1](rgb, other)
            outs.append(self.FFMs[k - 1](rgb, other))
        return outs
