"""TransUNet (Chen et al. 2021): a hybrid CNN + ViT encoder (ViT on the 1/16 CNN feature map) and a cascaded
upsampling (CUP) decoder with CNN skips."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medseg.nets.blocks import ConvNormAct, LayerSpec, ResidualBlock, SegHead, StackedConvs, UpConv, as_tuple
from medseg.nets.blocks.transformer import ViT, tokens_to_map


class TransUNet(nn.Module):
    """TransUNet. ``(B, in_channels, *S) -> (B, num_classes, *S)``, ``S`` a multiple of 16.

    CNN: a stride-2 stem (``cnn_features[0]``, skip at S/2) and three stride-2 stages of basic residual blocks
    (ResNet-18-like in place of the paper's ResNet-50; skips at S/4, S/8; the last, at S/16, feeds the ViT as 1x1
    patches). ViT: ``layers`` blocks of width ``hidden``. Decoder: four
    x2 upsampling blocks of widths ``decoder_features`` with skips at S/8, S/4, S/2 and none at S.
    ``img_size`` sets the resolution of the learned position embedding (interpolated for other sizes).
    """

    def __init__(self, *, spatial_dims: int, in_channels: int, num_classes: int, img_size: int | Sequence[int] = 224,
                 cnn_features: Sequence[int] = (64, 128, 256, 512), cnn_blocks: Sequence[int] = (2, 2, 2),
                 hidden: int = 768, layers: int = 12, heads: int = 12, mlp_ratio: float = 4.0, dropout: float = 0.1,
                 decoder_features: Sequence[int] = (256, 128, 64, 16), norm: LayerSpec = "batch",
                 act: LayerSpec = "relu"):
        super().__init__()
        block = dict(norm=norm, act=act)
        c = [int(f) for f in cnn_features]
        self.stem = ConvNormAct(spatial_dims, in_channels, c[0], 7, stride=2, **block)
        self.stages = nn.ModuleList()
        for i in range(3):
            self.stages.append(nn.Sequential(*[
                ResidualBlock(spatial_dims, c[i] if b == 0 else c[i + 1], c[i + 1], stride=2 if b == 0 else 1,
                              **block) for b in range(cnn_blocks[i])]))
        grid = [s // 16 for s in as_tuple(img_size, spatial_dims)]  # the ViT sees the S/16 CNN map as 1x1 patches
        self.vit = ViT(spatial_dims=spatial_dims, in_channels=c[3], img_size=grid, patch_size=1, hidden=hidden,
                       layers=layers, heads=heads, mlp_ratio=mlp_ratio, dropout=dropout)
        self.bridge = ConvNormAct(spatial_dims, hidden, 512 if hidden >= 512 else hidden, 3, **block)
        skip_widths = [c[2], c[1], c[0], 0]  # S/8, S/4, S/2, S
        channels = self.bridge.conv.out_channels
        self.ups, self.decoder = nn.ModuleList(), nn.ModuleList()
        for width, skip in zip(decoder_features, skip_widths):
            self.ups.append(UpConv(spatial_dims, channels, channels, 2, mode="interpolate"))
            self.decoder.append(StackedConvs(spatial_dims, channels + skip, width, 2, **block))
            channels = width
        self.head = SegHead(spatial_dims, channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        skips = [x]
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        states, grid = self.vit(x)
        y = self.bridge(tokens_to_map(states[-1], grid))
        skips = [skips[2], skips[1], skips[0], None]
        for up, block, skip in zip(self.ups, self.decoder, skips):
            y = up(y)
            y = block(y if skip is None else torch.cat([y, skip], dim=1))
        return self.head(y)
