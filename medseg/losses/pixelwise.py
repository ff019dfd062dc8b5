"""Voxel-wise losses: cross-entropy (weighted, label-smoothed), binary cross-entropy and focal loss.

Every function takes logits ``(B, C, *spatial)`` and a target ``(B, 1, *spatial)`` index map or ``(B, C, *spatial)``
one-hot/soft map, an optional ``mask`` ``(B, 1, *spatial)`` and returns a scalar, or with ``reduction="none"`` the
masked per-voxel map.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from medseg.errors import MedsegError
from medseg.losses.core import (
    Activation,
    ClassWeight,
    Reduction,
    check_choice,
    class_weights,
    drop_background,
    encode,
    reduce_voxels,
)


def _channel_view(weight: Tensor, ndim: int) -> Tensor:
    return weight.view(1, -1, *([1] * (ndim - 2)))


def cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    class_weight: ClassWeight = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    mask: Tensor | None = None,
) -> Tensor:
    r"""Softmax cross-entropy for mutually exclusive classes, optionally class-weighted and label-smoothed.

    .. math:: \ell(x) = -\sum_c w_c\, \tilde t_c(x) \log \operatorname{softmax}(z(x))_c,\qquad
              \tilde t = (1-\varepsilon)\, t + \varepsilon / C

    ``mean`` divides by :math:`\sum_x \sum_c w_c t_c(x)` over counted voxels: the number of voxels without
    weights, and exactly ``torch.nn.functional.cross_entropy``'s weighted mean for hard labels (torch divides by
    the voxel count instead when targets are probabilities). Weighted CE with weights from a dataset fingerprint:
    see :func:`medseg.losses.class_weights_from_fractions`.

    Paper: the standard multinomial log-loss; class weighting as in Long et al., "Fully Convolutional Networks
    for Semantic Segmentation", CVPR 2015 / Ronneberger et al., "U-Net", MICCAI 2015; label smoothing from
    Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016.

    Shapes: logits ``(B, C, *spatial)``, ``C >= 2``; target ``(B, 1, *spatial)`` or ``(B, C, *spatial)``;
    ``reduction="none"`` gives ``(B, 1, *spatial)``.
    """
    onehot, mask = encode(logits, target, ignore_index=ignore_index, mask=mask)
    if logits.shape[1] < 2:
        raise MedsegError("cross_entropy needs C >= 2 channels", fix="use 'bce' for a single foreground channel")
    if not 0.0 <= label_smoothing <= 1.0:
        raise MedsegError(f"label_smoothing={label_smoothing} is outside [0, 1]")
    num_classes = logits.shape[1]
    weight = class_weights(class_weight, num_classes, True, logits)
    log_p = torch.log_softmax(logits, dim=1)
    smoothed = onehot if label_smoothing == 0 else (1 - label_smoothing) * onehot + label_smoothing / num_classes
    if weight is not None:
        smoothed = smoothed * _channel_view(weight, logits.ndim)
    values = -(smoothed * log_p).sum(dim=1, keepdim=True)
    per_voxel = onehot if weight is None else onehot * _channel_view(weight, logits.ndim)
    normaliser = per_voxel.sum() if mask is None else (per_voxel.sum(dim=1, keepdim=True) * mask).sum()
    return reduce_voxels(values, mask, reduction, normaliser)


def log_probs(logits: Tensor, activation: Activation) -> tuple[Tensor, Tensor]:
    """``log p`` and ``log(1 - p)`` computed stably for sigmoid or softmax probabilities."""
    check_choice("activation", activation, ("softmax", "sigmoid"))
    if activation == "sigmoid":
        return F.logsigmoid(logits), F.logsigmoid(-logits)
    log_p = torch.log_softmax(logits, dim=1)
    return log_p, torch.log((-torch.expm1(log_p)).clamp_min(torch.finfo(logits.dtype).tiny))


def binary_cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    activation: Activation = "sigmoid",
    include_background: bool = True,
    class_weight: ClassWeight = None,
    pos_weight: float | Sequence[float] | None = None,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
    mask: Tensor | None = None,
) -> Tensor:
    r"""Binary cross-entropy per channel, for multi-label / region targets (sigmoid) or per-class (softmax).

    .. math:: \ell_c(x) = -w_c \left[ q_c\, t_c \log p_c + (1 - t_c) \log(1 - p_c) \right]

    with :math:`q_c` the ``pos_weight`` (as ``torch.nn.BCEWithLogitsLoss``; a scalar or one value per channel
    that enters the loss) and :math:`w_c` the class weight;
    ``mean`` averages over the ``B * C' *`` counted-voxel elements. With a sigmoid this is
    ``BCEWithLogitsLoss``; with a softmax it is the per-class binary term of the Combo loss.

    Paper: the Bernoulli log-loss; region-based training with sigmoids as in Isensee et al., "nnU-Net",
    Nature Methods 2021 (BraTS regions).

    Shapes: logits and targets as in :func:`cross_entropy` (``C == 1`` allowed with a sigmoid);
    ``reduction="none"`` gives ``(B, C', *spatial)``.
    """
    onehot, mask = encode(logits, target, ignore_index=ignore_index, mask=mask)
    log_p, log_not_p = log_probs(logits, activation)
    log_p, log_not_p = drop_background(log_p, include_background), drop_background(log_not_p, include_background)
    onehot = drop_background(onehot, include_background)
    positive = onehot * log_p
    if pos_weight is not None:
        positive = positive * _channel_view(torch.as_tensor(pos_weight, dtype=logits.dtype,
                                                            device=logits.device).reshape(-1), logits.ndim)
    values = -(positive + (1 - onehot) * log_not_p)
    weight = class_weights(class_weight, logits.shape[1], include_background, logits)
    if weight is not None:
        values = values * _channel_view(weight, values.ndim)
    return reduce_voxels(values, mask, reduction)


def _alpha_factor(alpha: float | Sequence[float], onehot: Tensor, activation: Activation) -> Tensor:
    """The alpha-balancing factor of the focal loss, broadcastable to ``(B, C', *spatial)``."""
    alpha_t = torch.as_tensor(alpha, dtype=onehot.dtype, device=onehot.device)
    if alpha_t.ndim == 0:
        if activation == "sigmoid":
            return onehot * alpha_t + (1 - onehot) * (1 - alpha_t)
        alpha_t = torch.cat([1 - alpha_t[None], alpha_t.expand(onehot.shape[1] - 1)])
        return _channel_view(alpha_t, onehot.ndim)
    if alpha_t.numel() != onehot.shape[1]:
        raise MedsegError(f"alpha has {alpha_t.numel()} values for {onehot.shape[1]} channels",
                          fix="give one alpha per channel that enters the loss")
    alpha_t = _channel_view(alpha_t, onehot.ndim)
    return alpha_t if activation == "softmax" else torch.where(onehot == 1, alpha_t, torch.ones_like(alpha_t))


def focal(
    logits: Tensor,
    target: Tensor,
    *,
    activation: Activation = "softmax",
    include_background: bool = True,
    gamma: float = 2.0,
    alpha: float | Sequence[float] | None = None,
    class_weight: ClassWeight = None,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
    mask: Tensor | None = None,
) -> Tensor:
    r"""Focal loss: cross-entropy that down-weights well-classified voxels.

    softmax: :math:`\ell_c = -\alpha_c\, t_c (1 - p_c)^\gamma \log p_c`; sigmoid:
    :math:`\ell_c = \alpha_t (1 - p_t)^\gamma \operatorname{BCE}(z_c, t_c)` with :math:`p_t = p` where ``t = 1``
    and ``1 - p`` elsewhere. A scalar ``alpha`` weights positives by ``alpha`` and negatives by ``1 - alpha``
    (softmax: background by ``1 - alpha``); a sequence gives one alpha per channel. ``class_weight`` multiplies
    each channel. ``mean`` averages over all ``B * C' *`` counted-voxel elements, as MONAI's ``FocalLoss``:
    with a softmax and ``gamma = 0`` it is the cross-entropy divided by ``C'``. Unlike MONAI, the softmax is
    taken over all ``C`` channels before the background is dropped.

    Paper: Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.

    Shapes: as :func:`binary_cross_entropy`; ``reduction="none"`` gives ``(B, C', *spatial)``.
    """
    onehot, mask = encode(logits, target, ignore_index=ignore_index, mask=mask)
    check_choice("activation", activation, ("softmax", "sigmoid"))
    if activation == "softmax":
        log_p = torch.log_softmax(logits, dim=1)
        values = -(1 - log_p.exp()).pow(gamma) * log_p * onehot
    else:
        bce = logits - logits * onehot - F.logsigmoid(logits)
        values = torch.exp(gamma * F.logsigmoid(-logits * (2 * onehot - 1))) * bce
    values, onehot = drop_background(values, include_background), drop_background(onehot, include_background)
    if alpha is not None:
        values = values * _alpha_factor(alpha, onehot, activation)
    weight = class_weights(class_weight, logits.shape[1], include_background, logits)
    if weight is not None:
        values = values * _channel_view(weight, values.ndim)
    return reduce_voxels(values, mask, reduction)
