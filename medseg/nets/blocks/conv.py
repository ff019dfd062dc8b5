"""Convolutional building blocks shared by the U-Net family: conv-norm-act, stacks, residual blocks, gates."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medseg.nets.blocks.factory import (IntOrSeq, LayerSpec, act_layer, as_tuple, conv_layer, dropout_layer,
                                        norm_layer)


class ConvNormAct(nn.Sequential):
    """conv -> dropout -> norm -> activation. ``(B, in, *S) -> (B, out, *S / stride)`` ("same" padding)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: IntOrSeq = 3, *,
                 stride: IntOrSeq = 1, norm: LayerSpec = "instance", act: LayerSpec = "relu",
                 dropout: float | None = None, padding: str = "same", bias: bool = True):
        super().__init__()
        self.conv = conv_layer(spatial_dims, in_channels, out_channels, kernel_size, stride=stride,
                               padding=padding, bias=bias)
        self.drop = dropout_layer(dropout, spatial_dims)
        self.norm = norm_layer(norm, spatial_dims, out_channels)
        self.act = act_layer(act)


class StackedConvs(nn.Sequential):
    """``n`` ConvNormAct units; only the first changes channels and applies ``stride``."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, n: int = 2, *,
                 kernel_size: IntOrSeq = 3, stride: IntOrSeq = 1, norm: LayerSpec = "instance",
                 act: LayerSpec = "relu", dropout: float | None = None, padding: str = "same", bias: bool = True,
                 mid_channels: int | None = None):
        widths = [in_channels] + [mid_channels or out_channels] * (n - 1) + [out_channels]
        super().__init__(*[
            ConvNormAct(spatial_dims, widths[i], widths[i + 1], kernel_size, stride=stride if i == 0 else 1,
                        norm=norm, act=act, dropout=dropout, padding=padding, bias=bias)
            for i in range(n)])


class ResidualBlock(nn.Module):
    """Residual unit: ``n`` conv-norm(-act) on the main path, identity or 1x1 (strided) conv on the skip, act after add.

    ``(B, in, *S) -> (B, out, *S / stride)``. With ``kernel_size`` 5 and PReLU it is V-Net's residual stage.
    ``pool_skip=True`` is ResNet-D's skip (nnU-Net ResEnc's ``BasicBlockD``): average pooling by ``stride`` when it
    downsamples, then a 1x1 conv + norm only when the channels change.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, n: int = 2, *,
                 kernel_size: IntOrSeq = 3, stride: IntOrSeq = 1, norm: LayerSpec = "instance",
                 act: LayerSpec = "relu", dropout: float | None = None, bias: bool = True, pool_skip: bool = False):
        super().__init__()
        units = [ConvNormAct(spatial_dims, in_channels if i == 0 else out_channels, out_channels, kernel_size,
                             stride=stride if i == 0 else 1, norm=norm, act=act if i < n - 1 else None,
                             dropout=dropout, bias=bias) for i in range(n)]
        self.body = nn.Sequential(*units)
        strides = as_tuple(stride, spatial_dims)
        downsamples = any(s != 1 for s in strides)
        if pool_skip:
            pool = ((nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)[spatial_dims - 1](strides, strides)
                    if downsamples else None)
            project = ([conv_layer(spatial_dims, in_channels, out_channels, 1, bias=False),
                        norm_layer(norm, spatial_dims, out_channels)] if in_channels != out_channels else [])
            layers = ([pool] if pool is not None else []) + project
            self.skip = nn.Sequential(*layers) if layers else nn.Identity()
        elif in_channels != out_channels or downsamples:
            self.skip = nn.Sequential(conv_layer(spatial_dims, in_channels, out_channels, 1, stride=stride, bias=False),
                                      norm_layer(norm, spatial_dims, out_channels))
        else:
            self.skip = nn.Identity()
        self.act = act_layer(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


def conv_block(kind: str, spatial_dims: int, in_channels: int, out_channels: int, n: int = 2, **kwargs) -> nn.Module:
    """``kind`` "plain" -> StackedConvs, "residual" -> ResidualBlock (same keyword arguments)."""
    if kind == "plain":
        return StackedConvs(spatial_dims, in_channels, out_channels, n, **kwargs)
    if kind == "residual":
        kwargs.pop("padding", None)
        kwargs.pop("mid_channels", None)
        return ResidualBlock(spatial_dims, in_channels, out_channels, n, **kwargs)
    from medseg.errors import MedsegError

    raise MedsegError(f"unknown block kind {kind!r}", fix='use "plain" or "residual"')


class UpConv(nn.Module):
    """Upsampling by ``scale``: transposed conv (kernel = stride = scale) or interpolation + 1x1 conv.

    ``(B, in, *S) -> (B, out, *S * scale)``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, scale: IntOrSeq = 2, *,
                 mode: str = "transposed", bias: bool = True):
        super().__init__()
        self.scale = as_tuple(scale, spatial_dims)
        self.mode = mode
        if mode == "transposed":
            self.conv = conv_layer(spatial_dims, in_channels, out_channels, self.scale, stride=self.scale,
                                   transposed=True, bias=bias)
        else:
            self.conv = conv_layer(spatial_dims, in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "transposed":
            return self.conv(x)
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[x.ndim - 2]
        return self.conv(nn.functional.interpolate(x, scale_factor=self.scale, mode=mode, align_corners=False))


def center_crop(x: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """Crop the spatial axes of ``(B, C, *S)`` to ``spatial`` around the centre (U-Net's overlap-tile skips)."""
    slices = [slice(None), slice(None)]
    for size, target in zip(x.shape[2:], spatial):
        start = (size - target) // 2
        slices.append(slice(start, start + target))
    return x[tuple(slices)]


class AttentionGate(nn.Module):
    """Additive attention gate of Attention U-Net (Oktay et al. 2018).

    ``skip (B, Cs, *S)`` and ``gating (B, Cg, *S)`` (already upsampled to ``S``) -> ``skip * alpha`` with
    ``alpha (B, 1, *S)`` in (0, 1).
    """

    def __init__(self, spatial_dims: int, skip_channels: int, gating_channels: int, inter_channels: int | None = None,
                 *, norm: LayerSpec = "batch"):
        super().__init__()
        inter = inter_channels or max(skip_channels // 2, 1)
        self.theta = nn.Sequential(conv_layer(spatial_dims, skip_channels, inter, 1, bias=False),
                                   norm_layer(norm, spatial_dims, inter))
        self.phi = nn.Sequential(conv_layer(spatial_dims, gating_channels, inter, 1),
                                 norm_layer(norm, spatial_dims, inter))
        self.psi = nn.Sequential(conv_layer(spatial_dims, inter, 1, 1), norm_layer(norm, spatial_dims, 1),
                                 nn.Sigmoid())

    def forward(self, skip: torch.Tensor, gating: torch.Tensor) -> torch.Tensor:
        alpha = self.psi(torch.relu(self.theta(skip) + self.phi(gating)))
        return skip * alpha


class SegHead(nn.Module):
    """1x1 conv to class logits: ``(B, C, *S) -> (B, num_classes, *S)``."""

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int):
        super().__init__()
        self.conv = conv_layer(spatial_dims, in_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
