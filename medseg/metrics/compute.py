"""Every requested metric of one case, per class or region: counts and distances computed once per (class, case)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from medseg.metrics import conventions as conv
from medseg.metrics.instance import INSTANCE_METRICS, LESION_METRICS, instance_overlap, instance_values
from medseg.metrics.instance import label_instances, lesion_metrics
from medseg.metrics.overlap import OVERLAP_METRICS, confusion, overlap_metrics
from medseg.metrics.surface import SURFACE_METRICS, boundary_iou, surface_distances, surface_metrics
from medseg.metrics.topology import cldice

#: What ``medseg evaluate`` computes unless told otherwise (clDice, boundary IoU and instance metrics on request).
DEFAULT_METRICS = OVERLAP_METRICS + SURFACE_METRICS
#: ... and for instance maps (``medseg evaluate --instances``).
INSTANCE_MAP_METRICS = ("pq", "detection_f1", "aji", "dice", "sq", "rq")
ALL_METRICS = OVERLAP_METRICS + SURFACE_METRICS + ("boundary_iou", "cldice") + INSTANCE_METRICS + LESION_METRICS


@dataclass(frozen=True)
class MetricOptions:
    """Conventions a caller may change; the defaults are the named defaults of ``medseg.metrics.conventions``."""

    metrics: tuple[str, ...] = DEFAULT_METRICS
    surface_mode: str = conv.DEFAULT_SURFACE_MODE
    surface_connectivity: int = conv.DEFAULT_SURFACE_CONNECTIVITY
    hd95_definition: str = conv.DEFAULT_HD95_DEFINITION
    percentile: float = conv.DEFAULT_PERCENTILE
    nsd_tolerance: float = conv.DEFAULT_NSD_TOLERANCE_MM
    boundary_width: float = conv.DEFAULT_BOUNDARY_WIDTH_MM
    instance_connectivity: int | None = conv.DEFAULT_INSTANCE_CONNECTIVITY
    match_iou: float = conv.DEFAULT_MATCH_IOU
    threads: int = 1

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in ALL_METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {', '.join(ALL_METRICS)}")
        if self.surface_mode not in ("voxel", "surfel"):
            raise ValueError(f"surface mode must be 'voxel' or 'surfel', got {self.surface_mode!r}")
        if self.hd95_definition not in conv.HD95_DEFINITIONS:
            raise ValueError(f"HD95 definition must be one of {conv.HD95_DEFINITIONS}, got {self.hd95_definition!r}")


def binary_metrics(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...] | None = None,
                   options: MetricOptions = MetricOptions(), roi: np.ndarray | None = None) -> dict[str, float]:
    """All metrics in ``options.metrics`` for two boolean masks ``(*spatial)`` with ``spacing`` in mm.

    With a ``roi``, voxels outside it are background in both masks and the overlap counts (TN, accuracy,
    specificity) are restricted to it.
    """
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    if roi is not None:
        roi = np.asarray(roi, dtype=bool)
        pred, ref = pred & roi, ref & roi
    wanted = options.metrics
    out: dict[str, float] = {}
    overlap_keys = [k for k in wanted if k in OVERLAP_METRICS]
    if overlap_keys:
        out.update(overlap_metrics(confusion(pred, ref, roi), overlap_keys))
    surface_keys = [k for k in wanted if k in SURFACE_METRICS]
    if surface_keys:
        sd = surface_distances(pred, ref, spacing, mode=options.surface_mode,
                               connectivity=options.surface_connectivity, threads=options.threads)
        out.update(surface_metrics(sd, surface_keys, percentile=options.percentile,
                                   hd95_definition=options.hd95_definition, nsd_tolerance=options.nsd_tolerance))
    if "boundary_iou" in wanted:
        out["boundary_iou"] = boundary_iou(pred, ref, spacing, width=options.boundary_width, threads=options.threads)
    if "cldice" in wanted:
        out["cldice"] = cldice(pred, ref)
    instance_keys = [k for k in wanted if k in INSTANCE_METRICS]
    if instance_keys:
        overlap = instance_overlap(label_instances(pred, options.instance_connectivity),
                                   label_instances(ref, options.instance_connectivity))
        out.update(instance_values(overlap, instance_keys, options.match_iou))
    lesion_keys = [k for k in wanted if k in LESION_METRICS]
    if lesion_keys:
        out.update(lesion_metrics(pred, ref, options.instance_connectivity, lesion_keys))
    return {k: out[k] for k in wanted}


def instance_map_metrics(pred_instances: np.ndarray, ref_instances: np.ndarray, spacing: tuple[float, ...] | None,
                         options: MetricOptions = MetricOptions()) -> dict[str, float]:
    """``options.metrics`` of two instance maps ``(*spatial)`` (0 background, every other value one object, e.g.
    touching nuclei): the instance metrics on the objects as they are (no connected components), every other
    metric on the foreground masks (``> 0``)."""
    if pred_instances.shape != ref_instances.shape:
        raise ValueError(f"prediction {pred_instances.shape} and reference {ref_instances.shape} differ in shape")
    wanted = options.metrics
    out: dict[str, float] = {}
    instance_keys = [k for k in wanted if k in INSTANCE_METRICS]
    if instance_keys:
        out.update(instance_values(instance_overlap(pred_instances, ref_instances), instance_keys, options.match_iou))
    rest = tuple(k for k in wanted if k not in INSTANCE_METRICS)
    if rest:
        out.update(binary_metrics(pred_instances > 0, ref_instances > 0, spacing, replace(options, metrics=rest)))
    return {k: out[k] for k in wanted}


def classes_from_labels(labels: list[int] | tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """One class per label value, named by the value: ``{"1": (1,), "2": (2,)}``."""
    return {str(int(v)): (int(v),) for v in labels}


def case_metrics(pred_labels: np.ndarray, ref_labels: np.ndarray, spacing: tuple[float, ...] | None,
                 classes: dict[str, tuple[int, ...]], options: MetricOptions = MetricOptions(),
                 roi: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Metrics of one case for each class or region: ``{name: {metric: value}}``.

    ``classes`` maps a name to the label values it unites, e.g. ``{"whole_tumor": (1, 2, 3, 4)}`` (a region) or
    ``{"1": (1,)}`` (a class). ``pred_labels`` / ``ref_labels`` are integer label maps ``(*spatial)``.
    """
    if pred_labels.shape != ref_labels.shape:
        raise ValueError(f"prediction {pred_labels.shape} and reference {ref_labels.shape} differ in shape")
    return {name: binary_metrics(np.isin(pred_labels, values), np.isin(ref_labels, values), spacing, options, roi)
            for name, values in classes.items()}


@dataclass
class MetricAccumulator:
    """Collects per-case metrics (``update``), then summarises them per class (``aggregate``); ``reset`` clears."""

    classes: dict[str, tuple[int, ...]]
    options: MetricOptions = MetricOptions()
    rows: list[dict] = field(default_factory=list)

    def update(self, case: str, pred_labels: np.ndarray, ref_labels: np.ndarray,
               spacing: tuple[float, ...] | None = None, roi: np.ndarray | None = None) -> list[dict]:
        """Compute one case; returns and keeps one row per class: ``{"case", "class", <metric>: value}``."""
        new = [{"case": case, "class": name, **values}
               for name, values in case_metrics(pred_labels, ref_labels, spacing, self.classes, self.options,
                                                roi).items()]
        self.rows.extend(new)
        return new

    def aggregate(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{class: {metric: {"mean", "sd", "median", "n", "n_nan", "n_inf"}}}`` over finite values."""
        from medseg.metrics.summary import summarise

        out: dict[str, dict[str, dict[str, float]]] = {}
        for name in self.classes:
            values = [r for r in self.rows if r["class"] == name]
            out[name] = {m: summarise([r[m] for r in values]) for m in self.options.metrics}
        return out

    def reset(self) -> None:
        self.rows.clear()
