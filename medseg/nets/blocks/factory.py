"""Dimension-generic layer factory: conv, norm, activation, dropout and pooling from JSON-friendly specs.

A spec is a name, ``(name, {options})`` or ``None`` (no layer), e.g. ``"instance"``, ``("group", {"num_groups": 8})``,
``("leakyrelu", {"negative_slope": 0.01})``. Together with ``spatial_dims`` (2 or 3) a spec picks the layer, so every
network has one code path for 2D and 3D.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import math

from torch import nn

from medseg.errors import MedsegError

LayerSpec = Union[str, tuple, list, None]
IntOrSeq = Union[int, Sequence[int]]


def split_spec(spec: LayerSpec) -> tuple[str | None, dict[str, Any]]:
    """``"name"`` / ``("name", {...})`` / ``None`` -> ``(lower-case name or None, options dict)``."""
    if spec is None:
        return None, {}
    if isinstance(spec, str):
        return spec.lower(), {}
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], dict):
        return spec[0].lower(), dict(spec[1])
    raise MedsegError(f"layer spec {spec!r} is not understood",
                      fix='use a name such as "instance" or a pair such as ["group", {"num_groups": 8}]')


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in (1, 2, 3):
        raise MedsegError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")


def as_tuple(value: IntOrSeq, spatial_dims: int) -> tuple[int, ...]:
    """An int or a per-axis sequence -> a tuple of ``spatial_dims`` ints."""
    if isinstance(value, int):
        return (value,) * spatial_dims
    value = tuple(int(v) for v in value)
    if len(value) != spatial_dims:
        raise MedsegError(f"expected {spatial_dims} values (one per spatial axis), got {value}")
    return value


def check_divisible(spatial: Sequence[int], divisor: Sequence[int], network: str) -> None:
    """A ``MedsegError`` (instead of a shape mismatch deep inside) when an input size is not a multiple of the
    network's total downsampling."""
    if any([s % d != 0 for s, d in zip(spatial, divisor)]):  # a list, not a generator: torch.compile traces it
        raise MedsegError(f"{network} needs spatial sizes that are multiples of {tuple(divisor)}, got {tuple(spatial)}",
                          fix="pad or crop the input to such a size (the sliding-window predictor does this)")


def same_padding(kernel_size: IntOrSeq, spatial_dims: int) -> tuple[int, ...]:
    """Padding that keeps the size for an odd kernel at stride 1."""
    return tuple((k - 1) // 2 for k in as_tuple(kernel_size, spatial_dims))


def conv_layer(spatial_dims: int, in_channels: int, out_channels: int, kernel_size: IntOrSeq = 3, *,
               stride: IntOrSeq = 1, padding: IntOrSeq | str = "same", bias: bool = True, groups: int = 1,
               transposed: bool = False) -> nn.Module:
    """``ConvNd`` (or ``ConvTransposeNd``); ``padding="same"`` pads ``(k-1)//2`` (also at stride > 1), ``"valid"`` 0."""
    _check_dims(spatial_dims)
    kernel = as_tuple(kernel_size, spatial_dims)
    if transposed:
        cls = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[spatial_dims - 1]
        return cls(in_channels, out_channels, kernel, stride=as_tuple(stride, spatial_dims), bias=bias)
    if padding == "same":
        pad = same_padding(kernel, spatial_dims)
    elif padding == "valid":
        pad = (0,) * spatial_dims
    else:
        pad = as_tuple(padding, spatial_dims)  # type: ignore[arg-type]
    cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[spatial_dims - 1]
    return cls(in_channels, out_channels, kernel, stride=as_tuple(stride, spatial_dims), padding=pad, bias=bias,
               groups=groups)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of ``(B, C, *spatial)`` (as in ConvNeXt), any number of spatial axes."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x):
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


def norm_layer(spec: LayerSpec, spatial_dims: int, channels: int) -> nn.Module:
    """Normalisation for ``(B, channels, *spatial)``: batch, instance, group, layer (channel-wise) or none.

    ``instance`` defaults to ``affine=True`` (as nnU-Net); ``group`` defaults to 8 groups, reduced to a divisor of
    ``channels`` when 8 does not divide it.
    """
    _check_dims(spatial_dims)
    name, options = split_spec(spec)
    if name in (None, "none", "identity"):
        return nn.Identity()
    if name in ("batch", "batchnorm"):
        return (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[spatial_dims - 1](channels, **options)
    if name in ("instance", "instancenorm"):
        options.setdefault("affine", True)
        return (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)[spatial_dims - 1](channels, **options)
    if name in ("group", "groupnorm"):
        groups = math.gcd(int(options.pop("num_groups", 8)), channels)
        return nn.GroupNorm(groups, channels, **options)
    if name in ("layer", "layernorm"):
        return ChannelLayerNorm(channels, **options)
    raise MedsegError(f"unknown norm {name!r}", fix="use one of batch, instance, group, layer, or null")


_ACTIVATIONS = {
    "relu": nn.ReLU, "leakyrelu": nn.LeakyReLU, "prelu": nn.PReLU, "elu": nn.ELU, "gelu": nn.GELU,
    "silu": nn.SiLU, "swish": nn.SiLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
}


def act_layer(spec: LayerSpec) -> nn.Module:
    """Activation from a spec; ``leakyrelu`` defaults to slope 0.01 as nnU-Net."""
    name, options = split_spec(spec)
    if name in (None, "none", "identity"):
        return nn.Identity()
    if name not in _ACTIVATIONS:
        raise MedsegError(f"unknown activation {name!r}", fix=f"use one of {', '.join(sorted(_ACTIVATIONS))}")
    return _ACTIVATIONS[name](**options)


def dropout_layer(p: float | None, spatial_dims: int) -> nn.Module:
    """Channel dropout (``DropoutNd``) with probability ``p``; identity for ``None``/0."""
    _check_dims(spatial_dims)
    if not p:
        return nn.Identity()
    return (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)[spatial_dims - 1](float(p))


def max_pool(spatial_dims: int, kernel_size: IntOrSeq = 2) -> nn.Module:
    _check_dims(spatial_dims)
    kernel = as_tuple(kernel_size, spatial_dims)
    return (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[spatial_dims - 1](kernel, stride=kernel)
