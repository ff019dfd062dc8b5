"""Distance-based losses: boundary loss (signed distance maps) and the Hausdorff distance-transform loss.

Distance maps are computed on the CPU with ``edt`` (exact Euclidean distance transform) from masks thresholded
at 0.5, per sample and channel, and are constants for autograd. ``spacing`` gives the voxel size along the
spatial axes (same order as the tensor, mm); None means unit voxels.
"""

from __future__ import annotations

from collections.abc import Sequence

import edt
import numpy as np
import torch
from torch import Tensor

from medseg.errors import MedsegError
from medseg.losses.core import Activation, ClassWeight, Reduction, class_weights, prepare, reduce

Spacing = Sequence[float] | None


def _edt(binary: np.ndarray, spacing: Spacing) -> np.ndarray:
    """Distance of each non-zero voxel to the nearest zero voxel (0 on zero voxels)."""
    anisotropy = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * binary.ndim
    if len(anisotropy) != binary.ndim:
        raise MedsegError(f"spacing {tuple(spacing or ())} has {len(anisotropy)} values for {binary.ndim}D data",
                          fix="give one voxel size per spatial axis")
    return edt.edt(np.ascontiguousarray(binary), anisotropy=anisotropy, black_border=False)


def _per_mask(masks: Tensor, spacing: Spacing, build) -> Tensor:
    """Apply ``build(fg: bool ndarray) -> float ndarray`` to every ``(b, c)`` mask of ``(B, C, *spatial)``."""
    fg_all = (masks.detach() > 0.5).cpu().numpy()
    out = np.zeros(fg_all.shape, dtype=np.float64)
    for index in np.ndindex(*fg_all.shape[:2]):
        fg = fg_all[index]
        if fg.any() and not fg.all():
            out[index] = build(fg, spacing)
    return torch.from_numpy(out).to(device=masks.device, dtype=masks.dtype)


def _signed(fg: np.ndarray, spacing: Spacing) -> np.ndarray:
    return np.where(fg, -(_edt(fg, spacing) - 1), _edt(~fg, spacing))


def _unsigned(fg: np.ndarray, spacing: Spacing) -> np.ndarray:
    return _edt(fg, spacing) + _edt(~fg, spacing)


def signed_distance_map(masks: Tensor, spacing: Spacing = None) -> Tensor:
    """Signed distance maps ``(B, C, *spatial)`` of binary masks ``(B, C, *spatial)``, as in Kervadec et al.

    Outside the mask: the distance to it (>= 1 voxel); inside: minus (distance to the outside - 1), so 0 on
    the mask's inner border and negative deeper in. An empty or full mask gives 0 everywhere.
    """
    return _per_mask(masks, spacing, _signed)


def distance_field(masks: Tensor, spacing: Spacing = None) -> Tensor:
    """Unsigned distance to the mask boundary ``(B, C, *spatial)``: inside distance + outside distance.

    An empty or full mask gives 0 everywhere (as MONAI's ``HausdorffDTLoss``).
    """
    return _per_mask(masks, spacing, _unsigned)


def _masked_mean(values: Tensor, mask: Tensor | None, batch: bool) -> Tensor:
    """Mean over the counted voxels of ``(B, C, *spatial)`` -> ``(B, C)``, or ``(1, C)`` with ``batch``."""
    axes = tuple(range(2, values.ndim)) if not batch else (0, *range(2, values.ndim))
    if mask is None:
        total = values.mean(axes)
    else:
        total = values.sum(axes) / mask.expand_as(values[:, :1]).sum(axes).clamp_min(1)
    return total[None] if batch else total


def boundary(
    logits: Tensor,
    target: Tensor,
    *,
    activation: Activation = "softmax",
    include_background: bool = True,
    batch: bool = False,
    spacing: Spacing = None,
    class_weight: ClassWeight = None,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
    mask: Tensor | None = None,
) -> Tensor:
    r"""Boundary loss: probabilities integrated against the target's signed distance map.

    .. math:: \ell_c = \frac{1}{|\Omega|} \sum_{x \in \Omega} p_c(x)\, \phi_{G_c}(x)

    with :math:`\phi_{G_c}` from :func:`signed_distance_map` (negative inside the target). Its minimum is
    negative, so it is meant to be added to a region loss (the paper ramps its weight up during training,
    GDL + alpha * boundary). Matches MONAI's ``BoundaryLoss`` (defaults kept: background included).
    Masked voxels are left out of the sum and of :math:`|\Omega|`.

    Paper: Kervadec et al., "Boundary loss for highly unbalanced segmentation", MIDL 2019 / MedIA 2021.

    Shapes: logits ``(B, C, *spatial)``; ``reduction="none"`` gives ``(B, C')``, or ``(1, C')`` with ``batch``.
    """
    prep = prepare(logits, target, activation=activation, include_background=include_background,
                   ignore_index=ignore_index, mask=mask)
    phi = signed_distance_map(prep.target, spacing)
    values = _masked_mean(prep.probs * phi, prep.mask, batch)
    return reduce(values, reduction, class_weights(class_weight, logits.shape[1], include_background, logits))


def hausdorff_dt(
    logits: Tensor,
    target: Tensor,
    *,
    activation: Activation = "softmax",
    include_background: bool = False,
    batch: bool = False,
    alpha: float = 2.0,
    spacing: Spacing = None,
    class_weight: ClassWeight = None,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
    mask: Tensor | None = None,
) -> Tensor:
    r"""Hausdorff distance-transform loss: squared errors weighted by the distances to both boundaries.

    .. math:: \ell_c = \frac{1}{|\Omega|} \sum_{x \in \Omega} (p_c - t_c)^2 \left(d_{P_c}(x)^\alpha
              + d_{G_c}(x)^\alpha\right)

    with :math:`d` from :func:`distance_field` of the prediction thresholded at 0.5 and of the target.
    Defaults are MONAI's ``HausdorffDTLoss`` (alpha 2, background excluded), which this equals.

    Paper: Karimi & Salcudean, "Reducing the Hausdorff Distance in Medical Image Segmentation with
    Convolutional Neural Networks", IEEE TMI 2020.

    Shapes: as :func:`boundary`.
    """
    prep = prepare(logits, target, activation=activation, include_background=include_background,
                   ignore_index=ignore_index, mask=mask)
    distance = distance_field(prep.probs, spacing).pow(alpha) + distance_field(prep.target, spacing).pow(alpha)
    values = _masked_mean((prep.probs - prep.target).pow(2) * distance, prep.mask, batch)
    return reduce(values, reduction, class_weights(class_weight, logits.shape[1], include_background, logits))
