"""Overlap metrics from one confusion count: TP/FP/FN/TN are counted once, every metric derives from them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from medseg.metrics.conventions import empty_value

OVERLAP_METRICS = ("dice", "iou", "precision", "recall", "specificity", "accuracy", "volume_similarity", "ravd")


@dataclass(frozen=True)
class Confusion:
    """Voxel counts of one binary comparison (inside the ROI when one was given)."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n_pred(self) -> int:
        return self.tp + self.fp

    @property
    def n_ref(self) -> int:
        return self.tp + self.fn

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    def __add__(self, other: "Confusion") -> "Confusion":
        """The pooled counts of two comparisons (e.g. of several patches or cases, as nnU-Net's pseudo-Dice)."""
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)


def confusion(pred: np.ndarray, ref: np.ndarray, roi: np.ndarray | None = None) -> Confusion:
    """Count TP/FP/FN/TN of two boolean masks of the same shape ``(*spatial)``, restricted to ``roi`` if given.

    Without an ROI only the bounding box of both masks is visited after one projection pass per mask.
    """
    from medseg.metrics.surface import union_box

    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    if roi is not None:
        roi = np.asarray(roi, dtype=bool)
        if roi.shape != pred.shape:
            raise ValueError(f"ROI {roi.shape} and masks {pred.shape} differ in shape")
        pred, ref = pred & roi, ref & roi
        total = int(np.count_nonzero(roi))
    else:
        total = pred.size
    box = union_box(pred, ref)
    if box is None:
        return Confusion(tp=0, fp=0, fn=0, tn=total)
    pred, ref = pred[box], ref[box]
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    tp = int(np.count_nonzero(pred & ref)) if n_pred and n_ref else 0
    fp, fn = n_pred - tp, n_ref - tp
    return Confusion(tp=tp, fp=fp, fn=fn, tn=total - tp - fp - fn)


def _ratio(key: str, c: Confusion, numerator: float, denominator: float) -> float:
    conventional = empty_value(key, c.n_pred == 0, c.n_ref == 0)
    if conventional is not None:
        return float(conventional)
    return float(numerator / denominator) if denominator else math.nan


def dice(c: Confusion) -> float:
    return _ratio("dice", c, 2 * c.tp, 2 * c.tp + c.fp + c.fn)


def iou(c: Confusion) -> float:
    return _ratio("iou", c, c.tp, c.tp + c.fp + c.fn)


def precision(c: Confusion) -> float:
    return _ratio("precision", c, c.tp, c.tp + c.fp)


def recall(c: Confusion) -> float:
    return _ratio("recall", c, c.tp, c.tp + c.fn)


def specificity(c: Confusion) -> float:
    return _ratio("specificity", c, c.tn, c.tn + c.fp)


def accuracy(c: Confusion) -> float:
    return _ratio("accuracy", c, c.tp + c.tn, c.total)


def volume_similarity(c: Confusion) -> float:
    return _ratio("volume_similarity", c, 2 * c.tp + c.fp + c.fn - abs(c.fn - c.fp), 2 * c.tp + c.fp + c.fn)


def ravd(c: Confusion) -> float:
    return _ratio("ravd", c, abs(c.n_pred - c.n_ref), c.n_ref)


_FUNCTIONS = {"dice": dice, "iou": iou, "precision": precision, "recall": recall, "specificity": specificity,
              "accuracy": accuracy, "volume_similarity": volume_similarity, "ravd": ravd}


def overlap_metrics(c: Confusion, keys: tuple[str, ...] | list[str] = OVERLAP_METRICS) -> dict[str, float]:
    """The requested overlap metrics of one confusion count (see ``conventions`` for empty masks)."""
    return {key: _FUNCTIONS[key](c) for key in keys}



def mean_label_dice(pred_labels: np.ndarray, ref_labels: np.ndarray, values: Sequence[int],
                    roi: np.ndarray | None = None, *, skip_absent: bool = False) -> float:
    """One number per case: the mean over the label ``values`` of the Dice between two label maps of the same
    shape ``(*spatial)`` (within ``roi`` if given), each by ``dice``'s conventions (a value absent from both
    counts 1, as in ``medseg evaluate``'s per-class table). ``skip_absent``: a value absent from both is left out
    instead (it says nothing about the prediction; what a retention curve needs, where removing a structure
    whole must not score 1). NaN when no value is counted."""
    scores = []
    for value in values:
        counts = confusion(pred_labels == value, ref_labels == value, roi)
        if counts.n_pred or counts.n_ref or not skip_absent:
            scores.append(dice(counts))
    return float(np.mean(scores)) if scores else math.nan
