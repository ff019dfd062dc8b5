"""Compound losses: a weighted sum of loss modules, and the usual presets (DiceCE, DiceFocal, Combo, Dice+clDice).

Shared options are routed to every term that has them: ``dice_ce(include_background=False, ignore_index=255)``
sets both on the Dice term, and ``ignore_index`` on the CE term (which has no ``include_background``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from medseg.errors import MedsegError
from medseg.losses.modules import (
    BCELoss,
    ClDiceLoss,
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    Loss,
)


class WeightedSum(nn.Module):
    """``sum_i w_i * loss_i(logits, target, mask)`` over named terms; every term must reduce to a scalar.

    Shapes: logits ``(B, C, *spatial)``, target ``(B, 1 | C, *spatial)``, mask ``(B, 1, *spatial)`` or None.
    """

    def __init__(self, terms: Mapping[str, nn.Module], weights: Mapping[str, float]) -> None:
        super().__init__()
        if set(terms) != set(weights):
            raise MedsegError(f"weights {sorted(weights)} do not name the terms {sorted(terms)}",
                              fix="give one weight per term")
        if any(w < 0 for w in weights.values()):
            raise MedsegError(f"negative loss weights {dict(weights)}", fix="use weights >= 0")
        self.terms = nn.ModuleDict(terms)
        self.weights = {name: float(weights[name]) for name in terms}

    @property
    def ignore_index(self) -> int | None:
        found = {getattr(term, "ignore_index", None) for term in self.terms.values()} - {None}
        if len(found) > 1:
            raise MedsegError(f"terms disagree on ignore_index: {sorted(found)}", fix="give all terms the same one")
        return found.pop() if found else None

    def components(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        """Each term's unweighted value, for logging."""
        return {name: term(logits, target, mask) for name, term in self.terms.items()}

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        parts = self.components(logits, target, mask)
        return sum(self.weights[name] * value for name, value in parts.items())  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return f"weights={self.weights}"


def route_options(classes: Mapping[str, type[Loss]], options: dict[str, Any]) -> dict[str, Loss]:
    """Build each term with the options it accepts; an option no term accepts is an error."""
    accepted = {name: set(cls.option_names()) for name, cls in classes.items()}
    unused = sorted(set(options) - set().union(*accepted.values()))
    if unused:
        valid = sorted(set().union(*accepted.values()))
        raise MedsegError(f"no term of {sorted(classes)} takes option(s) {unused}", fix=f"use some of {valid}")
    return {name: cls(**{k: v for k, v in options.items() if k in accepted[name]}) for name, cls in classes.items()}


def dice_ce(*, lambda_dice: float = 1.0, lambda_ce: float = 1.0, **options: Any) -> WeightedSum:
    """Dice + cross-entropy (``lambda_dice * Dice + lambda_ce * CE``); with ``activation="sigmoid"`` the CE
    term is the binary cross-entropy, as MONAI's ``DiceCELoss`` does for one channel and nnU-Net for regions.

    Paper: Isensee et al., "nnU-Net", Nature Methods 2021; Taghanaki et al. 2019 (Combo) for the idea.
    Options: those of :func:`medseg.losses.overlap.dice` and :func:`medseg.losses.pixelwise.cross_entropy`
    (or :func:`~medseg.losses.pixelwise.binary_cross_entropy`). Shapes: as :class:`WeightedSum`.
    """
    ce = BCELoss if options.get("activation") == "sigmoid" else CrossEntropyLoss
    return WeightedSum(route_options({"dice": DiceLoss, "ce": ce}, options), {"dice": lambda_dice, "ce": lambda_ce})


def nnunet_dice_ce(**options: Any) -> WeightedSum:
    """nnU-Net v2's training loss: Dice without background (smoothing 1e-5) + CE, here with batch Dice.

    nnU-Net's plans choose ``batch_dice`` per configuration: pass ``batch=False`` where a plan says so.
    nnU-Net writes the Dice term as ``-dc``; medseg's ``1 - dc`` differs by a constant, so gradients agree.
    Shapes: as :class:`WeightedSum`.
    """
    return dice_ce(**{"batch": True, "include_background": False, **options})


def dice_focal(*, lambda_dice: float = 1.0, lambda_focal: float = 1.0, **options: Any) -> WeightedSum:
    """Dice + focal loss (``lambda_dice * Dice + lambda_focal * Focal``), both under the same activation.

    Paper: Zhu et al., "AnatomyNet", Medical Physics 2019. Options: those of ``dice`` and ``focal``.
    Shapes: as :class:`WeightedSum`.
    """
    return WeightedSum(route_options({"dice": DiceLoss, "focal": FocalLoss}, options),
                       {"dice": lambda_dice, "focal": lambda_focal})


def combo(*, alpha: float = 0.5, beta: float = 0.5, **options: Any) -> WeightedSum:
    r"""Combo loss: ``alpha`` times a ``beta``-weighted binary cross-entropy plus ``1 - alpha`` times Dice loss.

    .. math:: \ell = -\alpha \frac{1}{N}\sum \left[\beta\, t \ln p + (1 - \beta)(1 - t) \ln(1 - p)\right]
              + (1 - \alpha)(1 - D)

    ``beta > 0.5`` penalises false negatives more. The paper subtracts the Dice coefficient; ``1 - D`` differs
    by a constant. Built as ``alpha (1 - beta) BCE(pos_weight = beta / (1 - beta)) + (1 - alpha) Dice``.

    Paper: Taghanaki et al., "Combo loss: Handling input and output imbalance in multi-organ segmentation",
    CMIG 2019. Options: those of ``dice`` and ``binary_cross_entropy`` (``pos_weight`` is set from beta).
    Shapes: as :class:`WeightedSum`.
    """
    if not 0 <= alpha <= 1 or not 0 < beta < 1:
        raise MedsegError(f"combo needs 0 <= alpha <= 1 and 0 < beta < 1, got alpha={alpha}, beta={beta}")
    options = {"activation": "softmax", **options, "pos_weight": beta / (1 - beta)}
    terms = route_options({"dice": DiceLoss, "ce": BCELoss}, options)
    return WeightedSum(terms, {"dice": 1 - alpha, "ce": alpha * (1 - beta)})


def dice_cldice(*, alpha: float = 0.5, **options: Any) -> WeightedSum:
    """``(1 - alpha) * Dice + alpha * clDice``, both with smoothing 1 as in the clDice paper and MONAI's
    ``SoftDiceclDiceLoss``, both without the background by default (MONAI includes it; the clDice authors'
    code does not). Paper: Shit et al., CVPR 2021. Options: those of ``dice`` and ``cldice``.
    Shapes: as :class:`WeightedSum`.
    """
    if not 0 <= alpha <= 1:
        raise MedsegError(f"dice_cldice needs 0 <= alpha <= 1, got {alpha}")
    options = {"smooth_nr": 1.0, "smooth_dr": 1.0, "include_background": False, **options}
    return WeightedSum(route_options({"dice": DiceLoss, "cldice": ClDiceLoss}, options),
                       {"dice": 1 - alpha, "cldice": alpha})
