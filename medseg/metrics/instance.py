"""Instance metrics: connected components or instance maps, one-to-one matching at IoU >= t, detection
precision/recall/F1, panoptic quality (PQ = SQ x RQ), and lesion-wise Dice / F1."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medseg.metrics import conventions as conv
from medseg.metrics.surface import union_box

INSTANCE_METRICS = ("detection_precision", "detection_recall", "detection_f1", "pq", "sq", "rq")
LESION_METRICS = ("lesion_dice", "lesion_f1")


def label_instances(mask: np.ndarray, connectivity: int = conv.DEFAULT_INSTANCE_CONNECTIVITY) -> np.ndarray:
    """Connected components of a boolean mask ``(*spatial)`` as an instance map (0 background, 1..n), via cc3d.

    ``connectivity`` 1 = faces (4 in 2D, 6 in 3D), ``ndim`` = full neighbourhood (8 / 26).
    """
    import cc3d

    mask = np.asarray(mask, dtype=bool)
    neighbours = {(2, 1): 4, (2, 2): 8, (3, 1): 6, (3, 2): 18, (3, 3): 26}[(mask.ndim, connectivity)]
    return cc3d.connected_components(mask.view(np.uint8), connectivity=neighbours)


@dataclass(frozen=True)
class InstanceOverlap:
    """Sizes and pairwise intersections of the instances of a prediction and a reference map."""

    pred_ids: np.ndarray      # (Np,)
    ref_ids: np.ndarray       # (Nr,)
    pred_sizes: np.ndarray    # (Np,) voxels
    ref_sizes: np.ndarray     # (Nr,) voxels
    intersection: np.ndarray  # (Np, Nr) voxels

    @property
    def iou(self) -> np.ndarray:
        union = self.pred_sizes[:, None] + self.ref_sizes[None, :] - self.intersection
        return np.divide(self.intersection, union, out=np.zeros(union.shape), where=union > 0)


def instance_overlap(pred_instances: np.ndarray, ref_instances: np.ndarray) -> InstanceOverlap:
    """Count instance sizes and intersections of two instance maps (0 = background) in one pass over the union box."""
    box = union_box(pred_instances, ref_instances)
    if box is None:
        nothing = np.zeros(0, dtype=np.int64)
        return InstanceOverlap(nothing, nothing, nothing, nothing, np.zeros((0, 0), dtype=np.int64))
    p, r = pred_instances[box].ravel(), ref_instances[box].ravel()
    pred_ids, p_index = np.unique(p, return_inverse=True)
    ref_ids, r_index = np.unique(r, return_inverse=True)
    counts = np.bincount(p_index * ref_ids.size + r_index, minlength=pred_ids.size * ref_ids.size)
    counts = counts.reshape(pred_ids.size, ref_ids.size)
    p_fg, r_fg = pred_ids != 0, ref_ids != 0
    return InstanceOverlap(
        pred_ids=pred_ids[p_fg], ref_ids=ref_ids[r_fg],
        pred_sizes=counts.sum(axis=1)[p_fg], ref_sizes=counts.sum(axis=0)[r_fg],
        intersection=counts[np.ix_(p_fg, r_fg)],
    )


@dataclass(frozen=True)
class InstanceMatch:
    """One-to-one matched pairs (indices into ``InstanceOverlap``'s ids) with their IoU."""

    pred_index: np.ndarray
    ref_index: np.ndarray
    iou: np.ndarray
    n_pred: int
    n_ref: int

    @property
    def tp(self) -> int:
        return int(self.iou.size)

    @property
    def fp(self) -> int:
        return self.n_pred - self.tp

    @property
    def fn(self) -> int:
        return self.n_ref - self.tp


def match_instances(overlap: InstanceOverlap, threshold: float = conv.DEFAULT_MATCH_IOU) -> InstanceMatch:
    """Match instances one-to-one among pairs with IoU >= ``threshold``, maximising the total IoU (Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"IoU threshold must be in (0, 1], got {threshold}")
    iou = overlap.iou
    candidates = iou >= threshold
    rows = np.flatnonzero(candidates.any(axis=1))
    cols = np.flatnonzero(candidates.any(axis=0))
    if rows.size == 0:
        none = np.zeros(0, dtype=np.int64)
        return InstanceMatch(none, none, np.zeros(0), iou.shape[0], iou.shape[1])
    sub = np.where(candidates[np.ix_(rows, cols)], iou[np.ix_(rows, cols)], 0.0)
    r, c = linear_sum_assignment(sub, maximize=True)
    keep = sub[r, c] >= threshold
    pred_index, ref_index = rows[r[keep]], cols[c[keep]]
    return InstanceMatch(pred_index, ref_index, iou[pred_index, ref_index], iou.shape[0], iou.shape[1])


def _conventional(key: str, n_pred: int, n_ref: int) -> float | None:
    value = conv.empty_value(key, n_pred == 0, n_ref == 0)
    return None if value is None else float(value)


def instance_metrics(match: InstanceMatch, keys=INSTANCE_METRICS) -> dict[str, float]:
    """Detection precision/recall/F1 and PQ/SQ/RQ of one matching (empty cases from the conventions table)."""
    tp, fp, fn = match.tp, match.fp, match.fn
    formulas = {
        "detection_precision": lambda: tp / (tp + fp),
        "detection_recall": lambda: tp / (tp + fn),
        "detection_f1": lambda: 2 * tp / (2 * tp + fp + fn),
        "rq": lambda: tp / (tp + 0.5 * fp + 0.5 * fn),
        "sq": lambda: float(match.iou.mean()) if tp else math.nan,
        "pq": lambda: float(match.iou.sum()) / (tp + 0.5 * fp + 0.5 * fn),
    }
    out = {}
    for key in keys:
        value = _conventional(key, match.n_pred, match.n_ref)
        out[key] = value if value is not None else float(formulas[key]())
    return out


def lesion_metrics(pred: np.ndarray, ref: np.ndarray, connectivity: int = conv.DEFAULT_INSTANCE_CONNECTIVITY,
                   keys=LESION_METRICS) -> dict[str, float]:
    """Lesion-wise Dice and F1 of two boolean masks, lesions being connected components.

    A reference lesion is detected when any predicted component touches it; its Dice is computed against the
    union of the predicted components touching it. Predicted components touching no lesion are false positives
    and count as lesions of Dice 0: lesion Dice = sum of lesion Dices / (reference lesions + false positives).
    """
    overlap = instance_overlap(label_instances(pred, connectivity), label_instances(ref, connectivity))
    n_ref, touching = overlap.ref_ids.size, overlap.intersection > 0
    fp = int(np.count_nonzero(~touching.any(axis=1)))
    detected = touching.any(axis=0)
    tp = int(np.count_nonzero(detected))
    dices = []
    for j in range(n_ref):
        parts = touching[:, j]
        intersection = overlap.intersection[parts, j].sum()
        dices.append(2 * intersection / (overlap.pred_sizes[parts].sum() + overlap.ref_sizes[j]))
    formulas = {"lesion_dice": lambda: float(np.sum(dices)) / (n_ref + fp),
                "lesion_f1": lambda: 2 * tp / (2 * tp + fp + (n_ref - tp))}
    out = {}
    for key in keys:
        value = _conventional(key, overlap.pred_ids.size, n_ref)
        out[key] = value if value is not None else float(formulas[key]())
    return out
