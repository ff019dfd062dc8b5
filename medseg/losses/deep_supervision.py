"""Deep supervision: one loss applied to every output level of a network, targets downsampled to each level."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medseg.errors import MedsegError
from medseg.losses.core import check_choice, combine_masks, encode_target

Downsample = Literal["nearest", "pool"]


def level_weights(levels: int, weights: Sequence[float] | None = None, zero_coarsest: bool = False) -> list[float]:
    """Per-level weights, fine to coarse, normalised to sum 1: ``1, 1/2, 1/4, ...`` unless ``weights`` given.

    ``zero_coarsest`` drops the coarsest level as nnU-Net v2 does (when there is more than one level).
    """
    raw = [0.5**i for i in range(levels)] if weights is None else [float(w) for w in weights]
    if len(raw) != levels or any(w < 0 for w in raw):
        raise MedsegError(f"{len(raw)} deep-supervision weights {raw} for {levels} output levels",
                          fix="give one weight >= 0 per level, fine to coarse")
    if zero_coarsest and levels > 1:
        raw[-1] = 0.0
    total = sum(raw)
    if total <= 0:
        raise MedsegError(f"deep-supervision weights {raw} sum to 0", fix="give at least one positive weight")
    return [w / total for w in raw]


def _pool(x: Tensor, size: Sequence[int]) -> Tensor:
    pool = F.adaptive_avg_pool2d if x.ndim == 4 else F.adaptive_avg_pool3d
    return pool(x, tuple(size))


def downsample_target(
    target: Tensor,
    size: Sequence[int],
    num_classes: int,
    *,
    mode: Downsample = "nearest",
    ignore_index: int | None = None,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Target and mask resized to ``size`` (spatial), for a level with ``num_classes`` logit channels.

    ``nearest`` (``nearest-exact``: the fine voxel nearest each coarse voxel's centre) keeps the target's
    encoding (an index map stays an index map, the ignore label with it).
    ``pool`` averages the one-hot target over each coarse voxel, giving soft targets ``(B, C, *size)``; a coarse
    voxel counts when more than half of its fine voxels count (mask and ``ignore_index``), and its soft target
    is the class distribution of those fine voxels.
    Shapes: target ``(B, 1 | C, *spatial)``, mask ``(B, 1, *spatial)``.
    """
    check_choice("downsample", mode, ("nearest", "pool"))
    if tuple(target.shape[2:]) == tuple(size):
        return target, mask
    if mode == "nearest":
        def nearest(x: Tensor) -> Tensor:
            return F.interpolate(x.double(), size=tuple(size), mode="nearest-exact").to(x.dtype)

        return nearest(target), None if mask is None else nearest(mask)
    onehot, valid = encode_target(target, num_classes, ignore_index=ignore_index, dtype=torch.float32)
    valid = combine_masks(valid, None if mask is None else mask.float())
    if valid is None:
        return _pool(onehot, size), None
    onehot = onehot * valid
    share = _pool(valid, size)
    counted = (share > 0.5).float()
    return _pool(onehot, size) / share.clamp_min(1e-6) * counted, counted


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of ``loss`` over the output levels of a deeply supervised network.

    ``forward(logits, target, mask=None, **extra)``: ``logits`` a list of ``(B, C, *spatial_i)`` fine to coarse
    (a single tensor is passed straight to ``loss``), ``target`` ``(B, 1 | C, *spatial_0)`` at full resolution,
    ``mask`` ``(B, 1, *spatial_0)``; ``extra`` keyword arguments (e.g. ``annotated`` of the partial-label loss)
    go to every level unchanged. Weights halve per level and are normalised (:func:`level_weights`); MONAI's
    ``DeepSupervisionLoss`` does not normalise, nnU-Net does and also zeroes the coarsest level
    (``zero_coarsest``). ``ignore_index`` defaults to the wrapped loss's.
    """

    def __init__(
        self,
        loss: nn.Module,
        *,
        weights: Sequence[float] | None = None,
        downsample: Downsample = "nearest",
        zero_coarsest: bool = False,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        check_choice("downsample", downsample, ("nearest", "pool"))
        self.loss = loss
        self.weights = None if weights is None else [float(w) for w in weights]
        self.downsample = downsample
        self.zero_coarsest = zero_coarsest
        self.ignore_index = ignore_index if ignore_index is not None else getattr(loss, "ignore_index", None)

    def forward(
        self, logits: Tensor | Sequence[Tensor], target: Tensor, mask: Tensor | None = None, **extra: Any
    ) -> Tensor:
        if isinstance(logits, Tensor):
            return self.loss(logits, target, mask, **extra)
        weights = level_weights(len(logits), self.weights, self.zero_coarsest)
        total = logits[0].new_zeros(())
        for level, weight in zip(logits, weights):
            if weight == 0:
                continue
            level_target, level_mask = downsample_target(target, level.shape[2:], level.shape[1],
                                                         mode=self.downsample, ignore_index=self.ignore_index,
                                                         mask=mask)
            total = total + weight * self.loss(level, level_target, level_mask, **extra)
        return total

    def extra_repr(self) -> str:
        return f"weights={self.weights}, downsample={self.downsample!r}, zero_coarsest={self.zero_coarsest}"
