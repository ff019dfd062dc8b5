"""Every metric convention as data: definition, unit, and the value for each empty-mask combination.

This table is the single source of truth: the metric functions read their empty-mask values from it,
``docs/metrics.md`` is generated from it (``render_markdown()``) and a test keeps the two in sync.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

NAN = math.nan
INF = math.inf

# --- global conventions -------------------------------------------------------------------------------------------
#: Surface extraction mode. ``"voxel"``: a surface voxel is a foreground voxel with at least one background
#: neighbour (the mask XOR its erosion), every surface voxel weighs 1 and sits at its centre (MONAI, medpy).
#: ``"surfel"``: marching-squares/cubes surface elements on the voxel-corner grid weighted by their length/area
#: in mm / mm² (DeepMind surface-distance).
DEFAULT_SURFACE_MODE = "voxel"
#: Neighbourhood of the erosion that defines surface voxels: 1 = faces (6 in 3D, 4 in 2D), ndim = full (26 / 8).
DEFAULT_SURFACE_CONNECTIVITY = 1
#: HD95 definition: ``"max"`` of the two directed 95th percentiles (MONAI, DeepMind, BraTS), ``"mean"`` of them,
#: or ``"pooled"``: the 95th percentile of the union of both directed distance sets (medpy).
DEFAULT_HD95_DEFINITION = "max"
HD95_DEFINITIONS = ("max", "mean", "pooled")
#: Percentile in voxel mode: linear interpolation between order statistics (numpy's default, ``torch.quantile``).
#: In surfel mode: the first distance whose cumulative area fraction reaches the percentile (DeepMind).
DEFAULT_PERCENTILE = 95.0
#: NSD / surface Dice tolerance tau in mm: a surface element counts as matched when its distance is <= tau.
DEFAULT_NSD_TOLERANCE_MM = 1.0
#: Boundary IoU band width in mm: the part of a mask within this distance of its own contour.
DEFAULT_BOUNDARY_WIDTH_MM = 2.0
#: Connectivity of connected components (instances, lesions): 1 = faces, ndim = full (26 in 3D, 8 in 2D);
#: None = full, whatever the dimension (cc3d's and scikit-image's default, and BraTS 2023's lesion-wise scoring).
DEFAULT_INSTANCE_CONNECTIVITY: int | None = None
#: Instance matching: one-to-one, maximum total IoU among pairs with IoU >= threshold (Hungarian algorithm);
#: for thresholds > 0.5 this is the unique matching of Kirillov et al. (panoptic quality).
DEFAULT_MATCH_IOU = 0.5
#: Calibration: equal-width confidence bins on [0, 1], bin i holds (edge_i, edge_i+1], the first bin includes 0.
DEFAULT_CALIBRATION_BINS = 15
#: Distances are float32 (the ``edt`` transform); ``d <= tau`` is evaluated as ``d <= tau * (1 + 1e-6)`` so that a
#: distance exactly equal to tau in exact arithmetic counts as inside, as it does in float64.
DISTANCE_TIE_SLACK = 1e-6


@dataclass(frozen=True)
class MetricConvention:
    """One row of the conventions table.

    ``both_empty`` / ``pred_empty`` / ``ref_empty``: the value when both masks / only the prediction / only the
    reference is empty (for instance metrics: no instances). ``None`` means the usual formula applies.
    """

    key: str
    name: str
    family: str
    unit: str
    higher_is_better: bool
    definition: str
    both_empty: float | None
    pred_empty: float | None
    ref_empty: float | None
    peers: str = ""


_OVERLAP = "overlap"
_SURFACE = "surface"

CONVENTIONS: tuple[MetricConvention, ...] = (
    # overlap, from tp/fp/fn/tn counted once; counts restricted to the ROI when one is given
    MetricConvention("dice", "Dice (F1)", _OVERLAP, "1", True, "2TP / (2TP + FP + FN)", 1.0, 0.0, 0.0,
                     "= MONAI DiceMetric, medpy dc"),
    MetricConvention("iou", "IoU / Jaccard", _OVERLAP, "1", True, "TP / (TP + FP + FN)", 1.0, 0.0, 0.0,
                     "= MONAI MeanIoU, medpy jc"),
    MetricConvention("precision", "precision (PPV)", _OVERLAP, "1", True, "TP / (TP + FP)", 1.0, NAN, 0.0,
                     "= medpy precision; 0/0 when only the prediction is empty: NaN"),
    MetricConvention("recall", "recall / sensitivity (TPR)", _OVERLAP, "1", True, "TP / (TP + FN)", 1.0, 0.0, NAN,
                     "= medpy recall; 0/0 when only the reference is empty: NaN"),
    MetricConvention("specificity", "specificity (TNR)", _OVERLAP, "1", True, "TN / (TN + FP)", None, None, None,
                     "= medpy specificity; NaN only when the reference covers the whole image (or ROI)"),
    MetricConvention("accuracy", "accuracy", _OVERLAP, "1", True, "(TP + TN) / N", None, None, None,
                     "N = voxels in the image (or ROI)"),
    MetricConvention("volume_similarity", "volume similarity", _OVERLAP, "1", True,
                     "1 - |FN - FP| / (2TP + FP + FN)", 1.0, 0.0, 0.0, "Taha & Hanbury 2015"),
    MetricConvention("ravd", "relative absolute volume difference", _OVERLAP, "1", False,
                     "| |P| - |R| | / |R|", 0.0, None, INF, "= |medpy ravd| (medpy returns the signed value)"),
    # surface, all from one pair of distance transforms
    MetricConvention("hd", "Hausdorff distance", _SURFACE, "mm", False,
                     "max(max d(P->R), max d(R->P))", 0.0, INF, INF, "= MONAI, medpy hd, DeepMind (surfel mode)"),
    MetricConvention("hd95", "95th-percentile Hausdorff distance", _SURFACE, "mm", False,
                     "max(p95 d(P->R), p95 d(R->P)) by default; 'mean' or 'pooled' on request",
                     0.0, INF, INF, "max = MONAI, DeepMind; pooled = medpy hd95"),
    MetricConvention("assd", "average symmetric surface distance", _SURFACE, "mm", False,
                     "(sum d(P->R) + sum d(R->P)) / (|dP| + |dR|) (pooled mean)", 0.0, INF, INF,
                     "= MONAI SurfaceDistanceMetric(symmetric=True), medpy 0.5 assd; Heimann 2009"),
    MetricConvention("msd", "mean surface distance", _SURFACE, "mm", False,
                     "(mean d(P->R) + mean d(R->P)) / 2 (mean of the two directed means)", 0.0, INF, INF,
                     "= mean of DeepMind compute_average_surface_distance (surfel mode); medpy < 0.5 called this assd"),
    MetricConvention("nsd", "normalised surface distance / surface Dice at tau", _SURFACE, "1", True,
                     "(|{d(P->R) <= tau}| + |{d(R->P) <= tau}|) / (|dP| + |dR|)", 1.0, 0.0, 0.0,
                     "voxel mode = MONAI SurfaceDiceMetric; surfel mode = DeepMind surface Dice"),
    MetricConvention("boundary_iou", "boundary IoU", _SURFACE, "1", True,
                     "|Pb & Rb| / |Pb | Rb|, Xb = X within w mm of its contour", 1.0, 0.0, 0.0, "Cheng et al. 2021"),
    # topology
    MetricConvention("cldice", "centreline Dice (clDice)", "topology", "1", True,
                     "2 Tprec Tsens / (Tprec + Tsens), Tprec = |S(P) & R| / |S(P)|, Tsens = |S(R) & P| / |S(R)|",
                     1.0, 0.0, 0.0, "Shit et al. 2021; skeletons by scikit-image skeletonize"),
    # instance
    MetricConvention("detection_precision", "detection precision", "instance", "1", True,
                     "matched / predicted instances (IoU >= t)", 1.0, NAN, 0.0),
    MetricConvention("detection_recall", "detection recall", "instance", "1", True,
                     "matched / reference instances (IoU >= t)", 1.0, 0.0, NAN),
    MetricConvention("detection_f1", "detection F1", "instance", "1", True, "2 TP / (2 TP + FP + FN)",
                     1.0, 0.0, 0.0),
    MetricConvention("pq", "panoptic quality", "instance", "1", True, "SQ x RQ", 1.0, 0.0, 0.0,
                     "= MONAI compute_panoptic_quality when no instance is empty"),
    MetricConvention("sq", "segmentation quality", "instance", "1", True, "mean IoU of matched pairs",
                     1.0, NAN, NAN, "NaN whenever nothing is matched"),
    MetricConvention("rq", "recognition quality", "instance", "1", True, "TP / (TP + FP/2 + FN/2)", 1.0, 0.0, 0.0),
    MetricConvention("aji", "aggregated Jaccard index (AJI)", "instance", "1", True,
                     "sum |G & S*(G)| / (sum |G | S*(G)| + sum of unmatched |S|), S*(G) the prediction of highest "
                     "IoU with reference instance G", 1.0, 0.0, 0.0, "Kumar et al. 2017 (MoNuSeg); not AJI+"),
    MetricConvention("lesion_dice", "lesion-wise Dice", "instance", "1", True,
                     "sum over reference lesions of Dice(lesion, touching predicted components) / (lesions + "
                     "predicted components touching no lesion)", 1.0, 0.0, 0.0, "BraTS 2023 style, no dilation"),
    MetricConvention("lesion_f1", "lesion-wise F1", "instance", "1", True,
                     "2 TP / (2 TP + FP + FN); TP = reference lesion touched by a prediction", 1.0, 0.0, 0.0),
    # probabilistic
    MetricConvention("ece", "expected calibration error", "probabilistic", "1", False,
                     "sum_b n_b / N |accuracy_b - confidence_b|, top-label confidence", None, None, None,
                     "Guo et al. 2017; NaN for zero voxels"),
    MetricConvention("brier", "Brier score", "probabilistic", "1", False,
                     "mean (p - y)^2 for a foreground probability; mean sum_c (p_c - y_c)^2 for (C, ...) input",
                     None, None, None, "NaN for zero voxels"),
    # several raters (medseg.metrics.raters): N samples of a probabilistic model vs M raters' maps of one case
    MetricConvention("ged", "generalised energy distance", "raters", "1", False,
                     "2 E[d(S, Y)] - E[d(S, S')] - E[d(Y, Y')], d = 1 - IoU averaged over the labels, all pairs "
                     "(a map with itself at 0)", 0.0, None, None, "Kohl et al. 2018 (probabilistic U-Net)"),
    MetricConvention("best_dice", "best-of-N Dice", "raters", "1", True,
                     "mean over raters of the highest Dice of any sample with that rater", 1.0, 0.0, 0.0),
    MetricConvention("rater_ece", "calibration against the raters", "raters", "1", False,
                     "ECE with the raters' vote share as the soft target: sum_b n_b / N |mean share_b - mean p_b|, "
                     "over the voxels where the probability or the share is above 0", 0.0, None, None,
                     "CURVAS-style; rater_brier, rater_mae beside it"),
)

BY_KEY: dict[str, MetricConvention] = {c.key: c for c in CONVENTIONS}


def convention(key: str) -> MetricConvention:
    """The convention row of metric ``key``; an unknown key raises ``KeyError`` listing the valid ones."""
    try:
        return BY_KEY[key]
    except KeyError:
        raise KeyError(f"unknown metric {key!r}; known: {', '.join(BY_KEY)}") from None


def empty_value(key: str, pred_empty: bool, ref_empty: bool) -> float | None:
    """The conventional value of ``key`` for this emptiness combination, or None when the formula applies."""
    row = convention(key)
    if pred_empty and ref_empty:
        return row.both_empty
    if pred_empty:
        return row.pred_empty
    if ref_empty:
        return row.ref_empty
    return None


def _cell(value: float | None) -> str:
    if value is None:
        return "formula"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf"
    return f"{value:g}"


def render_markdown() -> str:
    """The conventions table as Markdown (the table in ``docs/metrics.md`` is this text)."""
    lines = [
        "| metric | key | unit | better | definition | both empty | only pred empty | only ref empty | peers |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in CONVENTIONS:
        lines.append(
            f"| {row.name} | `{row.key}` | {row.unit} | {'higher' if row.higher_is_better else 'lower'} | "
            f"{row.definition.replace('|', '&#124;')} | {_cell(row.both_empty)} | {_cell(row.pred_empty)} | "
            f"{_cell(row.ref_empty)} | {row.peers} |"
        )
    return "\n".join(lines) + "\n"
