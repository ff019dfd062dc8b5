"""V-Net (Milletari et al. 2016): residual stages of 5^d convolutions, strided-conv down, transposed-conv up, PReLU."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medseg.nets.blocks import ConvNormAct, LayerSpec, SegHead, act_layer, conv_layer, norm_layer


class ResidualStage(nn.Module):
    """``n`` conv-norm-act units whose output is added to the stage input: ``(B, C, *S) -> (B, C, *S)``."""

    def __init__(self, spatial_dims: int, channels: int, n: int, *, kernel_size: int, norm: LayerSpec,
                 act: LayerSpec, dropout: float | None):
        super().__init__()
        self.body = nn.Sequential(*[ConvNormAct(spatial_dims, channels, channels, kernel_size, norm=norm,
                                                act=act if i < n - 1 else None, dropout=dropout) for i in range(n)])
        self.act = act_layer(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + x)


class VNet(nn.Module):
    """V-Net. ``(B, in_channels, *S) -> (B, num_classes, *S)``, ``S`` a multiple of ``2 ** (len(features) - 1)``.

    ``features``: channels per level (paper 16..256); ``encoder_convs`` / ``decoder_convs``: convs per residual
    stage (paper 1, 2, 3, 3, 3 and 3, 3, 2, 1). The input stage adds the input, repeated over channels, to its conv
    output (a 1x1 projection when ``features[0]`` is not a multiple of ``in_channels``). Decoder stage ``l`` works
    at ``2 * features[l]`` channels (upsampled + skip), as in the paper.
    """

    def __init__(self, *, spatial_dims: int, in_channels: int, num_classes: int,
                 features: Sequence[int] = (16, 32, 64, 128, 256), encoder_convs: Sequence[int] = (1, 2, 3, 3, 3),
                 decoder_convs: Sequence[int] = (3, 3, 2, 1), kernel_size: int = 5, norm: LayerSpec = "batch",
                 act: LayerSpec = "prelu", dropout: float | None = None):
        super().__init__()
        features = [int(f) for f in features]
        depth = len(features)
        encoder_convs, decoder_convs = list(encoder_convs)[:depth], list(decoder_convs)[-(depth - 1):]
        self.repeat = features[0] // in_channels if features[0] % in_channels == 0 else 0
        self.in_conv = ConvNormAct(spatial_dims, in_channels, features[0], kernel_size, norm=norm, act=None)
        self.in_proj = nn.Identity() if self.repeat else conv_layer(spatial_dims, in_channels, features[0], 1)
        self.in_act = act_layer(act)
        self.in_stage = (ResidualStage(spatial_dims, features[0], encoder_convs[0] - 1, kernel_size=kernel_size,
                                       norm=norm, act=act, dropout=dropout)
                         if encoder_convs[0] > 1 else nn.Identity())
        self.downs, self.enc = nn.ModuleList(), nn.ModuleList()
        for level in range(1, depth):
            self.downs.append(ConvNormAct(spatial_dims, features[level - 1], features[level], 2, stride=2,
                                          padding="valid", norm=norm, act=act))
            self.enc.append(ResidualStage(spatial_dims, features[level], encoder_convs[level],
                                          kernel_size=kernel_size, norm=norm, act=act, dropout=dropout))
        self.ups, self.dec = nn.ModuleList(), nn.ModuleList()
        channels = features[-1]
        for i, level in enumerate(range(depth - 2, -1, -1)):
            out = features[level]
            self.ups.append(nn.Sequential(conv_layer(spatial_dims, channels, out, 2, stride=2, transposed=True),
                                          norm_layer(norm, spatial_dims, out), act_layer(act)))
            self.dec.append(ResidualStage(spatial_dims, 2 * out, decoder_convs[i], kernel_size=kernel_size,
                                          norm=norm, act=act, dropout=dropout))
            channels = 2 * out
        self.head = SegHead(spatial_dims, channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x.repeat_interleave(self.repeat, dim=1) if self.repeat else self.in_proj(x)
        x = self.in_stage(self.in_act(self.in_conv(x) + residual))
        skips = [x]
        for down, stage in zip(self.downs, self.enc):
            x = stage(down(x))
            skips.append(x)
        skips.pop()
        for up, stage, skip in zip(self.ups, self.dec, reversed(skips)):
            x = stage(torch.cat([up(x), skip], dim=1))
        return self.head(x)
