"""U-Mamba-style network (Ma et al. 2024, "U-Mamba_Enc"): the plan-driven residual-encoder U-Net with a
state-space (Mamba-2 style, pure PyTorch) layer after every encoder stage, so long-range context reaches the
skips. Runs on CPU; no CUDA extension."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from medseg.nets.blocks.ssm import SSMLayer
from medseg.nets.plan_unet import PlanUNet
from medseg.nets.registry import build


class UMamba(nn.Module):
    """U-Mamba. ``(B, in_channels, *S) -> (B, num_classes, *S)``; with ``deep_supervision=True`` always a list,
    fine -> coarse, exactly as ``PlanUNet`` (entry ``i`` at ``S / prod(strides[:i + 1])``).

    ``ssm_stages``: encoder stages followed by an SSM layer (default: all). ``d_state``, ``expand``, ``head_dim``,
    ``chunk``: SSM mixer options. Everything else is passed to ``PlanUNet`` (residual encoder by default).
    """

    def __init__(self, *, spatial_dims: int, in_channels: int, num_classes: int,
                 features_per_stage: Sequence[int] = (32, 64, 128, 256, 320),
                 kernel_sizes: Sequence[Any] = (3, 3, 3, 3, 3), strides: Sequence[Any] = (1, 2, 2, 2, 2),
                 ssm_stages: Sequence[int] | None = None, d_state: int = 16, expand: int = 2, head_dim: int = 16,
                 chunk: int = 64, encoder: str = "residual", deep_supervision: bool = False, **plan: Any):
        super().__init__()
        self.net = build(PlanUNet, dict(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes,
                                        features_per_stage=features_per_stage, kernel_sizes=kernel_sizes,
                                        strides=strides, encoder=encoder, deep_supervision=deep_supervision), plan)
        stages = range(len(features_per_stage)) if ssm_stages is None else ssm_stages
        for s in stages:
            layer = SSMLayer(int(features_per_stage[s]), d_state=d_state, expand=expand, head_dim=head_dim,
                             chunk=chunk)
            self.net.encoder[s] = nn.Sequential(self.net.encoder[s], layer)

    @property
    def deep_supervision(self) -> bool:
        return self.net.deep_supervision

    @deep_supervision.setter
    def deep_supervision(self, value: bool) -> None:
        self.net.deep_supervision = value

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.net(x)
