"""Parameter-efficient structure added to any medseg network in place: LoRA on the weights of convolutions and
linear layers (the transformer U-Nets' attention and MLP projections among them), and residual bottleneck adapters
(plain, or with a depthwise spatial convolution) on the outputs of spatial convolutions.

Both start as the identity (LoRA's ``B`` and an adapter's up-projection are zero), so a network with them added
computes what it computed before until training moves them. The base weights keep their state-dict names:
LoRA is a ``torch.nn.utils.parametrize`` parametrisation (``W -> W + scale * B @ A``, the name becomes
``....parametrizations.weight.original``) and an adapter is a child module ``adapter`` of the layer it follows,
applied by a forward hook. ``merge_lora`` folds every LoRA into its weight (a plain network again); adapters are
not linear in the input, so they stay.

Why not ``peft``: it targets Hugging Face models and wraps layers in its own classes (renaming every base
weight); plain ``nn.Conv2d``/``nn.Conv3d`` networks need only the ~100 lines here, and the names stay stable.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from medseg.errors import MedsegError

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
STRUCTURES = ("lora", "adapter", "spatial-adapter")


@dataclass
class PeftOptions:
    """``rank``/``alpha``: LoRA's rank and scale (``alpha / rank``); ``reduction``: an adapter's bottleneck is
    ``max(channels // reduction, min_width)`` wide; ``spatial_kernel``: the depthwise kernel of a spatial
    adapter."""

    rank: int = 4
    alpha: float = 8.0
    reduction: int = 4
    min_width: int = 4
    spatial_kernel: int = 3

    def __post_init__(self) -> None:
        for name in ("rank", "reduction", "min_width", "spatial_kernel"):
            if int(getattr(self, name)) < 1:
                raise MedsegError(f"{name} must be at least 1, not {getattr(self, name)}", fix=f"pass a positive {name}")
        if self.spatial_kernel % 2 == 0:
            raise MedsegError(f"spatial_kernel {self.spatial_kernel} is even", fix="use an odd kernel, e.g. 3")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PeftOptions:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


class LowRankDelta(nn.Module):
    """The parametrisation ``W -> W + (alpha / rank) * (B @ A).view(W.shape)`` of a weight ``W (d0, *rest)``:
    ``A (rank, prod(rest))``, ``B (d0, rank)`` (for a convolution ``(out, in, *k)``: a ``k``-kernel convolution to
    ``rank`` channels followed by a 1x1 one, as LoRA's convolution variant)."""

    def __init__(self, shape: torch.Size, rank: int, alpha: float):
        super().__init__()
        self.scale = float(alpha) / rank
        self.lora_a = nn.Parameter(torch.empty(rank, math.prod(shape[1:])))
        self.lora_b = nn.Parameter(torch.zeros(shape[0], rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.lora_b @ self.lora_a).view_as(weight)


class Bottleneck(nn.Module):
    """Residual adapter body ``(B, C, *S) -> (B, C, *S)``: 1x1 down to ``width``, [depthwise ``k`` conv], GELU, 1x1
    up (zero-initialised, so the adapter starts as the identity when added to its input). ``spatial_dims`` 0: a
    token adapter on the last axis of ``(..., C)`` (linear layers)."""

    def __init__(self, spatial_dims: int, channels: int, width: int, spatial_kernel: int | None = None):
        super().__init__()
        self.spatial_dims = spatial_dims
        if spatial_dims == 0:
            self.down, self.up = nn.Linear(channels, width), nn.Linear(width, channels)
            self.spatial = nn.Identity()
        else:
            conv = CONVS[spatial_dims - 1]
            self.down, self.up = conv(channels, width, 1), conv(width, channels, 1)
            self.spatial = (conv(width, width, spatial_kernel, padding=spatial_kernel // 2, groups=width)
                            if spatial_kernel else nn.Identity())
        self.act = nn.GELU()
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.spatial(self.down(x))))


def _apply_adapter(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    """Forward hook: a layer's output plus its adapter of that output."""
    return output + module.adapter(output)


def _spatial_dims(module: nn.Module) -> int:
    for dims, kinds in enumerate(zip(CONVS, TRANSPOSED), start=1):
        if isinstance(module, kinds):
            return dims
    return 0


def _layers(network: nn.Module, skip: set[str]) -> Iterator[tuple[str, nn.Module]]:
    """Convolutions and linear layers by qualified name, not those in ``skip`` (the head, a new stem) nor an
    adapter's own layers."""
    for name, module in network.named_modules():
        if name in skip or ".adapter" in f".{name}" or isinstance(module, LowRankDelta):
            continue
        if isinstance(module, CONVS + TRANSPOSED + (nn.Linear,)):
            yield name, module


def add_lora(network: nn.Module, options: PeftOptions, skip: set[str] = frozenset()) -> list[str]:
    """LoRA on every convolution and linear layer's weight where rank ``r`` makes it smaller than the weight
    (``r * (d0 + prod(rest)) < numel``); returns the layers' names."""
    done = []
    for name, module in list(_layers(network, set(skip))):
        shape = module.weight.shape
        if options.rank * (shape[0] + math.prod(shape[1:])) >= math.prod(shape):
            continue
        parametrize.register_parametrization(module, "weight", LowRankDelta(shape, options.rank, options.alpha))
        done.append(name)
    return done


def add_adapters(network: nn.Module, options: PeftOptions, *, spatial: bool, skip: set[str] = frozenset()
                 ) -> list[str]:
    """A residual bottleneck adapter after every convolution with a kernel larger than 1 (not transposed), and,
    for ``spatial=False``, after every square linear layer (a transformer's attention output and MLP projections);
    returns the layers' names."""
    done = []
    for name, module in list(_layers(network, set(skip))):
        dims = _spatial_dims(module)
        if isinstance(module, TRANSPOSED):
            continue
        if dims and max(module.kernel_size) > 1:
            channels = module.out_channels
        elif not dims and not spatial and module.in_features == module.out_features:
            channels = module.out_features
        else:
            continue
        width = max(channels // options.reduction, options.min_width)
        module.add_module("adapter", Bottleneck(dims, channels, width, options.spatial_kernel if spatial else None))
        module.register_forward_hook(_apply_adapter)
        done.append(name)
    return done


def add_structure(network: nn.Module, structure: str | None, options: PeftOptions, skip: set[str] = frozenset()
                  ) -> list[str]:
    """Add ``structure`` (one of ``STRUCTURES``, or None: nothing) to ``network`` in place; the layers it went to.
    A network on which it finds no layer is a MedsegError."""
    if structure is None:
        return []
    if structure not in STRUCTURES:
        raise MedsegError(f"unknown adaptation structure {structure!r}", fix=f"use one of {', '.join(STRUCTURES)}")
    if structure == "lora":
        layers = add_lora(network, options, skip)
    else:
        layers = add_adapters(network, options, spatial=structure == "spatial-adapter", skip=skip)
    if not layers:
        raise MedsegError(f"the network has no layer that {structure} fits (rank {options.rank})",
                          fix="lower --rank, or use another --method")
    return layers


def merge_lora(network: nn.Module) -> nn.Module:
    """Fold every LoRA into its weight (``W + scale * B @ A``), in place: the plain layers again."""
    for module in list(network.modules()):
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return network


def has_adapters(network: nn.Module) -> bool:
    return any(isinstance(m, Bottleneck) for m in network.modules())
