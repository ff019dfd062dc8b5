"""``medseg import nnunet``: an nnU-Net v2 trained model folder -> a medseg model folder that ``Predictor`` loads.

Input: ``RESULTS/DatasetXXX_Name/TRAINER__PLANS__CONFIGURATION/`` with ``plans.json``, ``dataset.json`` and
``fold_K/<checkpoint>`` (default ``checkpoint_final.pth``). Output: ``model.json`` (ModelSpec, task
segmentation), ``plans.json`` (a medseg Plan with the one imported configuration), ``dataset_spec.json`` and
``fold_K/weights.safetensors`` + ``weights.json``, built in a temporary folder and renamed when complete.

Checkpoints are read with ``torch.load(weights_only=True)`` only: a checkpoint that needs unpickling code is
refused, never executed. Nothing of nnU-Net or dynamic_network_architectures is imported; the plans'
``architecture`` is rebuilt as medseg's ``plan_unet`` / ``plan_resenc_unet`` (:mod:`medseg.importers.nnunet_plan`)
and the weights renamed onto it (:mod:`medseg.importers.nnunet_weights`).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from medseg.atomic import atomic_folder
from medseg.config import DatasetSpec, Plan, read_json
from medseg.config.model_folder import (MODEL_JSON, ModelSpec, WeightsCard, plan_network_spec,
                                        write_fold_weights, write_segmentation_model)
from medseg.errors import MedsegError
from medseg.importers.nnunet_plan import ImportedConfiguration, import_configuration, label_values
from medseg.importers.nnunet_weights import map_state_dict
from medseg.output_paths import prepare_output_dir

logger = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = "checkpoint_final.pth"
NOT_NNUNET_FIX = ("pass an nnU-Net v2 trained model folder: nnUNet_results/DatasetXXX_Name/"
                  "TRAINER__PLANS__CONFIGURATION (plans.json, dataset.json, fold_K/checkpoint_final.pth)")
RESAVE_FIX = ("in an environment you trust (nnU-Net installed), keep only tensors and plain values: "
              "c = torch.load(PATH, weights_only=False); torch.save({'network_weights': c['network_weights'], "
              "'inference_allowed_mirroring_axes': c.get('inference_allowed_mirroring_axes'), "
              "'trainer_name': c.get('trainer_name')}, PATH)")


@dataclass
class ImportReport:
    """What ``import_nnunet`` wrote and what medseg reproduces only approximately (``notes``)."""

    output: Path
    configuration: str
    network: str
    folds: list[str]
    label_values: list[int]
    mirror_axes: list[int] | None
    notes: list[str] = field(default_factory=list)


@dataclass
class _Fold:
    name: str
    checkpoint: Path
    content: dict[str, Any]


def _require_nnunet_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise MedsegError("not a folder", path=folder, fix=NOT_NNUNET_FIX)
    missing = [name for name in ("plans.json", "dataset.json") if not (folder / name).is_file()]
    if missing:
        raise MedsegError(f"not an nnU-Net model folder (no {' or '.join(missing)})", path=folder, fix=NOT_NNUNET_FIX)


def _chosen_folds(folder: Path, folds: Sequence[str] | None, checkpoint: str) -> list[tuple[str, Path]]:
    present = sorted(p.name.removeprefix("fold_") for p in folder.glob("fold_*") if (p / checkpoint).is_file())
    if not folds:
        if not present:
            raise MedsegError(f"not an nnU-Net model folder (no fold_*/{checkpoint})", path=folder,
                              fix=NOT_NNUNET_FIX + "; or name the checkpoint with --checkpoint")
        return [(name, folder / f"fold_{name}" / checkpoint) for name in present]
    chosen = []
    for name in (str(f) for f in folds):
        path = folder / f"fold_{name}" / checkpoint
        if not path.is_file():
            raise MedsegError(f"fold {name} has no {checkpoint}", path=path,
                              fix=f"choose among the folds with it: {', '.join(present) or '(none)'}")
        chosen.append((name, path))
    return chosen


def _numpy_scalar_globals() -> list[Any]:
    """What a plain nnU-Net checkpoint holds besides tensors and Python values: numpy scalars (its logged Dice,
    ``_best_ema``), i.e. numpy's scalar constructor and dtypes. They rebuild a number from bytes and run no
    other code, so ``weights_only=True`` may allow them."""
    import numpy as np

    multiarray = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
    dtypes = getattr(np, "dtypes", None)
    classes = [getattr(dtypes, n) for n in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType")
               if dtypes is not None and hasattr(dtypes, n)]
    return [multiarray.multiarray.scalar, np.dtype, *classes]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """An nnU-Net checkpoint read with ``torch.load(weights_only=True)``: tensors, plain values and numpy scalars
    only (:func:`_numpy_scalar_globals`); anything else that it would have to unpickle is refused."""
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        needs_code = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
        if not needs_code:
            raise MedsegError(f"not a readable PyTorch checkpoint ({str(error).splitlines()[-1][:160]})", path=path,
                              fix="pass the checkpoint nnU-Net wrote, or restore the file") from None
        raise MedsegError(f"the checkpoint needs code to be unpickled, which medseg never runs "
                          f"({needs_code[0][:200]})", path=path, fix=RESAVE_FIX) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise MedsegError(f"not a readable PyTorch checkpoint ({type(error).__name__}: {str(error)[:160]})",
                          path=path, fix="pass the checkpoint nnU-Net wrote, or restore the file") from None
    if not isinstance(content, dict) or not isinstance(content.get("network_weights"), dict):
        raise MedsegError("not an nnU-Net checkpoint (no network_weights)", path=path, fix=NOT_NNUNET_FIX)
    return content


def _configuration_name(folder: Path, folds: list[_Fold]) -> str:
    parts = folder.name.split("__")
    if len(parts) == 3 and parts[2]:
        return parts[2]
    stored = (folds[0].content.get("init_args") or {}).get("configuration")
    if isinstance(stored, str) and stored:
        return stored
    raise MedsegError("cannot tell the configuration: the folder is not named TRAINER__PLANS__CONFIGURATION and "
                      "the checkpoint does not say", path=folder, fix=NOT_NNUNET_FIX)


def _mirror_axes(folds: list[_Fold], transpose: list[int], spatial_dims: int) -> list[int] | None:
    """The checkpoint's ``inference_allowed_mirroring_axes`` in image axis order; None: no mirroring."""
    axes = folds[0].content.get("inference_allowed_mirroring_axes", tuple(range(spatial_dims)))
    if axes is None:
        return None
    return sorted(transpose[int(a)] for a in axes)


