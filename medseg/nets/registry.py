"""One registry and one factory for every network: ``create(name, spatial_dims, in_channels, num_classes, **cfg)``.

Presets register themselves with ``@register_model(...)`` (see ``presets.py``); tests and ``medseg models`` iterate
over ``list_models()``, so a new preset is tested and listed without touching anything else.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from medseg.errors import MedsegError


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a preset (architecture only; weights metadata lives in a WeightsCard).

    ``deep_supervision``: the design has deep-supervision outputs (accepts ``deep_supervision=True``).
    ``tiny``: a small-width configuration for tests (works for 32^2 and 16^3 inputs). ``exportable``:
    convolutional, exported to ONNX by the tests.
    ``requires``: the optional package the preset needs, if any. ``prompted``: the network takes prompt maps
    beside the image (``forward(image, prompts)``), so it is not an image -> logits network and
    ``list_models()`` leaves it out unless asked. ``fit_plan(patch_size, plan_network) -> options``: the
    preset's options for a plan configuration (its patch and the planned U-Net's arguments), so that ``medseg
    train --network NAME`` builds it for the plan's patch; None: the preset's defaults fit any patch.
    """

    name: str
    builder: Callable[..., nn.Module]
    family: str
    description: str = ""
    dims: tuple[int, ...] = (2, 3)
    deep_supervision: bool = False
    tiny: dict[str, Any] = field(default_factory=dict)
    exportable: bool = True
    requires: str | None = None
    prompted: bool = False
    fit_plan: Callable[[list[int], dict[str, Any]], dict[str, Any]] | None = None


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(*, family: str, description: str = "", dims: tuple[int, ...] = (2, 3),
                   deep_supervision: bool = False, tiny: dict[str, Any] | None = None,
                   exportable: bool = True, requires: str | None = None, prompted: bool = False,
                   fit_plan: Callable[[list[int], dict[str, Any]], dict[str, Any]] | None = None) -> Callable:
    """Decorator: register ``fn(*, spatial_dims, in_channels, num_classes, **cfg) -> nn.Module`` under its name."""

    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in _REGISTRY:
            raise ValueError(f"network {fn.__name__!r} registered twice")
        _REGISTRY[fn.__name__] = ModelInfo(fn.__name__, fn, family, description or (fn.__doc__ or "").split("\n")[0],
                                           tuple(dims), deep_supervision, dict(tiny or {}), exportable,
                                           requires, prompted, fit_plan)
        return fn

    return decorate


def list_models(spatial_dims: int | None = None, family: str | None = None, prompted: bool | None = False
                ) -> list[str]:
    """Registered names (sorted), optionally only those supporting ``spatial_dims`` / of one ``family``;
    ``prompted`` False (default): image -> logits networks only, True: promptable ones only, None: all."""
    return sorted(name for name, info in _REGISTRY.items()
                  if (spatial_dims is None or spatial_dims in info.dims) and (family is None or info.family == family)
                  and (prompted is None or info.prompted == prompted))


def model_info(name: str) -> ModelInfo:
    """The ``ModelInfo`` of ``name``; an unknown name raises a ``MedsegError`` listing the valid ones."""
    if name not in _REGISTRY:
        raise MedsegError(f"unknown network {name!r}", fix=f"use one of: {', '.join(list_models(prompted=None))}")
    return _REGISTRY[name]


def create(name: str, spatial_dims: int, in_channels: int, num_classes: int, **cfg: Any) -> nn.Module:
    """Build network ``name`` for ``(B, in_channels, *spatial)`` inputs and ``(B, num_classes, *spatial)`` logits.

    ``None`` values in ``cfg`` are dropped so the preset's defaults stay in force. The returned module carries
    ``medseg_spec`` (name, dims, channels, classes, cfg): JSON-friendly when cfg is, enough to rebuild it.
    """
    info = model_info(name)
    if spatial_dims not in info.dims:
        raise MedsegError(f"network {name!r} is {' or '.join(f'{d}D' for d in info.dims)} only, "
                          f"got spatial_dims={spatial_dims}")
    cfg = {key: value for key, value in cfg.items() if value is not None}
    model = info.builder(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, **cfg)
    model.medseg_spec = {"name": name, "spatial_dims": spatial_dims, "in_channels": in_channels,
                         "num_classes": num_classes, "cfg": cfg}
    return model


def plan_options(name: str, patch_size: list[int], plan_network: dict[str, Any]) -> dict[str, Any]:
    """Options that fit network ``name`` to a plan configuration (``{}`` when its defaults fit any patch)."""
    info = model_info(name)
    return dict(info.fit_plan(list(patch_size), dict(plan_network))) if info.fit_plan else {}


def build(cls: Callable[..., nn.Module], defaults: dict[str, Any], cfg: dict[str, Any]) -> nn.Module:
    """``cls(**defaults, **cfg)`` for presets; an option ``cls`` does not take raises a ``MedsegError`` naming
    the accepted ones (instead of a bare ``TypeError``)."""
    parameters = inspect.signature(cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        unknown = sorted(set(cfg) - set(parameters))
        if unknown:
            allowed = sorted(set(parameters) - {"spatial_dims", "in_channels", "num_classes"})
            raise MedsegError(f"{cls.__name__} has no option {', '.join(unknown)}",
                              fix=f"options are: {', '.join(allowed)}")
    return cls(**{**defaults, **cfg})
