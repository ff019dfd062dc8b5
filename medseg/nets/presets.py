"""Every registered network: small preset functions over the family classes (variants are data, not subclasses).

Each preset takes ``spatial_dims, in_channels, num_classes`` and family options (``**cfg`` overrides the preset's
values); ``tiny`` in the decorator is the small-width configuration the tests and ``--tiny`` listings use.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from medseg.nets.registry import register_model

_TINY_UNET = {"features": (4, 8, 16)}


def _merge(defaults: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    return {**defaults, **cfg}


# ---------------------------------------------------------------- U-Net family (medseg/nets/unet.py)
@register_model(family="unet", tiny=_TINY_UNET, divisor=16)
def unet(**cfg: Any) -> nn.Module:
    """U-Net (Ronneberger 2015), padded: 64..1024 features, batch norm, ReLU, transposed-conv upsampling."""
    from medseg.nets.unet import UNet

    return UNet(**cfg)


@register_model(family="unet", tiny={**_TINY_UNET}, exportable=True)
def unet_valid(**cfg: Any) -> nn.Module:
    """U-Net as published: unpadded (valid) convs, no norm, dropout 0.5 at the bottleneck; output < input."""
    from medseg.nets.unet import UNet

    return UNet(**_merge({"padding": "valid", "norm": None, "bottleneck_dropout": 0.5}, cfg))


@register_model(family="unet", tiny={"features": (4, 8, 16)}, divisor=8)
def unet3d_cicek(**cfg: Any) -> nn.Module:
    """3D U-Net (Cicek 2016): 32|64 .. 256|512 encoder, up-conv keeps channels, batch norm (2D works too)."""
    from medseg.nets.unet import UNet

    return UNet(**_merge({"features": (64, 128, 256, 512), "encoder_mid_ratio": 0.5, "up_keeps_channels": True},
                         cfg))


@register_model(family="unet", tiny=_TINY_UNET, divisor=16)
def resunet(**cfg: Any) -> nn.Module:
    """Residual U-Net: residual units, strided-conv downsampling, instance norm."""
    from medseg.nets.unet import UNet

    return UNet(**_merge({"features": (32, 64, 128, 256, 512), "block": "residual", "downsample": "strided",
                          "norm": "instance"}, cfg))


@register_model(family="unet", tiny=_TINY_UNET, divisor=16, deep_supervision=True)
def attention_unet(**cfg: Any) -> nn.Module:
    """Attention U-Net (Oktay 2018): additive attention gates on the skips, deep supervision available."""
    from medseg.nets.unet import UNet

    return UNet(**_merge({"features": (32, 64, 128, 256, 512), "skip_gate": "attention"}, cfg))