def _dataset_spec(dataset: dict[str, Any], name: str) -> DatasetSpec:
    channels = dataset.get("channel_names") or dataset.get("modality") or {}
    return DatasetSpec(name, [str(channels[k]) for k in sorted(channels, key=int)],
                       {str(k): int(v) for k, v in dataset["labels"].items()}, str(dataset.get("file_ending", "")),
                       int(dataset.get("numTraining", 0)), str(dataset.get("description", "")),
                       str(dataset.get("reference", "")), str(dataset.get("licence", dataset.get("license", ""))))


def _model_spec(imported: ImportedConfiguration, values: list[int], dataset: DatasetSpec, folder: Path,
                folds: list[_Fold], mirror_axes: list[int] | None, notes: list[str]) -> ModelSpec:
    first = folds[0].content
    card = WeightsCard.now(training_data=[dataset.name], training_cases=dataset.num_training,
                           licence="the licences of the training data and of the nnU-Net model apply")
    extra = {"imported_from": {
        "tool": "nnU-Net v2", "folder": str(folder), "trainer": first.get("trainer_name"),
        "configuration": imported.configuration.name, "folds": [f.name for f in folds],
        "checkpoints": [f.checkpoint.name for f in folds], "epoch": first.get("current_epoch"),
        "transpose_forward": imported.transpose_forward,
        "inference_allowed_mirroring_axes": first.get("inference_allowed_mirroring_axes"),
        "mirror_axes": mirror_axes, "notes": notes}}
    network = plan_network_spec(imported.configuration.network, imported.network_name)
    return ModelSpec("segmentation", network, values, imported.configuration.name, card, extra)


def _check_weights(spec: ModelSpec, state: dict[str, Any], checkpoint: Path) -> None:
    """Build the medseg network and load the mapped weights (strict), so a mismatch fails before any write."""
    from medseg.nets.from_folder import build_network

    network = build_network(spec)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise MedsegError(f"the weights do not fit the network of plans.json ({str(error).splitlines()[0][:200]})",
                          path=checkpoint, fix="pass the plans.json this checkpoint was trained with") from None


