"""UNet++ (Zhou et al. 2018): nested, densely connected skips; deep supervision; prunable at inference."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medseg.nets.blocks import LayerSpec, SegHead, StackedConvs, UpConv, max_pool


class UNetPlusPlus(nn.Module):
    """Nodes ``X[i][j]`` (level ``i`` down, ``j`` skips across): ``X[i][0]`` is the encoder, and
    ``X[i][j] = conv(cat(X[i][0..j-1], up(X[i+1][j-1])))``.

    Input ``(B, in_channels, *S)``, ``S`` a multiple of ``2 ** (len(features) - 1)``. Output ``(B, num_classes, *S)``
    from ``X[0][depth]`` where ``depth = prune_depth or len(features) - 1``. With ``deep_supervision=True`` the
    output is always a list of ``depth`` full-resolution logits, from the deepest sub-network ``X[0][depth]`` to the
    shallowest ``X[0][1]`` (all ``(B, num_classes, *S)``). ``model.prune_depth = k`` (1 <= k < len(features))
    evaluates only the nodes that ``X[0][k]`` needs: the pruned network of the paper, for fast inference.
    """

    def __init__(self, *, spatial_dims: int, in_channels: int, num_classes: int,
                 features: Sequence[int] = (32, 64, 128, 256, 512), n_convs: int = 2, norm: LayerSpec = "batch",
                 act: LayerSpec = "relu", dropout: float | None = None, deep_supervision: bool = False,
                 prune_depth: int | None = None):
        super().__init__()
        features = [int(f) for f in features]
        self.levels = len(features)
        self.deep_supervision, self.prune_depth = deep_supervision, prune_depth
        common = dict(norm=norm, act=act, dropout=dropout)
        self.pool = max_pool(spatial_dims, 2)
        self.nodes = nn.ModuleDict()
        self.ups = nn.ModuleDict()
        for i in range(self.levels):
            for j in range(self.levels - i):
                key = f"{i}_{j}"
                if j == 0:
                    self.nodes[key] = StackedConvs(spatial_dims, in_channels if i == 0 else features[i - 1],
                                                   features[i], n_convs, **common)
                else:
                    self.ups[key] = UpConv(spatial_dims, features[i + 1], features[i], 2)
                    self.nodes[key] = StackedConvs(spatial_dims, (j + 1) * features[i], features[i], n_convs,
                                                   **common)
        self.heads = nn.ModuleList(SegHead(spatial_dims, features[0], num_classes)
                                   for _ in range(self.levels - 1 if deep_supervision else 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        depth = self.prune_depth or self.levels - 1
        grid: dict[tuple[int, int], torch.Tensor] = {}
        for i in range(depth + 1):
            x = self.nodes[f"{i}_0"](x if i == 0 else self.pool(x))
            grid[i, 0] = x
            for k in range(i - 1, -1, -1):  # nodes on the anti-diagonal i = k + j, from the new encoder node up
                j = i - k
                inputs = [grid[k, m] for m in range(j)] + [self.ups[f"{k}_{j}"](grid[k + 1, j - 1])]
                grid[k, j] = self.nodes[f"{k}_{j}"](torch.cat(inputs, dim=1))
        if not self.deep_supervision:
            return self.heads[-1](grid[0, depth])
        return [self.heads[j - 1](grid[0, j]) for j in range(depth, 0, -1)]
