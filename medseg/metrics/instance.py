"""Instance metrics: connected components or instance maps, one-to-one matching at IoU >= t, detection
precision/recall/F1, panoptic quality (PQ = SQ x RQ), the aggregated Jaccard index (AJI), and lesion-wise
Dice / F1."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medseg.metrics import conventions as conv
from medseg.metrics.surface import union_box

MATCHED_METRICS = ("detection_precision", "detection_recall", "detection_f1", "pq", "sq", "rq")  # of a matching
INSTANCE_METRICS = MATCHED_METRICS + ("aji",)
LESION_METRICS = ("lesion_dice", "lesion_f1")


def label_instances(mask: np.ndarray,
                    connectivity: int | None = conv.DEFAULT_INSTANCE_CONNECTIVITY) -> np.ndarray:
    """Connected components of a boolean mask ``(*spatial)`` as an instance map (0 background, 1..n), via cc3d.

    ``connectivity`` 1 = faces (4 in 2D, 6 in 3D), ``ndim`` or None = full neighbourhood (8 / 26).
    """
    import cc3d

    mask = np.asarray(mask, dtype=bool)
    connectivity = mask.ndim if connectivity is None else connectivity
    neighbours = {(2, 1): 4, (2, 2): 8, (3, 1): 6, (3, 2): 18, (3, 3): 26}[(mask.ndim, connectivity)]
    return cc3d.connected_components(mask.view(np.uint8), connectivity=neighbours)


@dataclass(frozen=True)
class InstanceOverlap:
    """Instance sizes and the intersections of every overlapping (prediction, reference) pair, stored sparsely.

    ``pair_pred[k]`` / ``pair_ref[k]`` index ``pred_ids`` / ``ref_ids``; ``pair_intersection[k]`` > 0 voxels.
    """

    pred_ids: np.ndarray           # (Np,)
    ref_ids: np.ndarray            # (Nr,)
    pred_sizes: np.ndarray         # (Np,) voxels
    ref_sizes: np.ndarray          # (Nr,) voxels
    pair_pred: np.ndarray          # (K,)
    pair_ref: np.ndarray           # (K,)
    pair_intersection: np.ndarray  # (K,) voxels

    @property
    def pair_iou(self) -> np.ndarray:
        union = self.pred_sizes[self.pair_pred] + self.ref_sizes[self.pair_ref] - self.pair_intersection
        return self.pair_intersection / union


def instance_overlap(pred_instances: np.ndarray, ref_instances: np.ndarray) -> InstanceOverlap:
    """Sizes and pairwise intersections of two instance maps ``(*spatial)`` (0 = background), found on the bounding
    box of both; memory grows with the number of overlapping pairs, not with Np x Nr."""
    box = union_box(pred_instances, ref_instances)
    if box is None:
        nothing = np.zeros(0, dtype=np.int64)
        return InstanceOverlap(nothing, nothing, nothing, nothing, nothing, nothing, nothing)
    pred_ids, p_index = np.unique(pred_instances[box].ravel(), return_inverse=True)
    ref_ids, r_index = np.unique(ref_instances[box].ravel(), return_inverse=True)
    codes, counts = np.unique(p_index.astype(np.int64) * ref_ids.size + r_index, return_counts=True)
    pair_pred, pair_ref = np.divmod(codes, ref_ids.size)
    p_shift, r_shift = int(pred_ids[0] == 0), int(ref_ids[0] == 0)  # drop background, the smallest id
    both = (pair_pred >= p_shift) & (pair_ref >= r_shift)
    return InstanceOverlap(
        pred_ids=pred_ids[p_shift:], ref_ids=ref_ids[r_shift:],
        pred_sizes=np.bincount(p_index, minlength=pred_ids.size)[p_shift:],
        ref_sizes=np.bincount(r_index, minlength=ref_ids.size)[r_shift:],
        pair_pred=pair_pred[both] - p_shift, pair_ref=pair_ref[both] - r_shift, pair_intersection=counts[both],
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
    """Match instances one-to-one among pairs with IoU >= ``threshold``, maximising the total IoU (Hungarian).

    Above 0.5 the candidate pairs are already one-to-one (Kirillov et al.) and are taken as they are.
    """
    from scipy.optimize import linear_sum_assignment

    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"IoU threshold must be in (0, 1], got {threshold}")
    n_pred, n_ref = overlap.pred_ids.size, overlap.ref_ids.size
    iou = overlap.pair_iou
    keep = iou >= threshold
    pred_index, ref_index, iou = overlap.pair_pred[keep], overlap.pair_ref[keep], iou[keep]
    if threshold <= 0.5 and iou.size:
        rows, row_of = np.unique(pred_index, return_inverse=True)
        cols, col_of = np.unique(ref_index, return_inverse=True)
        dense = np.zeros((rows.size, cols.size))
        dense[row_of, col_of] = iou
        r, c = linear_sum_assignment(dense, maximize=True)
        chosen = dense[r, c] >= threshold
        pred_index, ref_index, iou = rows[r[chosen]], cols[c[chosen]], dense[r[chosen], c[chosen]]
    return InstanceMatch(pred_index, ref_index, iou, n_pred, n_ref)


def _conventional(key: str, n_pred: int, n_ref: int) -> float | None:
    value = conv.empty_value(key, n_pred == 0, n_ref == 0)
    return None if value is None else float(value)


def aggregated_jaccard(overlap: InstanceOverlap) -> float:
    """AJI (Kumar et al. 2017, MoNuSeg's metric): every reference instance G takes the predicted instance S of
    highest IoU with it (the lowest index on a tie; none when nothing overlaps): C += |G & S|, U += |G | S| (|G|
    alone without one); then U += |S| for every predicted instance no reference took. AJI = C / U. As in the
    paper, one predicted instance may be taken by several reference instances (and then counts in U each time);
    empty cases follow the conventions table (1 when both are empty, else 0)."""
    value = _conventional("aji", overlap.pred_ids.size, overlap.ref_ids.size)
    if value is not None:
        return value
    iou = overlap.pair_iou
    order = np.lexsort((overlap.pair_pred, -iou, overlap.pair_ref))  # per reference: highest IoU first
    refs = overlap.pair_ref[order]
    first = order[np.r_[True, refs[1:] != refs[:-1]]] if order.size else order
    taken_pred, taken_ref = overlap.pair_pred[first], overlap.pair_ref[first]
    intersection = overlap.pair_intersection[first].astype(np.float64)
    union = overlap.ref_sizes[taken_ref] + overlap.pred_sizes[taken_pred] - intersection
    untaken_refs = np.setdiff1d(np.arange(overlap.ref_ids.size), taken_ref)
    untaken_preds = np.setdiff1d(np.arange(overlap.pred_ids.size), taken_pred)
    total_union = union.sum() + overlap.ref_sizes[untaken_refs].sum() + overlap.pred_sizes[untaken_preds].sum()
    return float(intersection.sum() / total_union)


def instance_values(overlap: InstanceOverlap, keys=INSTANCE_METRICS, match_iou: float = conv.DEFAULT_MATCH_IOU
                    ) -> dict[str, float]:
    """``keys`` of ``INSTANCE_METRICS`` for two instance maps' overlap: the matched ones at IoU >= ``match_iou``,
    AJI from the overlap itself."""
    out = {}
    matched = [k for k in keys if k in MATCHED_METRICS]
    if matched:
        out.update(instance_metrics(match_instances(overlap, match_iou), matched))
    if "aji" in keys:
        out["aji"] = aggregated_jaccard(overlap)
    return {k: out[k] for k in keys}


def instance_metrics(match: InstanceMatch, keys=MATCHED_METRICS) -> dict[str, float]:
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


def lesion_metrics(pred: np.ndarray, ref: np.ndarray, connectivity: int | None = conv.DEFAULT_INSTANCE_CONNECTIVITY,
                   keys=LESION_METRICS) -> dict[str, float]:
    """Lesion-wise Dice and F1 of two boolean masks, lesions being connected components.

    A reference lesion is detected when any predicted component touches it; its Dice is computed against the
    union of the predicted components touching it. Predicted components touching no lesion are false positives
    and count as lesions of Dice 0: lesion Dice = sum of lesion Dices / (reference lesions + false positives).
    """
    overlap = instance_overlap(label_instances(pred, connectivity), label_instances(ref, connectivity))
    n_pred, n_ref = overlap.pred_ids.size, overlap.ref_ids.size
    fp = n_pred - np.unique(overlap.pair_pred).size
    tp = np.unique(overlap.pair_ref).size
    intersection = np.bincount(overlap.pair_ref, weights=overlap.pair_intersection, minlength=n_ref)
    touching_size = np.bincount(overlap.pair_ref, weights=overlap.pred_sizes[overlap.pair_pred], minlength=n_ref)
    dices = 2 * intersection / (touching_size + overlap.ref_sizes)
    formulas = {"lesion_dice": lambda: float(np.sum(dices)) / (n_ref + fp),
                "lesion_f1": lambda: 2 * tp / (2 * tp + fp + (n_ref - tp))}
    out = {}
    for key in keys:
        value = _conventional(key, overlap.pred_ids.size, n_ref)
        out[key] = value if value is not None else float(formulas[key]())
    return out
