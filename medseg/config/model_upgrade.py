"""Model folders written before the one model-folder contract (``medseg.config.model_folder``), converted in place.

Two old kinds exist:

- **schema-1 segmentation** (``model.json`` whose ``network`` held PlanUNet arguments, ``fold_K/`` as today):
  ``model.json`` is rewritten as schema 2 with a weights card recovered from the folder (dataset name, per-fold
  steps, time and validation Dice, the weights' date); the weights stay where they are.
- **old interactive** (``interactive.json`` + ``model.safetensors``, maybe ``checkpoint.pt``,
  ``training_log.json``, ``progress.png`` at the top): the weights (checked against ``weights_sha256``), the
  checkpoint (in the one trainer's format), the log and the curves move into ``fold_all/``; ``model.json`` follows;
  ``interactive.json`` goes last.

Every fold whose weights have no ``weights.json`` gets one, and the returned lines say so: such a hash certifies
the bytes found now, not the ones once written. Crash-safe: every file is written atomically, and ``model.json``
(the commit point) is written only after everything it describes is in place, so a kill leaves either the old
folder (the loaders' upgrade message) or the new one; running the upgrade again finishes it.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

from medseg.atomic import atomic_write, remove_stale_temporaries
from medseg.config.dataset_spec import DatasetSpec
from medseg.config.json_files import read_json, write_json_atomic
from medseg.config.model_folder import (LEGACY_INTERACTIVE_JSON, MODEL_JSON, SCHEMA_VERSION, WEIGHTS, WEIGHTS_RECORD,
                                        ModelSpec, NetworkSpec, WeightsCard, fold_folder, plan_network_spec,
                                        record_weights, recorded_sha256)
from medseg.config.train_config import TrainConfig
from medseg.errors import MedsegError

LEGACY_VERSION = "unknown (before 0.2)"
LEGACY_KIND = "medseg-interactive"
LEGACY_WEIGHTS = "model.safetensors"
LEGACY_CHECKPOINT = "checkpoint.pt"
INTERACTIVE_FOLD = "all"
UPGRADED_FROM = "upgraded_from"  # the extra key that marks a model.json written by this module
# interactive.json keys that become the card, the network or fold_all/ files; the others are kept as extra
_INTERACTIVE_CONSUMED = ("kind", "schema_version", "network", "weights_sha256", "train_config", "steps",
                         "train_seconds", "history")
# the old InteractiveTrainConfig fields that are the interactive task's options now
_INTERACTIVE_TASK_OPTIONS = ("batch_size", "max_corrections", "mode_weights", "box_jitter", "click_tolerance")
NOT_A_MODEL_FIX = "pass the folder that medseg train or medseg train-interactive wrote"


def upgrade_model_folder(folder: str | Path) -> list[str]:
    """Convert ``folder`` to the current model-folder contract, in place; one line per thing done (empty when it
    is already current). Raises ``MedsegError`` for a folder of neither kind, damaged weights or a model.json
    newer than this medseg."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MedsegError("model folder not found", path=folder, fix=NOT_A_MODEL_FIX)
    remove_stale_temporaries(folder)  # what a killed upgrade or training left (writers gone); never a real file
    for fold_dir in folder.glob("fold_*"):
        remove_stale_temporaries(fold_dir)
    if (folder / LEGACY_INTERACTIVE_JSON).is_file():
        return _upgrade_interactive(folder)
    if not (folder / MODEL_JSON).is_file():
        raise MedsegError(f"not a medseg model folder: neither {MODEL_JSON} nor an old {LEGACY_INTERACTIVE_JSON}",
                          path=folder, fix=NOT_A_MODEL_FIX)
    raw = _json_object(folder / MODEL_JSON)
    version = raw.get("schema_version", 1)
    if not isinstance(version, int):
        raise MedsegError(f"model.json schema_version {version!r} is not a number", path=folder / MODEL_JSON,
                          fix="restore the file from a copy of the model folder")
    if version == 1:
        return _upgrade_segmentation(folder, raw)
    ModelSpec.from_dict(raw, folder / MODEL_JSON)  # refuses a newer schema or a malformed file
    return _record_unverified_weights(folder)


# ------------------------------------------------------------------------------------------------ shared parts
def _json_object(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise MedsegError("not a JSON object", path=path, fix="restore the file from a copy of the model folder")
    return data


def _optional_json(path: Path) -> dict[str, Any]:
    """A JSON object file that may be missing (then ``{}``); a damaged one is an error."""
    return _json_object(path) if path.is_file() else {}


def _mtime_iso(path: Path) -> str:
    """The file's modification time, ISO 8601 UTC to the second (the date a weights file was written)."""
    stamp = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc)
    return stamp.replace(microsecond=0).isoformat()


