"""The configurable U-Net (Ronneberger et al. 2015) and its close relatives as options of one class.

Padded ("same") by default; ``padding="valid"`` is the paper's unpadded network, whose output is smaller than its
input (use ``unet_valid_sizes`` for the overlap-tile input size). Options cover the 3D U-Net of Cicek et al. 2016
(``encoder_mid_ratio=0.5``, ``up_keeps_channels=True``), the Residual U-Net (``block="residual"``,
``downsample="strided"``) and Attention U-Net (``skip_gate="attention"``, Oktay et al. 2018).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medseg.errors import MedsegError
from medseg.nets.blocks import (AttentionGate, LayerSpec, SegHead, UpConv, center_crop, check_divisible, conv_block,
                                max_pool)


def unet_valid_sizes(output_size: int, depth: int, *, n_convs: int = 2, kernel_size: int = 3) -> tuple[int, int]:
    """Overlap-tile sizes of an unpadded U-Net with ``depth`` levels (``depth - 1`` poolings) along one axis.

    Returns ``(input_size, output_size')``: the smallest valid input whose output ``output_size' >= output_size``.
    For the paper's network (depth 5), ``unet_valid_sizes(388, 5) == (572, 388)``.
    """
    shrink = n_convs * (kernel_size - 1)  # lost per conv block
    bottom = 1
    while True:
        out = bottom
        for _ in range(depth - 1):
            out = 2 * out - shrink
        if out >= max(output_size, 1):
            size = bottom + shrink
            for _ in range(depth - 1):
                size = 2 * size + shrink
            return size, out
        bottom += 1


class UNet(nn.Module):
    """Encoder-decoder with skip connections; logits at the input resolution (padded) or smaller (valid).

    Input ``(B, in_channels, *S)``, ``S`` = (Y, X) or (Z, Y, X), each a multiple of ``2 ** (len(features) - 1)``
    when padded; output ``(B, num_classes, *S)``. Unpadded: output size per axis is ``self.output_size(S)``.
    With ``deep_supervision=True`` the output is always a list, fine -> coarse: ``[(B, K, *S), (B, K, *S/2), ...]``
    (one per decoder level; set ``model.deep_supervision = False`` for inference to get the tensor only).

    ``features``: channels per level, bottleneck last (paper: 64..1024). ``encoder_mid_ratio``: width of the first
    conv of an encoder block relative to its output (3D U-Net: 0.5). ``up_keeps_channels``: the up-convolution keeps
    the channel count (3D U-Net) instead of halving it (U-Net). ``bottleneck_dropout``: the paper's dropout at the
    end of the contracting path.
    """

    def __init__(self, *, spatial_dims: int, in_channels: int, num_classes: int,
                 features: Sequence[int] = (64, 128, 256, 512, 1024), n_convs: int = 2, kernel_size: int = 3,
                 padding: str = "same", norm: LayerSpec = "batch", act: LayerSpec = "relu",
                 dropout: float | None = None, bottleneck_dropout: float | None = None, block: str = "plain",
                 downsample: str = "pool", upsample: str = "transposed", skip_gate: str | None = None,
                 encoder_mid_ratio: float = 1.0, up_keeps_channels: bool = False, deep_supervision: bool = False):
        super().__init__()
        if padding not in ("same", "valid") or (padding == "valid" and (block != "plain" or downsample != "pool")):
            raise MedsegError(f"padding={padding!r} with block={block!r}, downsample={downsample!r} is not supported",
                              fix='use padding "same", or "valid" with the plain block and pooling')
        if skip_gate not in (None, "attention"):
            raise MedsegError(f"unknown skip_gate {skip_gate!r}", fix='use null or "attention"')
        features = [int(f) for f in features]
        self.spatial_dims, self.padding, self.deep_supervision = spatial_dims, padding, deep_supervision
        self.depth, self.n_convs, self.kernel_size = len(features), n_convs, kernel_size
        self.downsample = downsample
        common = dict(kernel_size=kernel_size, norm=norm, act=act, dropout=dropout)
        self.encoder = nn.ModuleList()
        self.pools = nn.ModuleList()
        channels = in_channels
        for level, width in enumerate(features):
            stride = 2 if (level > 0 and downsample == "strided") else 1
            mid = max(int(width * encoder_mid_ratio), 1) if block == "plain" else None
            self.encoder.append(conv_block(block, spatial_dims, channels, width, n_convs, stride=stride,
                                           padding=padding, mid_channels=mid, **common))
            self.pools.append(max_pool(spatial_dims, 2) if level > 0 and downsample == "pool" else nn.Identity())
            channels = width
        self.bottleneck_drop = nn.Dropout(bottleneck_dropout) if bottleneck_dropout else nn.Identity()
        self.ups, self.gates, self.decoder = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        self.aux_heads = nn.ModuleList()  # deep supervision, coarse -> fine, all decoder levels but the finest
        for level in range(self.depth - 2, -1, -1):
            up_channels = channels if up_keeps_channels else features[level]
            self.ups.append(UpConv(spatial_dims, channels, up_channels, 2, mode=upsample))
            self.gates.append(AttentionGate(spatial_dims, features[level], up_channels, norm=norm)
                              if skip_gate == "attention" else nn.Identity())
            self.decoder.append(conv_block(block, spatial_dims, features[level] + up_channels, features[level],
                                           n_convs, padding=padding, **common))
            if deep_supervision and level > 0:
                self.aux_heads.append(SegHead(spatial_dims, features[level], num_classes))
            channels = features[level]
        self.head = SegHead(spatial_dims, channels, num_classes)

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        """Spatial output size for a spatial input size (identity when padded)."""
        if self.padding == "same":
            return tuple(input_size)
        shrink = self.n_convs * (self.kernel_size - 1)
        sizes = []
        for size in input_size:
            size -= shrink
            for _ in range(self.depth - 1):
                if size <= 0 or size % 2:
                    raise MedsegError(f"input size {tuple(input_size)} does not fit the unpadded U-Net",
                                      fix="use unet_valid_sizes() / model.valid_input_size() to pick one")
                size = size // 2 - shrink
            for _ in range(self.depth - 1):
                size = 2 * size - shrink
            if size <= 0:
                raise MedsegError(f"input size {tuple(input_size)} is too small for the unpadded U-Net",
                                  fix="use model.valid_input_size() to pick one")
            sizes.append(size)
        return tuple(sizes)

    def valid_input_size(self, output_size: Sequence[int]) -> tuple[int, ...]:
        """Overlap-tile input size giving at least ``output_size`` (identity when padded)."""
        if self.padding == "same":
            return tuple(output_size)
        return tuple(unet_valid_sizes(o, self.depth, n_convs=self.n_convs, kernel_size=self.kernel_size)[0]
                     for o in output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.padding == "same":
            check_divisible(x.shape[2:], [2 ** (self.depth - 1)] * (x.ndim - 2), "this U-Net")
        else:
            self.output_size(x.shape[2:])  # raises a MedsegError naming valid_input_size() for a bad tile
        skips = []
        for level, (pool, block) in enumerate(zip(self.pools, self.encoder)):
            x = block(pool(x))
            if level < self.depth - 1:
                skips.append(x)
        x = self.bottleneck_drop(x)
        features = []
        for up, gate, block, skip in zip(self.ups, self.gates, self.decoder, reversed(skips)):
            x = up(x)
            if self.padding == "valid":
                skip = center_crop(skip, x.shape[2:])
            skip = gate(skip, x) if isinstance(gate, AttentionGate) else skip
            x = block(torch.cat([skip, x], dim=1))
            features.append(x)
        if not self.deep_supervision:
            return self.head(x)
        coarse = [head(feature) for head, feature in zip(self.aux_heads, features[:-1])]
        return [self.head(x)] + coarse[::-1]
