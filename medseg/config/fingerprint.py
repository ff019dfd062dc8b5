"""The dataset fingerprint that planning reads (``fingerprint.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1


@dataclass
class CaseFingerprint:
    """Shapes ``(z, y, x)`` / ``(y, x)`` and spacing (mm, same order) of one case before and after the crop to content
    (``medseg.planning.fingerprint.content_bbox``)."""

    case_id: str
    spacing: list[float]
    shape_before_crop: list[int]
    shape_after_crop: list[int]
    crop_bbox: list[list[int]]  # [[start, stop], ...] per spatial axis
    relative_size_after_crop: float
    class_voxels: dict[str, int]  # label value -> voxel count in this case


@dataclass
class IntensityStats:
    """Foreground intensity statistics of one channel, from a bounded sample of foreground voxels."""

    mean: float
    std: float
    min: float
    max: float
    median: float
    percentile_00_5: float
    percentile_99_5: float
    num_samples: int


@dataclass
class Fingerprint:
    """What planning needs to know about a dataset; spacings and shapes in array order ``(z, y, x)``.

    ``anisotropy`` is max/min of the median spacing; ``class_voxel_fraction`` is each label value's share of all
    voxels of all cases (before cropping); ``cases_with_class`` counts the cases in which a label value occurs.
    """

    dataset_name: str
    channel_names: list[str]
    labels: dict[str, Any]
    num_cases: int
    cases: list[CaseFingerprint]
    median_spacing: list[float]
    spacing_percentile_10: list[float]
    spacing_percentile_90: list[float]
    median_shape_after_crop: list[float]
    median_relative_size_after_crop: float
    anisotropy: float
    intensity: dict[str, IntensityStats]  # channel index -> stats
    class_voxel_fraction: dict[str, float]
    cases_with_class: dict[str, int]
    samples_per_case: int
    seed: int
    schema_version: int = SCHEMA_VERSION
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Fingerprint":
        data = dict(data)
        data["cases"] = [CaseFingerprint(**c) for c in data["cases"]]
        data["intensity"] = {k: IntensityStats(**v) for k, v in data["intensity"].items()}
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