def _record_unverified_weights(folder: Path) -> list[str]:
    """``weights.json`` for every ``fold_K/weights.safetensors`` without one, each reported."""
    from medseg.weights_file import sha256_file

    lines = []
    for fold_dir in sorted(p for p in folder.glob("fold_*") if (p / WEIGHTS).is_file()):
        if recorded_sha256(fold_dir) is None:
            record_weights(fold_dir, sha256_file(fold_dir / WEIGHTS))
            lines.append(f"{fold_dir.name}: sha256 recorded for the existing weights (unverified before)")
    return lines


# -------------------------------------------------------------------------------------- schema-1 segmentation
def _upgrade_segmentation(folder: Path, raw: dict[str, Any]) -> list[str]:
    """Schema-1 ``model.json`` -> schema 2 (``plan_unet``, a recovered weights card; the old file's other keys,
    e.g. ``regions``, in ``extra``), after every fold's weights have their sha256 record."""
    path = folder / MODEL_JSON
    try:
        network = plan_network_spec(raw["network"])
        label_values = [int(v) for v in raw["label_values"]]
    except (KeyError, TypeError, ValueError) as error:
        raise MedsegError(f"schema-1 model.json is incomplete or malformed ({type(error).__name__}: {error})",
                          path=path, fix="restore the folder from a copy, or retrain") from None
    extra = {k: v for k, v in raw.items() if k not in ("schema_version", "configuration", "network", "label_values")}
    extra[UPGRADED_FROM] = "model.json schema 1"
    spec = ModelSpec("segmentation", network, label_values, raw.get("configuration"),
                     _segmentation_card(folder), extra)
    lines = _record_unverified_weights(folder)
    write_json_atomic(spec.to_dict(), path)
    folds = len(spec.card.figures)
    return lines + [f"model.json: schema 1 -> {SCHEMA_VERSION} (network plan_unet, weights card from the folder's "
                    f"records, {folds} fold{'s' if folds != 1 else ''})"]


def _segmentation_card(folder: Path) -> WeightsCard:
    """What the old folder still tells: dataset name and size, the plan's budget, per fold its steps, training time,
    training cases and validation Dice (``fold_K``: training_log.json, cases.json, validation.json), and the date
    of the newest weights."""
    dataset = _optional_json(folder / "dataset_spec.json")
    spec = DatasetSpec.from_dict(dataset) if dataset else None
    budget = _optional_json(folder / "plans.json").get("budget_seconds")
    figures: dict[str, Any] = {}
    dates = []
    for fold_dir in sorted(p for p in folder.glob("fold_*") if (p / WEIGHTS).is_file()):
        log = _optional_json(fold_dir / "training_log.json")
        history = log.get("history")
        last = history[-1] if isinstance(history, list) and history and isinstance(history[-1], dict) else {}
        budget = budget if budget is not None else log.get("budget_seconds")
        train = _optional_json(fold_dir / "cases.json").get("train")
        figures[fold_dir.name] = {"steps": last.get("iteration"), "train_seconds": last.get("elapsed"),
                                  "train_cases": len(train) if isinstance(train, list) else None,
                                  "validation_dice": _optional_json(fold_dir / "validation.json").get("mean_dice")}
        dates.append(_mtime_iso(fold_dir / WEIGHTS))
    steps = [f["steps"] for f in figures.values() if isinstance(f["steps"], int)]
    return WeightsCard(training_data=[spec.name] if spec and spec.name else [],
                       training_cases=spec.num_training if spec else 0, budget_seconds=budget,
                       steps=sum(steps) if steps else None,
                       date=max(dates) if dates else _mtime_iso(folder / MODEL_JSON),
                       medseg_version=LEGACY_VERSION, figures=figures)


