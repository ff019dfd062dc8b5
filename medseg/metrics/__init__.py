"""Segmentation metrics, 2D and 3D, in physical units: overlap, surface, topology, instance and calibration.

Conventions (empty masks, surface extraction, HD95 definition, units) are data in ``medseg.metrics.conventions``
and the table in ``docs/metrics.md``.
"""

from medseg.metrics.calibration import Reliability, brier_score, expected_calibration_error, reliability
from medseg.metrics.compute import ALL_METRICS, DEFAULT_METRICS, MetricAccumulator, MetricOptions
from medseg.metrics.compute import binary_metrics, case_metrics, classes_from_labels
from medseg.metrics.conventions import CONVENTIONS, MetricConvention, convention
from medseg.metrics.instance import InstanceMatch, InstanceOverlap, aggregated_jaccard, instance_metrics
from medseg.metrics.instance import instance_overlap, label_instances
from medseg.metrics.instance import lesion_metrics, match_instances
from medseg.metrics.overlap import Confusion, accuracy, confusion, dice, iou, overlap_metrics, precision, ravd
from medseg.metrics.overlap import mean_label_dice, recall, specificity, volume_similarity
from medseg.metrics.summary import bootstrap_ci, summarise
from medseg.metrics.surface import SurfaceDistances, assd, boundary_iou, directed_means, hausdorff
from medseg.metrics.surface import hausdorff_percentile, msd, nsd, surface_distances, surface_metrics
from medseg.metrics.topology import cldice

__all__ = [
    "ALL_METRICS", "CONVENTIONS", "Confusion", "DEFAULT_METRICS", "InstanceMatch", "InstanceOverlap",
    "MetricAccumulator", "MetricConvention", "MetricOptions", "Reliability", "SurfaceDistances", "accuracy",
    "aggregated_jaccard",
    "assd", "binary_metrics", "bootstrap_ci", "boundary_iou", "brier_score", "case_metrics", "classes_from_labels",
    "cldice", "confusion", "convention", "dice", "directed_means", "expected_calibration_error", "hausdorff",
    "hausdorff_percentile", "instance_metrics", "instance_overlap", "iou", "label_instances",
    "lesion_metrics", "match_instances", "mean_label_dice", "msd", "nsd", "overlap_metrics", "precision", "ravd",
    "recall", "reliability", "specificity", "summarise", "surface_distances", "surface_metrics", "volume_similarity",
]
