"""The plan-driven U-Net the pipeline generates (as nnU-Net's PlainConvUNet / ResidualEncoderUNet).

Topology comes from the plan as JSON-friendly data: features, kernel sizes and strides per stage (anisotropic
allowed, e.g. ``[1, 2, 2]``), convolutions per stage, norm, and a plain or residual encoder. ``config`` returns
the constructor kwargs, ``PlanUNet.from_config(config)`` rebuilds the network from them (a model folder needs
nothing else), and ``estimate_activation_memory(patch_size)`` is what the planner asks for.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import torch
from torch import nn

from medseg.errors import MedsegError
from medseg.nets.blocks import (ConvNormAct, LayerSpec, ResidualBlock, SegHead, StackedConvs, UpConv, as_tuple,
                                check_divisible)

_DEFAULT_NORM = ("instance", {"affine": True})
_DEFAULT_ACT = ("leakyrelu", {"negative_slope": 0.01, "inplace": True})


def _per_stage(value: int | Sequence[int], n: int, name: str) -> list[int]:
    values = [int(value)] * n if isinstance(value, int) else [int(v) for v in value]
    if len(values) != n:
        raise MedsegError(f"{name} has {len(values)} entries for {n} stages", fix=f"give one {name} per stage")
    return values


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


class PlanUNet(nn.Module):
    """U-Net with per-stage topology from a plan.

    Input ``(B, in_channels, *S)`` with ``S[d]`` a multiple of the product of ``strides[:, d]``; output logits
    ``(B, num_classes, *S)``. With ``deep_supervision=True`` the output is always a list, fine -> coarse: entry
    ``i`` has the resolution of encoder stage ``i``, i.e. ``S / prod(strides[:i + 1])`` (``len(features) - 1``
    entries). Set ``model.deep_supervision = False`` to get only the full-resolution tensor (inference).

    ``strides[0]`` is usually 1 (the first stage keeps the input resolution). ``encoder="residual"`` uses
    ``n_conv_per_stage[s]`` residual blocks (two convs each) after a stem conv, as nnU-Net's ResEnc; the decoder is
    plain in both variants. ``residual_skip``: the skip of a residual block that changes size or width, ``"conv"``
    (a strided 1x1 conv + norm) or ``"pool"`` (average pooling by the stride, then a 1x1 conv + norm where the width
    changes: ResNet-D, as nnU-Net ResEnc's ``BasicBlockD``; what ``medseg import nnunet`` builds).
    """

    def __init__(self, *, spatial_dims: int, in_channels: int, num_classes: int,
                 features_per_stage: Sequence[int] = (32, 64, 128, 256, 320),
                 kernel_sizes: Sequence[int | Sequence[int]] = (3, 3, 3, 3, 3),
                 strides: Sequence[int | Sequence[int]] = (1, 2, 2, 2, 2),
                 n_conv_per_stage: int | Sequence[int] = 2, n_conv_per_stage_decoder: int | Sequence[int] = 2,
                 encoder: str = "plain", norm: LayerSpec = _DEFAULT_NORM, act: LayerSpec = _DEFAULT_ACT,
                 dropout: float | None = None, conv_bias: bool = True, deep_supervision: bool = False,
                 residual_skip: str = "conv"):
        super().__init__()
        n = len(features_per_stage)
        if len(kernel_sizes) != n or len(strides) != n:
            raise MedsegError(f"features_per_stage, kernel_sizes and strides need one entry per stage "
                              f"(got {n}, {len(kernel_sizes)}, {len(strides)})")
        if encoder not in ("plain", "residual"):
            raise MedsegError(f"unknown encoder {encoder!r}", fix='use "plain" or "residual"')
        if residual_skip not in ("conv", "pool"):
            raise MedsegError(f"unknown residual_skip {residual_skip!r}", fix='use "conv" or "pool"')
        self._config = _jsonable(dict(
            spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes,
            features_per_stage=list(features_per_stage), kernel_sizes=list(kernel_sizes), strides=list(strides),
            n_conv_per_stage=n_conv_per_stage, n_conv_per_stage_decoder=n_conv_per_stage_decoder, encoder=encoder,
            norm=norm, act=act, dropout=dropout, conv_bias=conv_bias, deep_supervision=deep_supervision))
        if residual_skip != "conv":  # only when set: the configs (and model folders) of earlier networks stay as they were
            self._config["residual_skip"] = residual_skip
        features = [int(f) for f in features_per_stage]
        kernels = [as_tuple(k, spatial_dims) for k in kernel_sizes]
        self.strides = [as_tuple(s, spatial_dims) for s in strides]
        n_enc = _per_stage(n_conv_per_stage, n, "n_conv_per_stage")
        n_dec = _per_stage(n_conv_per_stage_decoder, n - 1, "n_conv_per_stage_decoder")
        self.spatial_dims, self.deep_supervision = spatial_dims, deep_supervision
        common = dict(norm=norm, act=act, dropout=dropout, bias=conv_bias)

        self.stem = (ConvNormAct(spatial_dims, in_channels, features[0], kernels[0], **common)
                     if encoder == "residual" else nn.Identity())
        self.encoder = nn.ModuleList()
        channels = features[0] if encoder == "residual" else in_channels
        for s in range(n):
            if encoder == "plain":
                stage = StackedConvs(spatial_dims, channels, features[s], n_enc[s], kernel_size=kernels[s],
                                     stride=self.strides[s], **common)
            else:
                stage = nn.Sequential(*[
                    ResidualBlock(spatial_dims, channels if b == 0 else features[s], features[s], 2,
                                  kernel_size=kernels[s], stride=self.strides[s] if b == 0 else 1,
                                  pool_skip=residual_skip == "pool", **common)
                    for b in range(n_enc[s])])
            self.encoder.append(stage)
            channels = features[s]

        self.ups, self.decoder, self.heads = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for s in range(n - 2, -1, -1):  # coarse -> fine
            self.ups.append(UpConv(spatial_dims, features[s + 1], features[s], self.strides[s + 1], bias=conv_bias))
            self.decoder.append(StackedConvs(spatial_dims, 2 * features[s], features[s], n_dec[s],
                                             kernel_size=kernels[s], **common))
            if deep_supervision or s == 0:
                self.heads.append(SegHead(spatial_dims, features[s], num_classes))

    @property
    def config(self) -> dict[str, Any]:
        """The constructor kwargs as JSON-friendly data (lists, dicts, numbers, strings)."""
        return copy.deepcopy(self._config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "PlanUNet":
        """Rebuild from ``config`` (e.g. read from a model folder's JSON); lists stand for tuples."""
        config = dict(config)
        for key in ("norm", "act"):
            if isinstance(config.get(key), list):
                config[key] = tuple(config[key])
        return cls(**config)

    def divisor(self) -> tuple[int, ...]:
        """Each spatial input size must be a multiple of this (product of the strides per axis)."""
        return tuple([math.prod([s[d] for s in self.strides]) for d in range(self.spatial_dims)])  # lists: compile

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        features, outputs = self.decode(x)
        if self.deep_supervision:
            return outputs[::-1]
        return self.heads[-1](features)

    def decode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The finest decoder features ``(B, features_per_stage[0], *S)`` of ``x`` ``(B, in_channels, *S)``, and
        (with ``deep_supervision``) the heads' outputs coarse -> fine; what a head of another kind (the
        probabilistic U-Net's latent combination) reads."""
        check_divisible(x.shape[2:], self.divisor(), "this plan U-Net")
        x = self.stem(x)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        skips.pop()
        outputs = []
        n_heads = len(self.heads)
        for i, (up, block, skip) in enumerate(zip(self.ups, self.decoder, reversed(skips))):
            x = block(torch.cat([skip, up(x)], dim=1))
            head_index = i - (len(self.ups) - n_heads)
            if self.deep_supervision and head_index >= 0:
                outputs.append(self.heads[head_index](x))
        return x, outputs

    def estimate_activation_memory(self, patch_size: Sequence[int], batch_size: int = 1,
                                   dtype: torch.dtype = torch.float32) -> int:
        """Bytes of the tensors a training step keeps for backward (plus the outputs), for one batch of patches:
        :func:`medseg.nets.memory.training_activation_bytes` on a shape-only copy built on the meta device."""
        from medseg.nets.memory import training_activation_bytes

        with torch.device("meta"):
            shadow = PlanUNet.from_config(self.config)
        shape = (batch_size, self._config["in_channels"], *[int(p) for p in patch_size])
        return training_activation_bytes(shadow, shape, dtype)
