"""Plumbing shared by every loss: activation, target encoding, ignore masks, class selection and reduction.

Shapes: logits ``(B, C, *spatial)``; targets either an index map ``(B, 1, *spatial)`` (integer labels, or
``{0, 1}`` when ``C == 1``) or one-hot / multi-hot / soft ``(B, C, *spatial)``; masks ``(B, 1, *spatial)`` with
1 where a voxel counts and 0 where it is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from medseg.errors import MedsegError

Activation = Literal["softmax", "sigmoid"]
Reduction = Literal["mean", "sum", "none"]
ClassWeight = Sequence[float] | Tensor | None

ACTIVATIONS = ("softmax", "sigmoid")
REDUCTIONS = ("mean", "sum", "none")


@dataclass(frozen=True)
class Prepared:
    """Loss inputs after activation, target encoding, background selection and masking.

    probs: ``(B, C', *spatial)`` probabilities, 0 at masked voxels. target: ``(B, C', *spatial)`` float,
    0 at masked voxels. mask: ``(B, 1, *spatial)`` float or None when every voxel counts. ``C'`` is ``C`` or
    ``C - 1`` when the background channel is dropped.
    """

    probs: Tensor
    target: Tensor
    mask: Tensor | None


def check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    """Raise a MedsegError when ``value`` is not one of ``allowed``."""
    if value not in allowed:
        raise MedsegError(f"{name}={value!r} is not valid", fix=f"use one of {', '.join(map(repr, allowed))}")


def activate(logits: Tensor, activation: Activation) -> Tensor:
    """Probabilities ``(B, C, *spatial)`` from logits: softmax over channels, or a sigmoid per channel."""
    check_choice("activation", activation, ACTIVATIONS)
    if activation == "sigmoid":
        return torch.sigmoid(logits)
    if logits.shape[1] < 2:
        raise MedsegError("softmax over a single channel is constant 1", fix="use activation='sigmoid' when C == 1")
    return torch.softmax(logits, dim=1)


def _check_shapes(logits: Tensor, target: Tensor) -> None:
    if logits.ndim not in (4, 5):
        raise MedsegError(f"logits must be (B, C, Y, X) or (B, C, Z, Y, X), got shape {tuple(logits.shape)}")
    if target.ndim != logits.ndim or target.shape[0] != logits.shape[0] or target.shape[2:] != logits.shape[2:]:
        raise MedsegError(
            f"target shape {tuple(target.shape)} does not fit logits shape {tuple(logits.shape)}",
            fix="give targets as (B, 1, *spatial) index maps or (B, C, *spatial) one-hot",
        )
    if target.shape[1] not in (1, logits.shape[1]):
        raise MedsegError(
            f"target has {target.shape[1]} channels, logits {logits.shape[1]}",
            fix="give targets as (B, 1, *spatial) index maps or (B, C, *spatial) one-hot",
        )


def encode_target(
    target: Tensor, num_classes: int, *, ignore_index: int | None = None, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor | None]:
    """One-hot target ``(B, C, *spatial)`` and the ignore mask ``(B, 1, *spatial)`` (None if nothing is ignored).

    An index map ``(B, 1, *spatial)`` is one-hot encoded; voxels equal to ``ignore_index`` get an all-zero row
    and mask 0. With ``C == 1`` the index map already is the foreground channel. A ``(B, C, *spatial)`` target
    is taken as one-hot / multi-hot / soft labels as given (``ignore_index`` does not apply: pass ``mask``).
    """
    if target.shape[1] != 1 or num_classes == 1:
        if num_classes == 1 and ignore_index is not None:
            valid = target != ignore_index
            return torch.where(valid, target, 0).to(dtype), valid.to(dtype)
        return target.to(dtype), None
    labels = target.long()
    valid = None
    if ignore_index is not None:
        keep = labels != ignore_index
        valid = keep.to(dtype)
        labels = torch.where(keep, labels, 0)
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        bad = sorted(set(labels[(labels < 0) | (labels >= num_classes)].unique().tolist()))[:5]
        raise MedsegError(
            f"target holds label(s) {bad} outside 0..{num_classes - 1}",
            fix="set ignore_index for the ignore label, or give the network one output channel per class",
        )
    onehot = torch.zeros((labels.shape[0], num_classes, *labels.shape[2:]), dtype=dtype, device=labels.device)
    onehot.scatter_(1, labels, 1.0)
    if valid is not None:
        onehot = onehot * valid
    return onehot, valid


def combine_masks(first: Tensor | None, second: Tensor | None) -> Tensor | None:
    """Product of two optional masks ``(B, 1, *spatial)``."""
    if first is None:
        return second
    if second is None:
        return first
    return first * second


def check_mask(mask: Tensor | None, logits: Tensor) -> Tensor | None:
    """Validate a user mask against logits and return it as a float ``(B, 1, *spatial)`` tensor."""
    if mask is None:
        return None
    if mask.ndim != logits.ndim or mask.shape[1] != 1 or mask.shape[2:] != logits.shape[2:]:
        raise MedsegError(f"mask shape {tuple(mask.shape)} does not fit logits shape {tuple(logits.shape)}",
                          fix="give the mask as (B, 1, *spatial) with 1 where voxels count")
    return mask.to(logits.dtype)


def drop_background(x: Tensor, include_background: bool) -> Tensor:
    """``x[:, 1:]`` when the background channel is excluded (only meaningful with more than one channel)."""
    return x if include_background or x.shape[1] == 1 else x[:, 1:]


def encode(
    logits: Tensor, target: Tensor, *, ignore_index: int | None, mask: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """Check shapes and return the float one-hot target ``(B, C, *spatial)`` and the combined mask."""
    _check_shapes(logits, target)
    onehot, valid = encode_target(target, logits.shape[1], ignore_index=ignore_index, dtype=logits.dtype)
    return onehot, combine_masks(valid, check_mask(mask, logits))


def prepare(
    logits: Tensor,
    target: Tensor,
    *,
    activation: Activation,
    include_background: bool,
    ignore_index: int | None,
    mask: Tensor | None,
) -> Prepared:
    """Activate, encode, select classes and mask: the common first step of every region loss."""
    onehot, mask = encode(logits, target, ignore_index=ignore_index, mask=mask)
    probs = activate(logits, activation)
    probs, onehot = drop_background(probs, include_background), drop_background(onehot, include_background)
    if mask is not None:
        probs, onehot = probs * mask, onehot * mask
    return Prepared(probs, onehot, mask)


def class_weights(
    class_weight: ClassWeight, num_classes: int, include_background: bool, like: Tensor
) -> Tensor | None:
    """Per-channel weights ``(C',)`` on ``like``'s device and dtype, given one weight per logit channel ``C``."""
    if class_weight is None:
        return None
    weight = torch.as_tensor(class_weight, dtype=like.dtype, device=like.device).reshape(-1)
    if weight.numel() != num_classes:
        raise MedsegError(f"class_weight has {weight.numel()} values for {num_classes} channels",
                          fix="give one weight per logit channel, background included")
    if bool((weight < 0).any()):
        raise MedsegError(f"class_weight has negative values: {weight.tolist()}", fix="use weights >= 0")
    return drop_background(weight[None], include_background)[0]


def spatial_sum(x: Tensor, batch: bool = False) -> Tensor:
    """Sum over the spatial axes of ``(B, C, *spatial)`` -> ``(B, C)``; with ``batch`` also over B -> ``(1, C)``."""
    total = x.sum(dim=tuple(range(2, x.ndim)))
    return total.sum(dim=0, keepdim=True) if batch else total


def reduce(values: Tensor, reduction: Reduction, weight: Tensor | None = None) -> Tensor:
    """Weight the channel axis of ``(B, C', ...)`` values, then take the mean or the sum, or keep them."""
    check_choice("reduction", reduction, REDUCTIONS)
    if weight is not None:
        values = values * weight.view(1, -1, *([1] * (values.ndim - 2)))
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def reduce_voxels(values: Tensor, mask: Tensor | None, reduction: Reduction, normaliser: Tensor | None = None) -> Tensor:
    """Reduce a per-voxel loss map ``(B, K, *spatial)``: masked voxels count for nothing.

    ``mean`` divides the sum by ``normaliser`` when given, else by the number of counted elements
    (``K`` times the counted voxels); ``sum`` adds everything; ``none`` returns the masked map.
    """
    check_choice("reduction", reduction, REDUCTIONS)
    if mask is not None:
        values = values * mask
    if reduction == "none":
        return values
    if reduction == "sum":
        return values.sum()
    if normaliser is None:
        normaliser = values.new_tensor(float(values.numel())) if mask is None else mask.sum() * values.shape[1]
    return values.sum() / normaliser.clamp_min(torch.finfo(values.dtype).eps)
