"""Transformer pieces for 2D and 3D: patch embedding, pre-norm blocks, a ViT with resizable position embedding."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medseg.nets.blocks.factory import as_tuple, conv_layer


class MLP(nn.Sequential):
    """``(..., dim) -> (..., dim)``: linear, GELU, dropout, linear, dropout."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                         nn.Dropout(dropout))


class SelfAttention(nn.Module):
    """Multi-head self-attention over tokens ``(B, N, dim)`` with an optional additive bias ``(heads|1, N, N)``."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``; tokens ``(B, N, dim)``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Vision transformer encoder on ``(B, C, *S)``: non-overlapping patches of ``patch_size``, learned positions.

    Returns the hidden states after every block, each ``(B, N, hidden)`` with ``N = prod(S / patch_size)``, and
    the token grid ``S / patch_size``. Position embeddings are learned for ``grid = img_size / patch_size`` and
    interpolated when the input grid differs, so any input size that is a multiple of ``patch_size`` works.
    """

    def __init__(self, *, spatial_dims: int, in_channels: int, img_size: int | Sequence[int], patch_size: int,
                 hidden: int = 768, layers: int = 12, heads: int = 12, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.grid = tuple(s // p for s, p in zip(as_tuple(img_size, spatial_dims), as_tuple(patch_size, spatial_dims)))
        self.embed = conv_layer(spatial_dims, in_channels, hidden, patch_size, stride=patch_size, padding="valid")
        self.pos = nn.Parameter(torch.zeros(1, hidden, *self.grid))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(hidden, heads, mlp_ratio, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, ...]]:
        x = self.embed(x)
        grid = tuple(x.shape[2:])
        pos = self.pos
        if grid != self.grid:
            mode = "bilinear" if len(grid) == 2 else "trilinear"
            pos = F.interpolate(pos, size=grid, mode=mode, align_corners=False)
        x = self.drop((x + pos).flatten(2).transpose(1, 2))
        states = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            states.append(self.norm(x) if i == len(self.blocks) - 1 else x)
        return states, grid


def tokens_to_map(tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """``(B, N, C)`` tokens on ``grid`` -> feature map ``(B, C, *grid)``."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)
