"""UNETR (Hatamizadeh et al. 2022): a ViT encoder on 16^d patches with a convolutional U-shaped decoder."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from medseg.errors import MedsegError
from medseg.nets.blocks import LayerSpec, ResidualBlock, SegHead, UpConv
from medseg.nets.blocks.transformer import ViT, tokens_to_map


class _UpChain(nn.Sequential):
    """``steps`` x (transposed conv x2 + residual block), ViT tokens to a skip: ``(B, D, *G) -> (B, C, *G*2^steps)``."""

    def __init__(self, spatial_dims: int, hidden: int, channels: int, steps: int, block: dict):
        layers: list[nn.Module] = []
        for i in range(steps):
            layers.append(UpConv(spatial_dims, hidden if i == 0 else channels, channels, 2, bias=False))
            if i > 0:  # as the reference implementation: the first step is a bare transposed conv
                layers.append(ResidualBlock(spatial_dims, channels, channels, **block))
        super().__init__(*layers)


class UNETR(nn.Module):
    """UNETR. ``(B, in_channels, *S) -> (B, num_classes, *S)``, ``S`` a multiple of ``patch_size`` (a power of 2).

    With ``L = log2(patch_size)`` levels, the ViT hidden states after blocks ``k * layers / L`` (k = 1 .. L-1) are
    upsampled to ``S / 2^k`` with ``feature_size * 2^k`` channels and serve as skips; the last state is the
    bottleneck; the input, through a residual block, is the full-resolution skip. ``img_size`` only sets the
    resolution of the learned position embedding (interpolated for other sizes).
    """

    def __init__(self, *, spatial_dims: int, in_channels: int, num_classes: int, img_size: int | Sequence[int] = 96,
                 patch_size: int = 16, feature_size: int = 16, hidden: int = 768, layers: int = 12, heads: int = 12,
                 mlp_ratio: float = 4.0, dropout: float = 0.0, norm: LayerSpec = "instance",
                 act: LayerSpec = ("leakyrelu", {"negative_slope": 0.01})):
        super().__init__()
        levels = int(round(math.log2(patch_size)))
        if 2 ** levels != patch_size or levels < 1 or layers < levels:
            raise MedsegError(f"UNETR needs a power-of-2 patch_size and at least log2(patch_size) layers, "
                              f"got patch_size={patch_size}, layers={layers}")
        self.vit = ViT(spatial_dims=spatial_dims, in_channels=in_channels, img_size=img_size, patch_size=patch_size,
                       hidden=hidden, layers=layers, heads=heads, mlp_ratio=mlp_ratio, dropout=dropout)
        block = dict(norm=norm, act=act)
        self.taps = [k * layers // levels - 1 for k in range(1, levels)]  # hidden-state indices of the skips
        widths = [feature_size * 2 ** level for level in range(levels)]  # at S, S/2, ..., S/2^(L-1)
        self.input_skip = ResidualBlock(spatial_dims, in_channels, widths[0], **block)
        # the skip from tap k lands on level k (S / 2^k) after L-k upsampling steps (paper: z3 -> S/2, z9 -> S/8)
        self.skips = nn.ModuleList(_UpChain(spatial_dims, hidden, widths[k], levels - k, block)
                                   for k in range(1, levels))
        self.ups, self.decoder = nn.ModuleList(), nn.ModuleList()
        channels = hidden
        for level in range(levels - 1, -1, -1):
            self.ups.append(UpConv(spatial_dims, channels, widths[level], 2, bias=False))
            self.decoder.append(ResidualBlock(spatial_dims, 2 * widths[level], widths[level], **block))
            channels = widths[level]
        self.head = SegHead(spatial_dims, widths[0], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states, grid = self.vit(x)
        skips = [self.input_skip(x)]  # level 0
        for tap, chain in zip(self.taps, self.skips):  # levels 1 .. L-1
            skips.append(chain(tokens_to_map(states[tap], grid)))
        y = tokens_to_map(states[-1], grid)
        for up, block, skip in zip(self.ups, self.decoder, reversed(skips)):
            y = block(torch.cat([up(y), skip], dim=1))
        return self.head(y)
