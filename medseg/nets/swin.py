"""Swin-UNETR (Hatamizadeh et al. 2022; Swin encoder + convolutional decoder) and Swin-Unet (Cao et al. 2021;
pure Swin encoder-decoder with patch expanding), both for 2D and 3D."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medseg.nets.blocks import LayerSpec, ResidualBlock, SegHead, UpConv, as_tuple, conv_layer
from medseg.nets.blocks.swin import PatchExpand, PatchMerging, SwinStage


def _channels_first(x: torch.Tensor) -> torch.Tensor:
    return x.movedim(-1, 1)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.movedim(1, -1)


class SwinEncoder(nn.Module):
    """Patch embedding + Swin stages, each followed by patch merging.

    ``(B, C, *S) -> [h0 (B, F, *S/p), h1 (B, 2F, *S/2p), ..., h_n (B, 2^n F, *S/(2^n p))]`` channel-first, where
    ``p = patch_size`` and ``n = len(depths)``.
    """

    def __init__(self, *, spatial_dims: int, in_channels: int, embed_dim: int, patch_size: int,
                 depths: Sequence[int], heads: Sequence[int], window: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.embed = conv_layer(spatial_dims, in_channels, embed_dim, patch_size, stride=patch_size, padding="valid")
        self.embed_norm = nn.LayerNorm(embed_dim)
        windows = as_tuple(window, spatial_dims)
        self.stages, self.merges = nn.ModuleList(), nn.ModuleList()
        dim = embed_dim
        for depth, n_heads in zip(depths, heads):
            self.stages.append(SwinStage(dim, depth, n_heads, windows, mlp_ratio))
            self.merges.append(PatchMerging(spatial_dims, dim))
            dim *= 2

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.embed_norm(_channels_last(self.embed(x)))
        states = [x]
        for stage, merge in zip(self.stages, self.merges):
            x = merge(stage(x))
            states.append(x)
        return [_channels_first(s) for s in states]


class SwinUNETR(nn.Module):
    """Swin-UNETR. ``(B, in_channels, *S) -> (B, num_classes, *S)``, ``S`` a multiple of ``2 ** (len(depths) + 1)``.

    Encoder states at ``S/2 .. S/2^(n+1)`` (``feature_size * 2^i`` channels) go through residual conv blocks and a
    U-Net decoder with transposed-conv upsampling; the input itself is the full-resolution skip.
    """

    def __init__(self, *, spatial_dims: int, in_channels: int, num_classes: int, feature_size: int = 48,
                 depths: Sequence[int] = (2, 2, 2, 2), heads: Sequence[int] = (3, 6, 12, 24), window: int = 7,
                 norm: LayerSpec = "instance", act: LayerSpec = ("leakyrelu", {"negative_slope": 0.01})):
        super().__init__()
        f, n = feature_size, len(depths)
        self.encoder = SwinEncoder(spatial_dims=spatial_dims, in_channels=in_channels, embed_dim=f, patch_size=2,
                                   depths=depths, heads=heads, window=window)
        block = dict(norm=norm, act=act)
        widths = [f] + [f * 2 ** i for i in range(n + 1)]  # skip widths at S, S/2, ..., S/2^(n+1)
        # every encoder state passes a residual block, except the second-deepest, which (as in the reference
        # implementation, MONAI's SwinUNETR) is used as it is
        self.skips = nn.ModuleList([ResidualBlock(spatial_dims, in_channels, f, **block)] +
                                   [nn.Identity() if i == n else ResidualBlock(spatial_dims, w, w, **block)
                                    for i, w in enumerate(widths[1:], start=1)])
        self.ups, self.decoder = nn.ModuleList(), nn.ModuleList()
        for level in range(n + 1, 0, -1):  # from S/2^(n+1) up to S
            self.ups.append(UpConv(spatial_dims, widths[level], widths[level - 1], 2))
            self.decoder.append(ResidualBlock(spatial_dims, 2 * widths[level - 1], widths[level - 1], **block))
        self.head = SegHead(spatial_dims, f, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x] + self.encoder(x)
        skips = [block(feature) for block, feature in zip(self.skips, features)]
        y = skips[-1]
        for up, block, skip in zip(self.ups, self.decoder, reversed(skips[:-1])):
            y = block(torch.cat([up(y), skip], dim=1))
        return self.head(y)


class SwinUnet(nn.Module):
    """Swin-Unet. ``(B, in_channels, *S) -> (B, num_classes, *S)``, ``S`` a multiple of
    ``patch_size * 2 ** (len(depths) - 1)``.

    Encoder stages at ``S/p .. S/(p 2^(n-1))`` (the last is the bottleneck), a mirrored decoder of patch expanding,
    skip concatenation + linear fusion and Swin stages, and a final ``p``-fold patch expansion to the logits.
    """

    def __init__(self, *, spatial_dims: int, in_channels: int, num_classes: int, embed_dim: int = 96,
                 patch_size: int = 4, depths: Sequence[int] = (2, 2, 2, 2), heads: Sequence[int] = (3, 6, 12, 24),
                 window: int = 7, mlp_ratio: float = 4.0):
        super().__init__()
        n = len(depths)
        self.encoder = SwinEncoder(spatial_dims=spatial_dims, in_channels=in_channels, embed_dim=embed_dim,
                                   patch_size=patch_size, depths=depths[:-1], heads=heads[:-1], window=window,
                                   mlp_ratio=mlp_ratio)
        windows = as_tuple(window, spatial_dims)
        dims = [embed_dim * 2 ** i for i in range(n)]
        self.bottleneck = SwinStage(dims[-1], depths[-1], heads[-1], windows, mlp_ratio)
        self.expands, self.fuse, self.stages = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for level in range(n - 2, -1, -1):
            self.expands.append(PatchExpand(spatial_dims, dims[level + 1], dims[level]))
            self.fuse.append(nn.Linear(2 * dims[level], dims[level]))
            self.stages.append(SwinStage(dims[level], depths[level], heads[level], windows, mlp_ratio))
        self.norm = nn.LayerNorm(embed_dim)
        self.final_expand = PatchExpand(spatial_dims, embed_dim, embed_dim, scale=patch_size)
        self.head = SegHead(spatial_dims, embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [_channels_last(s) for s in self.encoder(x)]
        y = self.bottleneck(states[-1])
        for expand, fuse, stage, skip in zip(self.expands, self.fuse, self.stages, reversed(states[:-1])):
            y = stage(fuse(torch.cat([expand(y), skip], dim=-1)))
        y = self.final_expand(self.norm(y))
        return self.head(_channels_first(y))
