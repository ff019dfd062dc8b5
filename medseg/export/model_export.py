"""A trained model folder -> an exported folder (``medseg.config.onnx_folder``): every fold's network as ONNX,
each checked against torch, and ``pipeline.json`` with the pre- and post-processing, so that the folder alone
predicts (``medseg predict --engine onnxruntime``) what the model folder predicts with torch."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from medseg.atomic import atomic_folder
from medseg.config.model_folder import available_folds, medseg_version, read_segmentation_model
from medseg.config.onnx_folder import PIPELINE_JSON, OnnxFold, OnnxPipeline, onnx_file_name, write_pipeline
from medseg.config.plan import Plan
from medseg.errors import MedsegError
from medseg.export.onnx_network import (DEFAULT_TOLERANCE, DYNAMIC_EXAMPLE_BATCH, INPUT_NAME, OUTPUT_NAME,
                                        check_agreement, export_network, logits_difference)
from medseg.output_paths import prepare_output_dir
from medseg.weights_file import sha256_file


@dataclass
class ExportReport:
    """What ``export_model`` wrote."""

    output: Path
    configuration: str
    folds: list[OnnxFold]
    batch: int | None
    dynamic_spatial: bool
    opset: int
    notes: list[str] = field(default_factory=list)


def _require_exporter() -> None:
    """The packages an export needs beyond torch, or a MedsegError naming them."""
    import importlib.util

    from medseg.inference.onnx_engine import ONNX_FIX

    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise MedsegError(f"medseg export needs {', '.join(missing)}, which is not installed", fix=ONNX_FIX)


def _check_output(output: Path, model: Path, overwrite: bool) -> Path:
    """The output must be new, or (``overwrite``) an earlier export: never a folder of other files."""
    target = prepare_output_dir(output, inputs=[model], overwrite=True)
    if target.exists():
        if not overwrite:
            raise MedsegError("the output exists already", path=output,
                              fix="pass --overwrite to replace an earlier export, or choose a new folder")
        if not (target / PIPELINE_JSON).is_file() and any(target.iterdir()):
            raise MedsegError("the output holds files that are not an export (no pipeline.json); --overwrite "
                              "replaces only an earlier export", path=output, fix="choose a new folder")
    return target


def _replace_with(target: Path, build) -> None:
    """Build the export in a temporary sibling, then swap it in; a failed build leaves ``target`` as it was."""
    staged = target if not target.exists() else target.with_name(f"{target.name}.export-{os.getpid()}")
    with atomic_folder(staged) as partial:
        build(partial)
    if staged != target:
        retired = target.with_name(f".{target.name}.{os.getpid()}-replaced.partial")
        os.replace(target, retired)
        os.replace(staged, target)
        shutil.rmtree(retired, ignore_errors=True)


def export_model(model: str | Path, output: str | Path, *, dynamic: bool = False, opset: int | None = None,
                 batch: int = 1, folds: Sequence[int | str] | None = None, tolerance: float = DEFAULT_TOLERANCE,
                 overwrite: bool = False) -> ExportReport:
    """Export the segmentation model folder ``model`` to the folder ``output``.

    ``dynamic``: dynamic batch (and spatial size where the network traces symbolically); otherwise every network
    takes exactly ``(batch, C, *patch)``. Deep supervision is off. Each ONNX file passes ``onnx.checker`` and its
    onnxruntime logits on a random patch must match torch's within ``tolerance * max(1, max |logits|)``, else
    MedsegError and nothing is written. ``folds``: default every fold with weights.
    """
    from medseg.inference.onnx_engine import OnnxNetwork, open_session
    from medseg.inference.postprocess import FILE_NAME as POSTPROCESSING_JSON
    from medseg.config.json_files import read_json
    from medseg.nets.from_folder import load_network

    _require_exporter()
    model, output = Path(model), Path(output)
    if not model.is_dir():
        raise MedsegError("model folder not found", path=model, fix="pass the folder that medseg train wrote")
    if batch < 1:
        raise MedsegError(f"batch {batch} is not positive", fix="use --batch 1 or more")
    spec, plan, _ = read_segmentation_model(model)
    config = plan.configurations.get(spec.configuration or "")
    if config is None:
        raise MedsegError(f"configuration {spec.configuration!r} is not in plans.json", path=model,
                          fix="the model folder is inconsistent; retrain")
    if config.previous_stage:
        raise MedsegError(f"{config.name} is the second stage of a cascade; its input includes the first stage's "
                          "prediction, which an exported folder cannot make", path=model,
                          fix="export and predict a single-stage configuration (e.g. 3d_fullres)")
    chosen = [str(f) for f in folds] if folds else available_folds(model)
    if not chosen:
        raise MedsegError("no fold has weights", path=model, fix="train at least one fold first")
    target = _check_output(output, model, overwrite)
    shape = [batch if not dynamic else DYNAMIC_EXAMPLE_BATCH, spec.network.in_channels, *config.patch_size]
    networks = {fold: load_network(model, fold, spec=spec) for fold in chosen}  # every fold loads before any write
    postprocessing = read_json(model / POSTPROCESSING_JSON) if (model / POSTPROCESSING_JSON).is_file() else {}
    report = ExportReport(output, config.name, [], None if dynamic else batch, dynamic, 0)

    def build(folder: Path) -> None:
        for fold, network in networks.items():
            path = folder / onnx_file_name(fold)
            exported = export_network(network, shape, path, dynamic=dynamic, opset=opset)
            report.opset = exported.opset
            if exported.note:
                report.dynamic_spatial = False
                report.notes.append(f"fold {fold}: {exported.note}")
            adapter = OnnxNetwork(open_session(path), spatial_dims=config.spatial_dims,
                                  in_channels=spec.network.in_channels, num_classes=spec.network.num_classes,
                                  input_name=INPUT_NAME, output_name=OUTPUT_NAME, batch=report.batch)
            difference, scale = logits_difference(network, adapter, shape)
            check_agreement(difference, scale, tolerance, Path(model) / f"fold_{fold}")
            report.folds.append(OnnxFold(fold, path.name, sha256_file(path), difference))
        single = Plan.from_dict({**plan.to_dict(), "configurations": {config.name: plan.to_dict()["configurations"]
                                                                       [config.name]}})
        write_pipeline(folder, OnnxPipeline(
            single, config.name, list(spec.label_values), list(range(config.spatial_dims)), 0.5,
            postprocessing if isinstance(postprocessing, dict) else {}, spec.network.in_channels, INPUT_NAME,
            OUTPUT_NAME, report.batch, report.dynamic_spatial, report.opset,
            f"torch.onnx.export(dynamo=True), torch {torch.__version__}", str(model.resolve()), report.folds,
            tolerance, medseg_version()))

    _replace_with(target, build)
    return report
