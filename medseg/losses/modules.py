"""Thin ``nn.Module`` wrappers: each holds the options of one functional loss and calls it.

``DiceLoss(batch=True)(logits, target, mask=None)`` is ``dice(logits, target, batch=True, mask=None)``. The
options are the keyword-only parameters of the function (``inspect.signature(DiceLoss)`` lists them); an unknown
option raises a MedsegError listing the valid ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from medseg.errors import MedsegError
from medseg.losses import distance, overlap, pixelwise, topology


class Loss(nn.Module):
    """Base of the single losses: options in ``self.options``, computation in the class's functional ``fn``.

    ``forward(logits (B, C, *spatial), target (B, 1 | C, *spatial), mask (B, 1, *spatial) | None)``.
    """

    fn: Callable[..., Tensor]

    def __init__(self, **options: Any) -> None:
        super().__init__()
        valid = self.option_names()
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise MedsegError(f"{type(self).__name__} has no option(s) {unknown}",
                              fix=f"use some of {', '.join(valid)}")
        self.options = options

    @classmethod
    def option_names(cls) -> list[str]:
        """Names of the keyword options of the functional (``mask`` excluded: it is a forward argument)."""
        params = inspect.signature(cls.fn).parameters.values()
        return [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name != "mask"]

    @property
    def ignore_index(self) -> int | None:
        return self.options.get("ignore_index")

    @property
    def activation(self) -> str:
        """The activation this loss applies (losses without the option, i.e. cross-entropy, are softmax)."""
        default = inspect.signature(type(self).fn).parameters.get("activation")
        return self.options.get("activation", "softmax" if default is None else default.default)

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return type(self).fn(logits, target, mask=mask, **self.options)

    def unreduced(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        """The loss with ``reduction="none"``: per sample and class, or per voxel for voxel-wise losses."""
        return type(self).fn(logits, target, mask=mask, **{**self.options, "reduction": "none"})

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


def _wrap(fn: Callable[..., Tensor], name: str) -> type[Loss]:
    """A Loss subclass for ``fn`` whose docstring and constructor signature are the function's."""
    params = [p for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY and p.name != "mask"]
    cls = type(name, (Loss,), {"fn": staticmethod(fn), "__doc__": fn.__doc__, "__module__": __name__})
    cls.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return cls


CrossEntropyLoss = _wrap(pixelwise.cross_entropy, "CrossEntropyLoss")
BCELoss = _wrap(pixelwise.binary_cross_entropy, "BCELoss")
FocalLoss = _wrap(pixelwise.focal, "FocalLoss")
DiceLoss = _wrap(overlap.dice, "DiceLoss")
JaccardLoss = _wrap(overlap.jaccard, "JaccardLoss")
GeneralizedDiceLoss = _wrap(overlap.generalized_dice, "GeneralizedDiceLoss")
TverskyLoss = _wrap(overlap.tversky, "TverskyLoss")
FocalTverskyLoss = _wrap(overlap.focal_tversky, "FocalTverskyLoss")
LogCoshDiceLoss = _wrap(overlap.log_cosh_dice, "LogCoshDiceLoss")
ExpLogLoss = _wrap(overlap.exp_log, "ExpLogLoss")
BoundaryLoss = _wrap(distance.boundary, "BoundaryLoss")
HausdorffDTLoss = _wrap(distance.hausdorff_dt, "HausdorffDTLoss")
ClDiceLoss = _wrap(topology.cldice, "ClDiceLoss")
