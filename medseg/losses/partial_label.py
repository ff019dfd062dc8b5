"""Losses for partially labelled datasets: each case is annotated for only some classes.

``annotated`` is a ``(B, C)`` boolean tensor: ``annotated[b, c]`` says whether class ``c`` was delineated in case
``b`` (a class that was not may still be present in the image, labelled as background). Two strategies:

- ``marginal`` (softmax, exclusive classes): the probabilities of the classes a case lacks are merged into its
  background, so predicting such a class where the label says "background" is not penalised (Shi et al.,
  "Marginal loss and exclusion loss for partially supervised multi-organ segmentation", MedIA 2021; Fang &
  Yan, "Multi-organ Segmentation over Partially Labeled Datasets with Multi-scale Feature Abstraction",
  IEEE TMI 2020). Merging probabilities is merging logits: ``z_bg' = logsumexp(z_bg, z_missing)``.
- ``masked`` (sigmoid, one binary problem per class): the per-class loss is averaged over annotated classes
  only, ``sum_k w_nk L_nk / sum_k w_nk`` (Liu et al., "CLIP-Driven Universal Model for Organ Segmentation and
  Tumor Detection", ICCV 2023; Ulrich et al., "MultiTalent", MICCAI 2023).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from medseg.errors import MedsegError
from medseg.losses.compound import WeightedSum
from medseg.losses.core import check_choice, encode

Mode = Literal["marginal", "masked"]


def merge_unannotated(logits: Tensor, annotated: Tensor) -> Tensor:
    """Logits ``(B, C, *spatial)`` whose softmax is the marginal distribution of a partially labelled case.

    Channel 0 becomes ``logsumexp`` of the background and every unannotated class; unannotated channels get a
    logit 1000 below the smallest one, so their probability underflows to 0 and they receive no gradient.
    """
    missing = ~annotated.bool()
    missing[:, 0] = False
    missing = missing.view(*missing.shape, *([1] * (logits.ndim - 2)))
    pooled = torch.cat([logits[:, :1], torch.where(missing[:, 1:], logits[:, 1:], float("-inf"))], dim=1)
    floor = logits.detach().amin() - 1000.0
    return torch.cat([torch.logsumexp(pooled, dim=1, keepdim=True),
                      torch.where(missing[:, 1:], floor, logits[:, 1:])], dim=1)


def _annotated_mean(values: Tensor, annotated: Tensor, mask: Tensor | None) -> Tensor:
    """``mean_b [sum_k w_bk v_bk / sum_k w_bk]`` over the channels ``k`` of ``values``.

    ``values``: ``(B, K)`` or a voxel map ``(B, K, *spatial)`` (first averaged over the counted voxels);
    ``K`` is ``C`` (flags ``annotated``), ``C - 1`` (background dropped) or anything else (one value per
    case, e.g. cross-entropy, which sums over classes: weight 1).
    """
    if values.ndim > 2:
        axes = tuple(range(2, values.ndim))
        counted = values.new_tensor(float(values[0, 0].numel())) if mask is None else mask.sum(axes)
        values = values.sum(axes) / counted.clamp_min(1)
    flags = {annotated.shape[1]: annotated, annotated.shape[1] - 1: annotated[:, 1:]}.get(values.shape[1])
    weights = torch.ones_like(values) if flags is None else flags.to(values.dtype)
    return ((values * weights).sum(1) / weights.sum(1).clamp_min(1e-12)).mean()


class PartialLabelLoss(nn.Module):
    """A loss for partially labelled batches: ``forward(logits, target, mask=None, *, annotated)``.

    ``loss`` is any medseg loss (or :class:`~medseg.losses.compound.WeightedSum` of them) built with the
    activation that fits ``mode`` (softmax for ``marginal``, sigmoid for ``masked``). Each term is evaluated
    unreduced and averaged per case over its annotated classes (the merged background always counts in
    ``marginal`` mode), then over the batch.
    Shapes: logits ``(B, C, *spatial)``, target ``(B, 1 | C, *spatial)``, mask ``(B, 1, *spatial)``,
    annotated ``(B, C)`` bool.
    """

    def __init__(self, loss: nn.Module, *, mode: Mode = "marginal") -> None:
        super().__init__()
        check_choice("mode", mode, ("marginal", "masked"))
        wanted = "softmax" if mode == "marginal" else "sigmoid"
        terms = loss.terms.values() if isinstance(loss, WeightedSum) else [loss]
        for term in terms:
            if getattr(term, "activation", wanted) != wanted or not hasattr(term, "unreduced"):
                raise MedsegError(f"{type(term).__name__} cannot serve the {mode!r} partial-label loss",
                                  fix=f"use medseg losses with activation={wanted!r}")
        self.loss = loss
        self.mode = mode

    @property
    def ignore_index(self) -> int | None:
        return getattr(self.loss, "ignore_index", None)

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None, *, annotated: Tensor) -> Tensor:
        if annotated.shape != logits.shape[:2]:
            raise MedsegError(f"annotated has shape {tuple(annotated.shape)}, logits {tuple(logits.shape)}",
                              fix="give one flag per case and class, (B, C)")
        annotated = annotated.bool().clone()
        onehot, valid = encode(logits, target, ignore_index=self.ignore_index, mask=mask)
        present = onehot.flatten(2).amax(2) > 0
        if bool((present & ~annotated)[:, 1:].any()):
            raise MedsegError("the target holds a class marked as not annotated",
                              fix="mark every class present in a case's label as annotated")
        if self.mode == "marginal":
            logits = merge_unannotated(logits, annotated)
            annotated[:, 0] = True
        terms = self.loss.terms.items() if isinstance(self.loss, WeightedSum) else [("", self.loss)]
        total = logits.new_zeros(())
        for name, term in terms:
            weight = self.loss.weights[name] if isinstance(self.loss, WeightedSum) else 1.0
            total = total + weight * _annotated_mean(term.unreduced(logits, target, mask), annotated, valid)
        return total
