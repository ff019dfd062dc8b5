"""The plan (``plans.json``): configurations fitted to a dataset, a device and a time budget."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


@dataclass
class Decision:
    """One planning decision with its reason, so a user can see why a plan looks as it does."""

    field: str
    value: Any
    reason: str


@dataclass
class Normalization:
    """Per-channel intensity normalisation.

    ``scheme``: ``"ct"`` (clip to ``clip`` then ``(x - mean) / std`` with dataset-wide foreground statistics),
    ``"zscore"`` (per image; inside the content mask when ``use_mask``), ``"rgb"`` (``x / 255``), ``"rescale01"``
    (per image, ``(x - min) / (max - min)``), ``"none"``.
    """

    scheme: str
    use_mask: bool = False
    clip: list[float] | None = None
    mean: float | None = None
    std: float | None = None


@dataclass
class Configuration:
    """One way to train on the dataset (``2d``, ``2.5d``, ``3d_fullres``, ``3d_lowres``, ``3d_cascade_fullres``).

    Spatial lists are in array order ``(z, y, x)`` or ``(y, x)``; ``target_spacing`` in mm. ``network`` holds the
    arguments of ``medseg.nets.create(network_name, ...)`` (``spatial_dims``, ``in_channels`` and ``num_classes``
    among them; the planned ``plan_unet`` unless ``--network`` chose another); ``num_iterations`` is what the time budget allows at
    ``estimated_step_seconds`` per training step. ``slice_context``: for a 2D configuration of 3D data, the
    neighbouring slices on each side of a slice that join its input as channels (2.5D: ``k = 1 + 2 * slice_context``
    slices per image channel, channel-major, ``c * k + j`` is channel ``c`` at offset ``j - slice_context``, edge
    slices repeated at the volume's ends); the network predicts the centre slice. 0: one slice (``2d``).
    ``raters``: a probabilistic configuration's raters per case; their label maps are cached one-hot (the
    foreground labels' channels of rater 1, then rater 2, ...) as the last channels of each case's data, the
    targets that training draws one rater from per patch. 0: one label map per case.
    """

    name: str
    spatial_dims: int
    target_spacing: list[float]
    median_shape: list[int]
    normalization: list[Normalization]
    resampling: dict[str, Any]
    patch_size: list[int]
    batch_size: int
    network: dict[str, Any]
    estimated_memory_bytes: int
    estimated_step_seconds: float
    num_iterations: int
    previous_stage: str | None = None
    decisions: list[Decision] = field(default_factory=list)
    network_name: str = "plan_unet"  # the registry network ``network`` holds the arguments of
    slice_context: int = 0
    instances: bool = False
    raters: int = 0

    def decide(self, field_name: str, value: Any, reason: str) -> None:
        self.decisions.append(Decision(field_name, value, reason))


@dataclass
class Plan:
    """``dataset``: which dataset the plan was made for (``medseg.data.validate.dataset_record``: name, channels,
    labels, digests of the case ids and files); None in plans written before plans recorded it."""

    dataset_name: str
    channel_names: list[str]
    labels: dict[str, Any]
    device: str
    budget_seconds: float | None
    memory_bytes: int
    calibration: dict[str, Any]
    configurations: dict[str, Configuration]
    overrides: list[str] = field(default_factory=list)
    dataset: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, path: str | Path | None = None) -> "Plan":
        """The plan of a parsed ``plans.json`` (``path``: that file, named in the ``MedsegError`` that a field of
        the wrong type or value gives; ``medseg.config.plan_check``)."""
        from medseg.config.plan_check import check_plan_dict

        check_plan_dict(data, path=path, schema_version=SCHEMA_VERSION)
        data = dict(data)
        configurations = {}
        for name, raw in data["configurations"].items():
            raw = dict(raw)
            raw["normalization"] = [Normalization(**n) for n in raw["normalization"]]
            raw["decisions"] = [Decision(**d) for d in raw.get("decisions", [])]
            configurations[name] = Configuration(**raw)
        data["configurations"] = configurations
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
