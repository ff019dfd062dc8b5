"""Swin transformer pieces for 2D and 3D: (shifted) window attention, patch merging and expanding.

Tokens are channel-last feature maps ``(B, *S, C)``. Windows larger than a stage's grid shrink to the grid (and
then do not shift), and grids that are not a multiple of the window are padded inside the block.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medseg.nets.blocks.transformer import MLP


def window_partition(x: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """``(B, *S, C)`` with ``S`` a multiple of ``window`` -> ``(B * n_windows, prod(window), C)``."""
    b, *spatial, c = x.shape
    d = len(spatial)
    shape = [b]
    for size, w in zip(spatial, window):
        shape += [size // w, w]
    x = x.view(*shape, c).permute(0, *range(1, 2 * d, 2), *range(2, 2 * d + 1, 2), 2 * d + 1)
    return x.reshape(-1, math.prod(window), c)


def window_reverse(windows: torch.Tensor, window: Sequence[int], spatial: Sequence[int], batch: int) -> torch.Tensor:
    """Inverse of ``window_partition``: ``(B * n_windows, prod(window), C) -> (B, *S, C)``."""
    d = len(spatial)
    grid = [s // w for s, w in zip(spatial, window)]
    x = windows.view(batch, *grid, *window, -1)
    order = [0]
    for i in range(d):
        order += [1 + i, 1 + d + i]
    return x.permute(*order, 2 * d + 1).reshape(batch, *spatial, -1)


def relative_position_index(window: Sequence[int], table_window: Sequence[int]) -> torch.Tensor:
    """``(N, N)`` index into a ``prod(2 * table_window - 1)`` bias table for a window of ``N = prod(window)``."""
    coords = torch.stack(torch.meshgrid(*[torch.arange(w) for w in window], indexing="ij")).flatten(1)
    relative = coords[:, :, None] - coords[:, None, :]
    index = torch.zeros(relative.shape[1:], dtype=torch.long)
    stride = 1
    for axis in range(len(table_window) - 1, -1, -1):  # row-major over the (2w - 1)^d table
        index += (relative[axis] + table_window[axis] - 1) * stride
        stride *= 2 * table_window[axis] - 1
    return index


def shift_mask(spatial: Sequence[int], window: Sequence[int], shift: Sequence[int], device) -> torch.Tensor:
    """``(n_windows, N, N)`` additive mask (0 / -100) that keeps shifted windows from mixing distant regions."""
    regions = torch.zeros((1, *spatial, 1), device=device)
    count = 0
    ranges = [[slice(0, -w), slice(-w, -s), slice(-s, None)] if s else [slice(None)] for w, s in zip(window, shift)]
    for region in itertools.product(*ranges):
        regions[(slice(None), *region, slice(None))] = count
        count += 1
    ids = window_partition(regions, window).squeeze(-1)
    return (ids[:, None, :] != ids[:, :, None]).float() * -100.0


class SwinBlock(nn.Module):
    """Window attention (shifted by half a window when ``shift``) + MLP, pre-norm: ``(B, *S, C) -> (B, *S, C)``."""

    def __init__(self, dim: int, heads: int, window: Sequence[int], shift: bool, mlp_ratio: float = 4.0):
        super().__init__()
        self.heads, self.window, self.shift = heads, tuple(window), shift
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros(math.prod(2 * w - 1 for w in self.window), heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        b, *spatial, c = x.shape
        window = [min(w, s) for w, s in zip(self.window, spatial)]
        shift = [w // 2 if (self.shift and s > w) else 0 for w, s in zip(self.window, spatial)]
        pads = [(-s) % w for s, w in zip(spatial, window)]
        if any(pads):
            flat = [0, 0]
            for p in reversed(pads):
                flat += [0, p]
            x = F.pad(x, flat)
        padded = x.shape[1:-1]
        if any(shift):
            x = torch.roll(x, [-s for s in shift], dims=list(range(1, len(spatial) + 1)))
        windows = window_partition(x, window)
        n = windows.shape[1]
        bias = self.bias_table[relative_position_index(window, self.window).to(x.device).view(-1)]
        bias = bias.view(n, n, self.heads).permute(2, 0, 1)[None]  # (1, heads, N, N)
        if any(shift):
            mask = shift_mask(padded, window, shift, x.device)  # (nW, N, N)
            bias = (bias + mask[:, None]).repeat(b, 1, 1, 1)
        q, k, v = self.qkv(windows).view(-1, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = self.proj(out.transpose(1, 2).reshape(-1, n, c))
        x = window_reverse(out, window, padded, b)
        if any(shift):
            x = torch.roll(x, shift, dims=list(range(1, len(spatial) + 1)))
        return x[(slice(None), *[slice(0, s) for s in spatial])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SwinStage(nn.Sequential):
    """``depth`` Swin blocks alternating regular and shifted windows: ``(B, *S, C) -> (B, *S, C)``."""

    def __init__(self, dim: int, depth: int, heads: int, window: Sequence[int], mlp_ratio: float = 4.0):
        super().__init__(*[SwinBlock(dim, heads, window, shift=i % 2 == 1, mlp_ratio=mlp_ratio) for i in range(depth)])


class PatchMerging(nn.Module):
    """Halve every spatial axis, concatenating each 2^d neighbourhood: ``(B, *S, C) -> (B, *S/2, out)``."""

    def __init__(self, spatial_dims: int, dim: int, out: int | None = None):
        super().__init__()
        self.norm = nn.LayerNorm(2 ** spatial_dims * dim)
        self.reduce = nn.Linear(2 ** spatial_dims * dim, out or 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, *spatial, c = x.shape
        d = len(spatial)
        if any(s % 2 for s in spatial):
            flat = [0, 0]
            for s in reversed(spatial):
                flat += [0, s % 2]
            x = F.pad(x, flat)
            spatial = [s + s % 2 for s in spatial]
        shape = [b]
        for s in spatial:
            shape += [s // 2, 2]
        x = x.view(*shape, c).permute(0, *range(1, 2 * d, 2), *range(2, 2 * d + 1, 2), 2 * d + 1)
        x = x.reshape(b, *[s // 2 for s in spatial], (2 ** d) * c)
        return self.reduce(self.norm(x))


class PatchExpand(nn.Module):
    """Multiply every spatial axis by ``scale`` with a linear layer: ``(B, *S, C) -> (B, *S*scale, out)``."""

    def __init__(self, spatial_dims: int, dim: int, out: int, scale: int = 2):
        super().__init__()
        self.scale, self.out = scale, out
        self.expand = nn.Linear(dim, scale ** spatial_dims * out, bias=False)
        self.norm = nn.LayerNorm(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, *spatial, _ = x.shape
        d, s = len(spatial), self.scale
        x = self.expand(x).view(b, *spatial, *([s] * d), self.out)
        order = [0]
        for i in range(d):
            order += [1 + i, 1 + d + i]
        x = x.permute(*order, 2 * d + 1).reshape(b, *[n * s for n in spatial], self.out)
        return self.norm(x)