def _write_folder(output: Path, write: Any) -> None:
    """Build the model in a temporary sibling and rename it to ``output``; an existing ``output`` (``--overwrite``
    was given) is replaced only once the new folder is complete."""
    if not output.exists():
        with atomic_folder(output) as partial:
            write(partial)
        return
    staged = output.with_name(f"{output.name}.import-{os.getpid()}")
    with atomic_folder(staged) as partial:
        write(partial)
    old = output.with_name(f".{output.name}.{os.getpid()}-replaced.partial")
    os.replace(output, old)
    os.replace(staged, output)
    shutil.rmtree(old, ignore_errors=True)


def import_nnunet(results_folder: str | Path, output: str | Path, *, folds: Sequence[str | int] | None = None,
                  checkpoint: str = DEFAULT_CHECKPOINT, overwrite: bool = False) -> ImportReport:
    """Import the nnU-Net v2 model in ``results_folder`` (``TRAINER__PLANS__CONFIGURATION``) into ``output``.

    ``folds``: ``["0", "1"]``, ``["all"]``; default every ``fold_*`` with ``checkpoint``. ``overwrite``: replace
    an existing medseg model in ``output``. Raises ``MedsegError`` (nothing written) for a folder that is not an
    nnU-Net model, a checkpoint that needs unpickling code, a network class, normalisation or label set medseg
    cannot represent."""
    folder = Path(results_folder)
    _require_nnunet_folder(folder)
    plans_path, dataset_path = folder / "plans.json", folder / "dataset.json"
    plans, dataset = read_json(plans_path), read_json(dataset_path)
    if not isinstance(plans, dict) or not isinstance(dataset, dict):
        raise MedsegError("plans.json or dataset.json is not a JSON object", path=folder, fix=NOT_NNUNET_FIX)
    chosen = _chosen_folds(folder, [str(f) for f in folds] if folds else None, checkpoint)
    fold_names = [f"fold_{name}" for name, _ in chosen]
    names = [MODEL_JSON, "plans.json", "dataset_spec.json", *fold_names]
    target = prepare_output_dir(output, inputs=[folder], overwrite=overwrite, names=names)
    others = sorted(p.name for p in target.iterdir()) if target.is_dir() else []
    others = [n for n in others if n not in names and not n.startswith(".")]
    if others:  # the folder is replaced whole: never delete what the import did not write
        raise MedsegError(f"the output folder holds other files ({', '.join(others[:3])})", path=output,
                          fix="import into a new folder or an earlier import's folder")
    loaded = [_Fold(name, path, load_checkpoint(path)) for name, path in chosen]
    configuration = _configuration_name(folder, loaded)
    imported = import_configuration(plans, dataset, configuration, plans_path, dataset_path)
    values = label_values(dataset, dataset_path)
    dims = imported.configuration.spatial_dims
    mirror_axes = _mirror_axes(loaded, imported.transpose_forward, dims)
    notes = list(imported.notes)
    if mirror_axes is None or mirror_axes != list(range(dims)):
        notes.append(f"nnU-Net mirrors only over axes {mirror_axes} at inference; medseg predict mirrors over all "
                     f"{dims} (pass --no-tta for none)")
    dataset_name = str(plans.get("dataset_name") or folder.parent.name)
    spec_dataset = _dataset_spec(dataset, dataset_name)
    spec = _model_spec(imported, values, spec_dataset, folder, loaded, mirror_axes, notes)
    states = {}
    for fold in loaded:
        states[fold.name] = map_state_dict(fold.content["network_weights"], imported.configuration.network,
                                           imported.transpose_forward, fold.checkpoint)
        _check_weights(spec, states[fold.name], fold.checkpoint)
    plan = Plan(dataset_name, spec_dataset.channel_names, dict(dataset["labels"]), "cpu", None, 0, {},
                {configuration: imported.configuration},
                overrides=[f"imported from nnU-Net v2: {folder}"])

    def write(partial: Path) -> None:
        write_segmentation_model(partial, spec, plan, spec_dataset)
        for name, state in states.items():
            write_fold_weights(partial / f"fold_{name}", state)

    _write_folder(target, write)
    for note in notes:
        logger.warning("%s: %s", folder, note)
    return ImportReport(target, configuration, imported.network_name, [f.name for f in loaded], values,
                        mirror_axes, notes)

