"""Topology-aware loss: soft clDice for tubular structures (vessels, airways, neurons), via a soft skeleton."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from medseg.errors import MedsegError
from medseg.losses.core import Activation, ClassWeight, Reduction, class_weights, prepare, reduce


def soft_erode(x: Tensor) -> Tensor:
    """Soft erosion of ``(B, C, *spatial)`` maps: minimum over the axis-aligned 3-voxel crosses."""
    ndim = x.ndim - 2
    pool = F.max_pool2d if ndim == 2 else F.max_pool3d
    eroded = None
    for axis in range(ndim):
        kernel = tuple(3 if a == axis else 1 for a in range(ndim))
        padding = tuple(1 if a == axis else 0 for a in range(ndim))
        along = -pool(-x, kernel, (1,) * ndim, padding)
        eroded = along if eroded is None else torch.minimum(eroded, along)
    return eroded


def soft_dilate(x: Tensor) -> Tensor:
    """Soft dilation of ``(B, C, *spatial)`` maps: maximum over the 3x3(x3) neighbourhood."""
    pool = F.max_pool2d if x.ndim == 4 else F.max_pool3d
    return pool(x, 3, 1, 1)


def soft_skeleton(x: Tensor, iterations: int = 3) -> Tensor:
    """Soft morphological skeleton ``(B, C, *spatial)`` of soft masks in [0, 1] (Shit et al., Algorithm 1)."""
    if iterations < 0:
        raise MedsegError(f"iterations={iterations} must be >= 0")
    skeleton = F.relu(x - soft_dilate(soft_erode(x)))
    for _ in range(iterations):
        x = soft_erode(x)
        delta = F.relu(x - soft_dilate(soft_erode(x)))
        skeleton = skeleton + F.relu(delta - skeleton * delta)
    return skeleton


def cldice(
    logits: Tensor,
    target: Tensor,
    *,
    activation: Activation = "softmax",
    include_background: bool = False,
    batch: bool = False,
    iterations: int = 3,
    smooth_nr: float = 1.0,
    smooth_dr: float = 1.0,
    smooth: float = 1e-4,
    class_weight: ClassWeight = None,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
    mask: Tensor | None = None,
) -> Tensor:
    r"""Soft clDice loss: harmonic mean of topology precision and sensitivity of soft skeletons.

    .. math:: T_{prec} = \frac{\sum_x S_P\, t + s_{nr}}{\sum_x S_P + s_{dr}},\quad
              T_{sens} = \frac{\sum_x S_G\, p + s_{nr}}{\sum_x S_G + s_{dr}},\quad
              \ell_c = 1 - \frac{2\, T_{prec} T_{sens}}{T_{prec} + T_{sens} + s}

    with :math:`S_P, S_G` the soft skeletons (:func:`soft_skeleton`) of prediction and target. One value per
    sample and class; MONAI's ``SoftclDiceLoss`` pools the sums over all channels instead, so the two agree
    when one channel enters the loss. The background is excluded by default, as in the authors' code.
    Usually combined with Dice (registry preset ``dice_cldice``).

    Paper: Shit et al., "clDice - a Novel Topology-Preserving Loss Function for Tubular Structure
    Segmentation", CVPR 2021.

    Shapes: logits ``(B, C, *spatial)``; ``reduction="none"`` gives ``(B, C')``, or ``(1, C')`` with ``batch``.
    """
    prep = prepare(logits, target, activation=activation, include_background=include_background,
                   ignore_index=ignore_index, mask=mask)
    skel_pred, skel_true = soft_skeleton(prep.probs, iterations), soft_skeleton(prep.target, iterations)
    axes = tuple(range(2, logits.ndim)) if not batch else (0, *range(2, logits.ndim))
    precision = ((skel_pred * prep.target).sum(axes) + smooth_nr) / (skel_pred.sum(axes) + smooth_dr)
    sensitivity = ((skel_true * prep.probs).sum(axes) + smooth_nr) / (skel_true.sum(axes) + smooth_dr)
    values = 1 - 2 * precision * sensitivity / (precision + sensitivity + smooth)
    values = values[None] if batch else values
    return reduce(values, reduction, class_weights(class_weight, logits.shape[1], include_background, logits))