# -------------------------------------------------------------------------------------------- old interactive
def _upgrade_interactive(folder: Path) -> list[str]:
    """``interactive.json`` + top-level files -> ``model.json`` + ``fold_all/``, in a re-runnable order."""
    legacy = folder / LEGACY_INTERACTIVE_JSON
    info = _json_object(legacy)
    if info.get("kind") != LEGACY_KIND or not isinstance(info.get("network"), dict):
        raise MedsegError(f"interactive.json is not a {LEGACY_KIND} description", path=legacy,
                          fix="pass the folder that medseg train-interactive wrote")
    if int(info.get("schema_version", 1)) != 1:
        raise MedsegError(f"interactive.json schema_version {info['schema_version']} is not the old layout's (1)",
                          path=legacy, fix="pass the folder that medseg train-interactive wrote")
    if (folder / MODEL_JSON).is_file():
        return _finish_interactive(folder)
    # everything read from interactive.json is checked before anything moves
    network = _interactive_network(info["network"], legacy)
    old_config = info.get("train_config") if isinstance(info.get("train_config"), dict) else {}
    try:
        history = _trainer_history(info.get("history") or [])
        train_config = _train_config(old_config) if old_config else None
    except (TypeError, ValueError) as error:
        raise MedsegError(f"interactive.json is malformed ({type(error).__name__}: {error})", path=legacy,
                          fix="restore the file from a copy of the model folder") from None
    fold_dir = fold_folder(folder, INTERACTIVE_FOLD)
    lines = _move_interactive_weights(folder, fold_dir, info.get("weights_sha256"))
    lines += _convert_checkpoint(folder / LEGACY_CHECKPOINT, fold_dir / LEGACY_CHECKPOINT)
    if (folder / "training_log.json").is_file():
        write_json_atomic({"history": history, "max_iterations": old_config.get("max_steps"),
                           "budget_seconds": old_config.get("budget_seconds")}, fold_dir / "training_log.json")
        (folder / "training_log.json").unlink()
        lines.append("training_log.json -> fold_all/training_log.json (the trainer's format)")
    if (folder / "progress.png").is_file():
        os.replace(folder / "progress.png", fold_dir / "progress.png")
        lines.append("progress.png -> fold_all/progress.png")
    if train_config is not None:
        write_json_atomic(train_config.to_dict(), fold_dir / "train_config.json")
        lines.append("fold_all/train_config.json written from interactive.json's train_config")
    spec = _interactive_spec(info, network, _interactive_card(info, old_config, fold_dir / WEIGHTS))
    write_json_atomic(spec.to_dict(), folder / MODEL_JSON)
    lines.append(f"model.json written (task interactive, network promptable_unet, schema {SCHEMA_VERSION})")
    return lines + _finish_interactive(folder)


def _finish_interactive(folder: Path) -> list[str]:
    """The last step: ``interactive.json`` removed once a ``model.json`` that this module wrote is in place. A
    ``model.json`` of another origin next to an old ``interactive.json`` is not guessed at."""
    spec = ModelSpec.from_dict(_json_object(folder / MODEL_JSON), folder / MODEL_JSON)
    if UPGRADED_FROM not in spec.extra:
        raise MedsegError(f"holds both a model.json and an old {LEGACY_INTERACTIVE_JSON}", path=folder,
                          fix="keep one model per folder: move interactive.json and model.safetensors into a folder "
                              "of their own, then run medseg model upgrade on it")
    (folder / LEGACY_INTERACTIVE_JSON).unlink(missing_ok=True)
    return ["interactive.json removed"]


def _move_interactive_weights(folder: Path, fold_dir: Path, expected: Any) -> list[str]:
    """``model.safetensors`` -> ``fold_all/weights.safetensors`` + ``weights.json``, checked against
    ``expected`` (interactive.json's ``weights_sha256``) first. Re-run after a kill, the moved file is checked."""
    from medseg.weights_file import sha256_file

    source, target = folder / LEGACY_WEIGHTS, fold_dir / WEIGHTS
    path = source if source.is_file() else target
    if not path.is_file():
        raise MedsegError("the weights are missing", path=source,
                          fix="copy the whole model folder again, or retrain with medseg train-interactive")
    digest = sha256_file(path)
    verified = isinstance(expected, str)
    if verified and digest != expected.lower():
        raise MedsegError("the weights file is damaged: its sha256 differs from the one interactive.json records",
                          path=path, fix="restore the model folder from a copy, or retrain with medseg "
                                         "train-interactive (the folder was left as it was)")
    if path == source:
        fold_dir.mkdir(parents=True, exist_ok=True)
        (fold_dir / WEIGHTS_RECORD).unlink(missing_ok=True)
        os.replace(source, target)
    record_weights(fold_dir, digest)
    how = "sha256 verified" if verified else "sha256 recorded for the existing weights (unverified before)"
    return [f"model.safetensors -> fold_all/weights.safetensors ({how})"]


