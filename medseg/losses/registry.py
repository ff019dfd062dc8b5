"""The loss registry: ``create("dice_ce", include_background=False)``, ``list_losses()``.

Every entry builds an ``nn.Module`` called as ``loss(logits, target, mask=None)``; kwargs that are None are
dropped so the entry's defaults stay in force.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from medseg.errors import MedsegError
from medseg.losses import compound, modules
from medseg.losses.class_weights import Method, class_weights_from_fractions

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str, factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``factory`` under ``name`` (a name may be registered once)."""
    if name in _REGISTRY:
        raise ValueError(f"loss {name!r} is already registered")
    _REGISTRY[name] = factory
    return factory


def list_losses() -> list[str]:
    """The registered loss names, sorted."""
    return sorted(_REGISTRY)


def _lookup(name: str) -> Callable[..., nn.Module]:
    if name not in _REGISTRY:
        raise MedsegError(f"unknown loss {name!r}", fix=f"use one of {', '.join(list_losses())}")
    return _REGISTRY[name]


def loss_class(name: str) -> type[modules.Loss]:
    """The Loss class registered under ``name`` (single losses only, not compounds)."""
    factory = _lookup(name)
    if not (isinstance(factory, type) and issubclass(factory, modules.Loss)):
        raise MedsegError(f"loss {name!r} is a compound, not a single loss",
                          fix="name single losses in weighted_sum, or pass built modules")
    return factory


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build the loss registered under ``name`` with ``kwargs`` (None values dropped)."""
    return _lookup(name)(**{k: v for k, v in kwargs.items() if v is not None})


def weighted_sum(
    terms: Mapping[str, str | nn.Module], weights: Mapping[str, float] | None = None, **options: Any
) -> compound.WeightedSum:
    """A WeightedSum of losses given as modules or registry names (built with the ``options`` they accept).

    ``weighted_sum({"dice": "dice", "bd": "boundary"}, {"dice": 1.0, "bd": 0.1}, include_background=False)``.
    Weights default to 1.
    """
    named = {name: term for name, term in terms.items() if isinstance(term, str)}
    if options and not named:
        raise MedsegError(f"options {sorted(options)} given but every term is a built module",
                          fix="set options when building the modules, or name the terms")
    built = compound.route_options({name: loss_class(key) for name, key in named.items()}, options) if named else {}
    modules = {name: built.get(name, term) for name, term in terms.items()}
    return compound.WeightedSum(modules, weights if weights is not None else {name: 1.0 for name in terms})


def weighted_ce(
    *, class_voxel_fraction: Mapping[str, float], method: Method = "median", **options: Any
) -> modules.Loss:
    """Cross-entropy with class weights from a fingerprint's ``class_voxel_fraction`` ({label: fraction}).

    See :func:`medseg.losses.class_weights_from_fractions` for ``method``; other options as ``ce``.
    """
    weights = class_weights_from_fractions(class_voxel_fraction, method=method)
    return modules.CrossEntropyLoss(class_weight=weights, **options)


for _name, _factory in {
    "ce": modules.CrossEntropyLoss,
    "weighted_ce": weighted_ce,
    "bce": modules.BCELoss,
    "focal": modules.FocalLoss,
    "dice": modules.DiceLoss,
    "jaccard": modules.JaccardLoss,
    "generalized_dice": modules.GeneralizedDiceLoss,
    "tversky": modules.TverskyLoss,
    "focal_tversky": modules.FocalTverskyLoss,
    "log_cosh_dice": modules.LogCoshDiceLoss,
    "exp_log": modules.ExpLogLoss,
    "boundary": modules.BoundaryLoss,
    "hausdorff_dt": modules.HausdorffDTLoss,
    "cldice": modules.ClDiceLoss,
    "dice_ce": compound.dice_ce,
    "nnunet_dice_ce": compound.nnunet_dice_ce,
    "dice_focal": compound.dice_focal,
    "combo": compound.combo,
    "dice_cldice": compound.dice_cldice,
    "weighted_sum": weighted_sum,
}.items():
    register(_name, _factory)
