"""The exported-model folder contract (what ``medseg export`` writes and ``medseg predict --engine onnxruntime``
reads): every fold's network as ONNX plus ``pipeline.json``, everything prediction needs besides the networks.

Layout::

    OUT/
      pipeline.json     OnnxPipeline: the plan (its one configuration: patch size, spacing, normalisation,
                        resampling), label values, mirroring axes, window step, post-processing, the networks'
                        input/output names and shapes, and one record per fold (file, sha256, export check)
      fold_K.onnx       fold K's network, ``image (B, C, *patch)`` float32 -> ``logits (B, K, *patch)``; one
                        self-contained file (weights inside), its sha256 checked on every load
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medseg.config.json_files import read_json, write_json_atomic
from medseg.config.plan import Configuration, Plan
from medseg.errors import MedsegError

SCHEMA_VERSION = 1
PIPELINE_JSON = "pipeline.json"
FORMAT = "medseg-onnx"
NOT_EXPORTED_FIX = "pass the folder that medseg export wrote (medseg export MODEL -o OUT)"


def onnx_file_name(fold: str) -> str:
    return f"fold_{fold}.onnx"


@dataclass
class OnnxFold:
    """One exported fold: its file, the file's sha256, and the export check (onnxruntime vs torch logits on a
    random patch: the largest absolute difference)."""

    fold: str
    file: str
    sha256: str
    max_abs_diff: float


@dataclass
class OnnxPipeline:
    """``pipeline.json``. ``batch``: the networks' batch size, None when dynamic; ``dynamic_spatial``: the
    networks take any spatial size the architecture allows (else only ``patch_size``)."""

    plan: Plan
    configuration: str
    label_values: list[int]
    mirror_axes: list[int]
    step: float
    postprocessing: dict[str, Any]
    in_channels: int
    input_name: str
    output_name: str
    batch: int | None
    dynamic_spatial: bool
    opset: int
    exporter: str
    source_model: str
    folds: list[OnnxFold]
    tolerance: float
    medseg_version: str = ""
    schema_version: int = SCHEMA_VERSION
    format: str = FORMAT

    @property
    def config(self) -> Configuration:
        return self.plan.configurations[self.configuration]

    @property
    def postprocess_labels(self) -> list[int]:
        return [int(v) for v in self.postprocessing.get("keep_largest_component", [])]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["plan"] = self.plan.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> "OnnxPipeline":
        if data.get("format") != FORMAT:
            raise MedsegError(f"not a medseg ONNX pipeline (format {data.get('format')!r})", path=path,
                              fix=NOT_EXPORTED_FIX)
        version = data.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise MedsegError(f"pipeline.json schema_version {version!r} is not one this medseg reads "
                              f"(<= {SCHEMA_VERSION})", path=path, fix="upgrade medseg, or export again")
        try:
            values = dict(data)
            values["plan"] = Plan.from_dict(values["plan"], path=path)
            values["folds"] = [OnnxFold(str(f["fold"]), str(f["file"]), str(f["sha256"]), float(f["max_abs_diff"]))
                               for f in values["folds"]]
            pipeline = cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})
        except (KeyError, TypeError, ValueError) as error:
            raise MedsegError(f"pipeline.json is incomplete or malformed ({type(error).__name__}: {error})",
                              path=path, fix="export the model again") from None
        if pipeline.configuration not in pipeline.plan.configurations or not pipeline.folds:
            raise MedsegError("pipeline.json names no exported configuration or fold", path=path,
                              fix="export the model again")
        return pipeline


def write_pipeline(folder: str | Path, pipeline: OnnxPipeline) -> Path:
    return write_json_atomic(pipeline.to_dict(), Path(folder) / PIPELINE_JSON)


def read_pipeline(folder: str | Path) -> OnnxPipeline:
    """``folder/pipeline.json`` -> ``OnnxPipeline``; a folder without one (a model folder, say) -> MedsegError."""
    folder = Path(folder)
    path = folder / PIPELINE_JSON
    if not path.is_file():
        hint = "; this is a model folder: export it first with medseg export " + str(folder) + " -o OUT" \
            if (folder / "model.json").is_file() else ""
        raise MedsegError("not an exported model folder (no pipeline.json)" + hint, path=folder, fix=NOT_EXPORTED_FIX)
    data = read_json(path)
    if not isinstance(data, dict):
        raise MedsegError("pipeline.json is not a JSON object", path=path, fix=NOT_EXPORTED_FIX)
    return OnnxPipeline.from_dict(data, path)


__all__ = ["OnnxFold", "OnnxPipeline", "PIPELINE_JSON", "onnx_file_name", "read_pipeline", "write_pipeline"]
