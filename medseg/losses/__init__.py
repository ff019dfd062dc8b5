"""Segmentation losses, 2D and 3D: logits ``(B, C, *spatial)`` in, targets as index maps or one-hot.

``create(name, **kw)`` builds any registered loss (``list_losses()``); the functional cores live in
``pixelwise``, ``overlap``, ``distance`` and ``topology``; ``DeepSupervisionLoss`` and ``PartialLabelLoss`` wrap
any of them. The table of names, formulas and papers is ``docs/losses.md``.
"""

from medseg.losses.class_weights import class_weights_from_fractions
from medseg.losses.compound import WeightedSum
from medseg.losses.deep_supervision import DeepSupervisionLoss, downsample_target, level_weights
from medseg.losses.modules import (
    BCELoss,
    BoundaryLoss,
    ClDiceLoss,
    CrossEntropyLoss,
    DiceLoss,
    ExpLogLoss,
    FocalLoss,
    FocalTverskyLoss,
    GeneralizedDiceLoss,
    HausdorffDTLoss,
    JaccardLoss,
    LogCoshDiceLoss,
    Loss,
    TverskyLoss,
)
from medseg.losses.partial_label import PartialLabelLoss, merge_unannotated
from medseg.losses.registry import create, list_losses, register

__all__ = [
    "BCELoss",
    "BoundaryLoss",
    "ClDiceLoss",
    "CrossEntropyLoss",
    "DeepSupervisionLoss",
    "DiceLoss",
    "ExpLogLoss",
    "FocalLoss",
    "FocalTverskyLoss",
    "GeneralizedDiceLoss",
    "HausdorffDTLoss",
    "JaccardLoss",
    "LogCoshDiceLoss",
    "Loss",
    "PartialLabelLoss",
    "TverskyLoss",
    "WeightedSum",
    "class_weights_from_fractions",
    "create",
    "downsample_target",
    "level_weights",
    "list_losses",
    "merge_unannotated",
    "register",
]
