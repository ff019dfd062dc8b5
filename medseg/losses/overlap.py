"""Region (overlap) losses: soft Dice, soft Jaccard, generalised Dice, Tversky, focal Tversky, log-cosh Dice and
the exponential-logarithmic loss.

Every function takes logits ``(B, C, *spatial)``, a target ``(B, 1, *spatial)`` index map or ``(B, C, *spatial)``
one-hot map and an optional ``mask`` ``(B, 1, *spatial)``. Sums :math:`\\sum_x` run over the counted voxels of
one sample (``batch=False``: one value per sample and class, ``(B, C')``) or of the whole batch
(``batch=True``: ``(1, C')``). ``reduction="none"`` returns that array.
"""

from __future__ import annotations

import torch
from torch import Tensor

from medseg.losses.core import (
    Activation,
    ClassWeight,
    Reduction,
    check_choice,
    class_weights,
    drop_background,
    encode,
    prepare,
    reduce,
)
from medseg.losses.pixelwise import log_probs


def _overlap_terms(
    logits: Tensor,
    target: Tensor,
    activation: Activation,
    include_background: bool,
    ignore_index: int | None,
    mask: Tensor | None,
    batch: bool,
    squared: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Soft true positives, prediction volume and target volume, each ``(B, C')`` or ``(1, C')``."""
    prep = prepare(logits, target, activation=activation, include_background=include_background,
                   ignore_index=ignore_index, mask=mask)
    axes = tuple(range(2, logits.ndim)) if not batch else (0, *range(2, logits.ndim))
    keep = (lambda x: x[None]) if batch else (lambda x: x)
    power = 2 if squared else 1
    tp = keep((prep.probs * prep.target).sum(axes))
    pred = keep(prep.probs.pow(power).sum(axes))
    true = keep(prep.target.pow(power).sum(axes))
    return tp, pred, true


def dice(
    logits: Tensor,
    target: Tensor,
    *,
    activation: Activation = "softmax",
    include_background: bool = True,
    batch: bool = False,
    squared: bool = False,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    class_weight: ClassWeight = None,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
    mask: Tensor | None = None,
) -> Tensor:
    r"""Soft Dice loss, per sample (default) or over the batch ("batch Dice").

    .. math:: \ell_c = 1 - \frac{2 \sum_x p_c t_c + s_{nr}}{\sum_x p_c^k + \sum_x t_c^k + s_{dr}},
              \quad k = 2 \text{ if squared else } 1

    Defaults are MONAI's ``DiceLoss`` (include the background, per-sample, smoothing 1e-5); ``class_weight``
    multiplies each class term before the mean, as MONAI does. nnU-Net trains with ``batch=True``,
    ``include_background=False`` (registry preset ``nnunet_dice_ce``): batch Dice is stabler when a patch
    misses a small structure.

    Paper: Milletari et al., "V-Net", 3DV 2016 (squared denominator); Drozdzal et al., "The Importance of
    Skip Connections in Biomedical Image Segmentation", DLMIA 2016; batch Dice: Isensee et al., "nnU-Net",
    Nature Methods 2021.

    Shapes: logits ``(B, C, *spatial)``; ``reduction="none"`` gives ``(B, C')`` or ``(1, C')`` with ``batch``.
    """
    tp, pred, true = _overlap_terms(logits, target, activation, include_background, ignore_index, mask, batch,
                                    squared)
    values = 1 - (2 * tp + smooth_nr) / (pred + true + smooth_dr)
    return reduce(values, reduction, class_weights(class_weight, logits.shape[1], include_background, logits))


def jaccard(
    logits: Tensor,
    target: Tensor,
    *,
    activation: Activation = "softmax",
    include_background: bool = True,
    batch: bool = False,
    squared: bool = False,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    class_weight: ClassWeight = None,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
    mask: Tensor | None = None,
) -> Tensor:
    r"""Soft Jaccard (IoU) loss.

    .. math:: \ell_c = 1 - \frac{2 \sum_x p_c t_c + s_{nr}}
              {2\left(\sum_x p_c^k + \sum_x t_c^k - \sum_x p_c t_c\right) + s_{dr}}

    the smoothing enters as in MONAI's ``DiceLoss(jaccard=True)``, which this equals.

    Paper: Rahman & Wang, "Optimizing Intersection-over-Union in Deep Neural Networks for Image
    Segmentation", ISVC 2016.

    Shapes: as :func:`dice`.
    """
    tp, pred, true = _overlap_terms(logits, target, activation, include_background, ignore_index, mask, batch,
                                    squared)
    values = 1 - (2 * tp + smooth_nr) / (2 * (pred + true - tp) + smooth_dr)
    return reduce(values, reduction, class_weights(class_weight, logits.shape[1], include_background, logits))


def generalized_dice(
    logits: Tensor,
    target: Tensor,
    *,
    activation: Activation = "softmax",
    include_background: bool = True,
    batch: bool = False,
    weight_type: str = "square",
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
    mask: Tensor | None = None,
) -> Tensor:
    r"""Generalised Dice loss: one Dice over all classes, each weighted by its inverse (squared) volume.

    .. math:: \ell = 1 - \frac{2 \sum_c w_c \sum_x p_c t_c + s_{nr}}{\sum_c w_c \sum_x (p_c + t_c) + s_{dr}},
              \quad w_c = 1 / (\sum_x t_c)^2 \text{ (square)}, \; 1/\sum_x t_c \text{ (simple)}, \; 1
              \text{ (uniform)}

    A class absent from the target gets the largest weight of the others (as MONAI's
    ``GeneralizedDiceLoss``, which this equals).

    Paper: Sudre et al., "Generalised Dice overlap as a deep learning loss function for highly unbalanced
    segmentations", DLMIA 2017.

    Shapes: ``reduction="none"`` gives ``(B, 1)`` or ``(1, 1)`` with ``batch``.
    """
    check_choice("weight_type", weight_type, ("square", "simple", "uniform"))
    tp, pred, true = _overlap_terms(logits, target, activation, include_background, ignore_index, mask, batch)
    if weight_type == "uniform":
        weight = torch.ones_like(true)
    else:
        weight = 1 / (true * true if weight_type == "square" else true)
    infinite = torch.isinf(weight)
    weight = torch.where(infinite, 0, weight)
    weight = torch.where(infinite, weight.max(dim=1, keepdim=True).values, weight).detach()
    numer = 2 * (weight * tp).sum(dim=1, keepdim=True) + smooth_nr
    denom = (weight * (pred + true)).sum(dim=1, keepdim=True) + smooth_dr
    return reduce(1 - numer / denom, reduction)


def _tversky_index(
    logits: Tensor, target: Tensor, *, activation: Activation, include_background: bool, batch: bool,
    alpha: float, beta: float, smooth_nr: float, smooth_dr: float, ignore_index: int | None, mask: Tensor | None,
) -> Tensor:
    tp, pred, true = _overlap_terms(logits, target, activation, include_background, ignore_index, mask, batch)
    fp, fn = pred - tp, true - tp
    return (tp + smooth_nr) / (tp + alpha * fp + beta * fn + smooth_dr)


def tversky(
    logits: Tensor,
    target: Tensor,
    *,
    activation: Activation = "softmax",
    include_background: bool = True,
    batch: bool = False,
    alpha: float = 0.5,
    beta: float = 0.5,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    class_weight: ClassWeight = None,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
    mask: Tensor | None = None,
) -> Tensor:
    r"""Tversky loss: Dice with separate weights on false positives (``alpha``) and false negatives (``beta``).

    .. math:: \ell_c = 1 - \frac{TP_c + s_{nr}}{TP_c + \alpha FP_c + \beta FN_c + s_{dr}},\quad
              TP = \sum_x p t,\; FP = \sum_x p (1 - t),\; FN = \sum_x (1 - p) t

    ``alpha = beta = 0.5`` (MONAI's default, kept) is the Dice loss; the paper recommends alpha 0.3,
    beta 0.7 to favour recall of small lesions.

    Paper: Salehi et al., "Tversky loss function for image segmentation using 3D fully convolutional deep
    networks", MLMI 2017.

    Shapes: as :func:`dice`.
    """
    index = _tversky_index(logits, target, activation=activation, include_background=include_background,
                           batch=batch, alpha=alpha, beta=beta, smooth_nr=smooth_nr, smooth_dr=smooth_dr,
                           ignore_index=ignore_index, mask=mask)
    return reduce(1 - index, reduction, class_weights(class_weight, logits.shape[1], include_background, logits))


def focal_tversky(
    logits: Tensor,
    target: Tensor,
    *,
    activation: Activation = "softmax",
    include_background: bool = True,
    batch: bool = False,
    alpha: float = 0.3,
    beta: float = 0.7,
    gamma: float = 0.75,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    class_weight: ClassWeight = None,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
    mask: Tensor | None = None,
) -> Tensor:
    r"""Focal Tversky loss: the Tversky loss raised to a power.

    .. math:: \ell_c = (1 - TI_c)^{\gamma}

    with :math:`TI_c` the Tversky index of :func:`tversky`. The paper writes the exponent as
    :math:`1/\gamma` with :math:`\gamma = 4/3`, i.e. ``gamma = 0.75`` here, and uses alpha 0.3 on false
    positives, beta 0.7 on false negatives. ``gamma = 1`` is the Tversky loss.

    Paper: Abraham & Khan, "A Novel Focal Tversky Loss Function with Improved Attention U-Net for Lesion
    Segmentation", ISBI 2019.

    Shapes: as :func:`dice`.
    """
    index = _tversky_index(logits, target, activation=activation, include_background=include_background,
                           batch=batch, alpha=alpha, beta=beta, smooth_nr=smooth_nr, smooth_dr=smooth_dr,
                           ignore_index=ignore_index, mask=mask)
    # clamp: d/dx x^gamma is infinite at 0 for gamma < 1 (a perfect prediction)
    values = (1 - index).clamp_min(1e-12).pow(gamma)
    return reduce(values, reduction, class_weights(class_weight, logits.shape[1], include_background, logits))


def log_cosh_dice(
    logits: Tensor,
    target: Tensor,
    *,
    activation: Activation = "softmax",
    include_background: bool = True,
    batch: bool = False,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    class_weight: ClassWeight = None,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
    mask: Tensor | None = None,
) -> Tensor:
    r"""Log-cosh Dice loss: a smoothed Dice loss.

    .. math:: \ell_c = \log\cosh(\ell^{Dice}_c)

    with :math:`\ell^{Dice}_c` the per-class soft Dice loss of :func:`dice`.

    Paper: Jadon, "A survey of loss functions for semantic segmentation", CIBCB 2020.

    Shapes: as :func:`dice`.
    """
    values = dice(logits, target, activation=activation, include_background=include_background, batch=batch,
                  smooth_nr=smooth_nr, smooth_dr=smooth_dr, ignore_index=ignore_index, reduction="none", mask=mask)
    values = torch.log(torch.cosh(values))
    return reduce(values, reduction, class_weights(class_weight, logits.shape[1], include_background, logits))


def exp_log(
    logits: Tensor,
    target: Tensor,
    *,
    activation: Activation = "softmax",
    include_background: bool = True,
    gamma_dice: float = 0.3,
    gamma_ce: float = 0.3,
    weight_dice: float = 0.8,
    weight_ce: float = 0.2,
    smooth: float = 1.0,
    class_weight: ClassWeight = None,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
    mask: Tensor | None = None,
) -> Tensor:
    r"""Exponential logarithmic loss: powered log-Dice plus powered, class-weighted cross-entropy.

    .. math:: \ell = w_{dice}\, \mathbb{E}_c\!\left[(-\ln D_c)^{\gamma_{dice}}\right]
              + w_{ce}\, \mathbb{E}_x\!\left[w_{l(x)} (-\ln p_{l(x)}(x))^{\gamma_{ce}}\right],\quad
              D_c = \frac{2 \sum_x p_c t_c + \epsilon}{\sum_x (p_c + t_c) + \epsilon}

    Paper defaults: gammas 0.3, weights 0.8 / 0.2, :math:`\epsilon = 1`; the label weights :math:`w_l`
    are ``class_weight`` (the paper's :math:`((\sum_k f_k)/f_l)^{0.5}` is
    ``class_weights_from_fractions(..., method="inverse_sqrt")``). The cross-entropy term is taken over the
    classes of the target under the chosen activation (sigmoid: every channel as a binary term).

    Paper: Wong et al., "3D Segmentation with Exponential Logarithmic Loss for Highly Unbalanced Object Sizes",
    MICCAI 2018.

    Shapes: ``reduction="none"`` gives one value per sample, ``(B, 1)``.
    """
    dice_values = dice(logits, target, activation=activation, include_background=include_background,
                       smooth_nr=smooth, smooth_dr=smooth, ignore_index=ignore_index, reduction="none", mask=mask)
    # clamp: (-ln D)^gamma has an infinite slope where D = 1
    dice_term = (-torch.log((1 - dice_values).clamp_min(1e-12))).clamp_min(1e-12).pow(gamma_dice).mean(1)
    ce_term = _powered_ce(logits, target, activation, include_background, gamma_ce, class_weight, ignore_index,
                          mask)
    values = (weight_dice * dice_term + weight_ce * ce_term)[:, None]
    return reduce(values, reduction)


def _powered_ce(
    logits: Tensor, target: Tensor, activation: Activation, include_background: bool, gamma: float,
    class_weight: ClassWeight, ignore_index: int | None, mask: Tensor | None,
) -> Tensor:
    """Per-sample mean over counted voxels of ``w_l (-ln p_l)^gamma`` -> ``(B,)``."""
    onehot, mask = encode(logits, target, ignore_index=ignore_index, mask=mask)
    log_p, log_not_p = (drop_background(x, include_background) for x in log_probs(logits, activation))
    onehot = drop_background(onehot, include_background)

    def powered(log_q: Tensor) -> Tensor:  # clamp: x^gamma has an infinite slope at x = 0
        return (-log_q).clamp_min(1e-12).pow(gamma)

    values = onehot * powered(log_p)
    if activation == "sigmoid":  # every channel is a binary term: its negatives count too
        values = values + (1 - onehot) * powered(log_not_p)
    weight = class_weights(class_weight, logits.shape[1], include_background, logits)
    if weight is not None:
        values = values * weight.view(1, -1, *([1] * (values.ndim - 2)))
    values = values.sum(1) if activation == "softmax" else values.mean(1)
    axes = tuple(range(1, values.ndim))
    if mask is None:
        return values.mean(axes)
    return (values * mask[:, 0]).sum(axes) / mask[:, 0].sum(axes).clamp_min(1)


__all__ = ["dice", "jaccard", "generalized_dice", "tversky", "focal_tversky", "log_cosh_dice", "exp_log"]
