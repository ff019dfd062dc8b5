"""``MODEL/calibration.json``: the probability calibration of a segmentation model folder (``medseg calibrate``).

Calibrated class probabilities are ``softmax(scale * log(max(p, LOG_FLOOR)) + bias)`` over the class channels,
where ``p`` are the model's own (fold-averaged) softmax probabilities: temperature scaling has
``scale = 1 / T`` for every class and ``bias = 0`` (the argmax never changes), vector scaling one scale and one
bias per class (Guo et al. 2017). ``log p`` differs from the network's logits by one constant per voxel, which the
softmax ignores, so temperature scaling of ``log p`` is temperature scaling of the logits; working on ``log p``
lets the fit use the cross-validation probabilities that ``medseg train`` stores (``fold_K/validation/<case>.npz``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medseg.config.json_files import read_json, write_json_atomic
from medseg.errors import MedsegError

SCHEMA_VERSION = 1
CALIBRATION_JSON = "calibration.json"
METHODS = ("temperature", "vector")
LOG_FLOOR = 1e-7  # probabilities below this count as this much before the log (float16 files hold down to 6e-8)


@dataclass
class CalibrationSpec:
    """Per-class ``scale`` and ``bias`` (``len == len(label_values)``) and what they were fitted on."""

    method: str
    label_values: list[int]
    scale: list[float]
    bias: list[float]
    fitted_on: dict[str, Any] = field(default_factory=dict)  # cases, voxels, folds, seed
    figures: dict[str, Any] = field(default_factory=dict)  # nll / ece / brier before and after, on the fit voxels
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise MedsegError(f"unknown calibration method {self.method!r}", fix=f"use one of {', '.join(METHODS)}")
        if not len(self.scale) == len(self.bias) == len(self.label_values):
            raise MedsegError(f"{len(self.scale)} scales and {len(self.bias)} biases for {len(self.label_values)} "
                              "classes", fix="one scale and one bias per class; recalibrate")

    @property
    def temperature(self) -> float | None:
        """``T`` of temperature scaling (None for vector scaling)."""
        return 1.0 / self.scale[0] if self.method == "temperature" else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> CalibrationSpec:
        try:
            version = int(data.get("schema_version", SCHEMA_VERSION))
            if version > SCHEMA_VERSION:
                raise MedsegError(f"calibration.json schema_version {version} is newer than this medseg's "
                                  f"({SCHEMA_VERSION})", path=path, fix="upgrade medseg")
            return cls(str(data["method"]), [int(v) for v in data["label_values"]],
                       [float(v) for v in data["scale"]], [float(v) for v in data["bias"]],
                       dict(data.get("fitted_on") or {}), dict(data.get("figures") or {}))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise MedsegError(f"calibration.json is incomplete or malformed ({type(error).__name__}: {error})",
                              path=path, fix="run medseg calibrate MODEL -d DATASET again") from None


def write_calibration(model: str | Path, spec: CalibrationSpec) -> Path:
    return write_json_atomic(spec.to_dict(), Path(model) / CALIBRATION_JSON)


def read_calibration(model: str | Path, label_values: list[int] | None = None) -> CalibrationSpec | None:
    """``MODEL/calibration.json`` or None when the model has none; ``label_values``: the model's, which the
    calibration must have been fitted for."""
    path = Path(model) / CALIBRATION_JSON
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict):
        raise MedsegError("calibration.json is not a JSON object", path=path, fix="run medseg calibrate again")
    spec = CalibrationSpec.from_dict(data, path)
    if label_values is not None and list(label_values) != spec.label_values:
        raise MedsegError(f"calibrated for labels {spec.label_values}, the model predicts {list(label_values)}",
                          path=path, fix="run medseg calibrate MODEL -d DATASET again, or delete the file")
    return spec