def _trainer_history(history: list[Any]) -> list[dict[str, Any]]:
    """Old history entries (``step``, ``elapsed``, ``lr``, ``train_loss``, figures) in the one trainer's form
    (``epoch``, ``iteration``, ...): one old entry per epoch."""
    entries = []
    for epoch, old in enumerate((h for h in history if isinstance(h, dict)), start=1):
        rest = {k: v for k, v in old.items() if k != "step"}
        entries.append({"epoch": epoch, "iteration": int(old.get("step", 0)), **rest})
    return entries


def _convert_checkpoint(source: Path, target: Path) -> list[str]:
    """Old ``checkpoint.pt`` ``{network, optimizer, step, elapsed, history}`` -> the trainer's
    ``{network, optimizer, state: {iteration, epoch, elapsed, history}}`` in ``fold_all/``, then the old one removed.
    Read with ``weights_only=True``: nothing is unpickled."""
    if not source.is_file():
        return []
    import torch

    try:
        old = torch.load(source, map_location="cpu", weights_only=True)
        history = _trainer_history(list(old.get("history") or []))
        state = {"iteration": int(old["step"]), "epoch": len(history), "elapsed": float(old["elapsed"]),
                 "history": history}
        new = {"network": old["network"], "optimizer": old["optimizer"], "state": state}
    except Exception as error:  # damaged, foreign or incomplete: never fall back to full unpickling
        detail = (str(error).splitlines() or [type(error).__name__])[0][:200]
        raise MedsegError(f"cannot convert the checkpoint ({detail})", path=source,
                          fix="delete checkpoint.pt (needed only to resume training) and upgrade again") from None
    atomic_write(target, lambda temporary: torch.save(new, temporary), durable=True)
    source.unlink()
    return [f"checkpoint.pt -> fold_all/checkpoint.pt (the trainer's format, step {state['iteration']})"]


def _train_config(old: dict[str, Any]) -> TrainConfig:
    """The old ``InteractiveTrainConfig`` as the one trainer's ``TrainConfig`` (task ``interactive``)."""
    return TrainConfig(task="interactive", budget_seconds=old.get("budget_seconds"),
                       max_iterations=old.get("max_steps"), iterations_per_epoch=int(old.get("validate_every", 100)),
                       optimizer="adamw", learning_rate=float(old.get("learning_rate", 2e-3)),
                       weight_decay=float(old.get("weight_decay", 1e-4)), num_workers=0, threads=old.get("threads"),
                       seed=int(old.get("seed", 0)), device=str(old.get("device", "cpu")),
                       task_options={k: old[k] for k in _INTERACTIVE_TASK_OPTIONS if k in old})


def _interactive_card(info: dict[str, Any], old_config: dict[str, Any], weights: Path) -> WeightsCard:
    """The card the new trainer writes, from what interactive.json recorded; dated by the weights file."""
    history = [h for h in info.get("history") or [] if isinstance(h, dict)]
    figures = {k: v for k, v in (history[-1] if history else {}).items() if k.startswith("dice_")}
    cases = info.get("train_cases", {})
    return WeightsCard(training_data=[Path(d).name for d in info.get("datasets") or []],
                       training_cases=sum(len(v) for v in cases.values()) if isinstance(cases, dict) else 0,
                       budget_seconds=old_config.get("budget_seconds"), train_seconds=info.get("train_seconds"),
                       steps=info.get("steps"), date=_mtime_iso(weights), medseg_version=LEGACY_VERSION,
                       figures={"holdout_slices": figures})


def _interactive_network(config: dict[str, Any], legacy: Path) -> NetworkSpec:
    """The old ``PromptableConfig`` dict as ``promptable_unet``'s arguments (``image_channels`` as
    ``in_channels``, one output channel)."""
    options = dict(config)
    try:
        in_channels = int(options.pop("image_channels"))
    except (KeyError, TypeError, ValueError):
        raise MedsegError("interactive.json's network has no valid image_channels", path=legacy,
                          fix="restore the file from a copy of the model folder") from None
    return NetworkSpec("promptable_unet", 2, in_channels, 1, options)


def _interactive_spec(info: dict[str, Any], network: NetworkSpec, card: WeightsCard) -> ModelSpec:
    """One object (label values 0, 1); the rest of interactive.json (datasets, cases, slices) as extra."""
    extra = {k: v for k, v in info.items() if k not in _INTERACTIVE_CONSUMED}
    extra[UPGRADED_FROM] = "interactive.json schema 1"
    return ModelSpec("interactive", network, [0, 1], card=card, extra=extra)
