"""U-Net with a timm 2D encoder (optional extra ``medseg[timm]``), randomly initialised unless the user passes a
weights file (safetensors, or a tensor-only ``.pt``/``.pth`` read with ``weights_only=True``; never unpickled)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from medseg.errors import MedsegError
from medseg.nets.blocks import LayerSpec, SegHead, StackedConvs, UpConv


def import_timm():
    """``import timm``, or a ``MedsegError`` saying how to get a working one."""
    try:
        import timm
    except Exception as error:  # ImportError, or timm failing on a missing/broken torchvision
        raise MedsegError(f"the timm encoders need the timm package, which does not import here ({error})",
                          fix="pip install 'medseg[timm]' (timm needs a torchvision matching your torch)") from None
    return timm


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load a state dict from ``path`` into ``encoder``; keys the encoder lacks (a classifier) are ignored, but
    every encoder tensor must be present."""
    path = Path(path)
    if not path.is_file():
        raise MedsegError("weights file not found", path=path, fix="pass the path of a .safetensors or .pt file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise MedsegError(f"cannot read weights ({error})", path=path,
                          fix="use a safetensors file or a tensor-only state dict") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    missing = encoder.load_state_dict(state, strict=False).missing_keys
    if missing:
        raise MedsegError(f"weights lack {len(missing)} encoder tensors (first: {missing[0]})", path=path,
                          fix="pass weights of the same timm architecture")


class TimmUNet(nn.Module):
    """U-Net decoder over a timm ``features_only`` encoder (2D only).

    ``(B, in_channels, Y, X) -> (B, num_classes, Y, X)``, Y and X multiples of the encoder's largest reduction
    (32 for most). Decoder stage ``i`` upsamples to the next-finer encoder feature, concatenates it and applies two
    conv-norm-act units of ``decoder_features[i]`` channels; a last stage returns to the input resolution.
    """

    def __init__(self, *, spatial_dims: int, in_channels: int, num_classes: int, encoder: str = "resnet34",
                 weights: str | None = None, decoder_features: Sequence[int] = (256, 128, 64, 32, 16),
                 norm: LayerSpec = "batch", act: LayerSpec = "relu"):
        super().__init__()
        if spatial_dims != 2:
            raise MedsegError(f"timm encoders are 2D, got spatial_dims={spatial_dims}")
        timm = import_timm()
        self.encoder = timm.create_model(encoder, features_only=True, pretrained=False, in_chans=in_channels)
        if weights is not None:
            load_encoder_weights(self.encoder, weights)
        channels = list(self.encoder.feature_info.channels())
        self.reductions = list(self.encoder.feature_info.reduction())
        targets = self.reductions[-2::-1] + [1]  # finer reductions to reach, ending at the input resolution
        skips = channels[-2::-1] + [0]
        self.ups, self.blocks = nn.ModuleList(), nn.ModuleList()
        current, reduction = channels[-1], self.reductions[-1]
        for width, target, skip in zip(decoder_features, targets, skips):
            self.ups.append(UpConv(2, current, current, reduction // target, mode="interpolate"))
            self.blocks.append(StackedConvs(2, current + skip, width, 2, norm=norm, act=act))
            current, reduction = width, target
        self.head = SegHead(2, current, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        y = features[-1]
        skips = features[-2::-1] + [None]
        for up, block, skip in zip(self.ups, self.blocks, skips):
            y = up(y)
            y = block(y if skip is None else torch.cat([y, skip], dim=1))
        return self.head(y)
