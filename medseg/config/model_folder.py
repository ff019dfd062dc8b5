"""The one model-folder contract: every kind of model medseg trains (pipeline segmentation, interactive, and the
kinds still to come) is one folder of this shape, and loads without any training code.

Layout::

    MODEL/
      model.json            ModelSpec: schema_version, task, network (``medseg.nets.create`` arguments),
                            label_values (output channel i predicts label_values[i]), configuration (the plan
                            configuration of a segmentation model), card (WeightsCard), extra (task-specific)
      plans.json            segmentation: the Plan (normalisation, spacing, patch size of every configuration);
                            pretrained (medseg pretrain: a self-supervised network, reconstruction head, no
                            labels): the plan it was pretrained with, which medseg train --init reuses
      dataset_spec.json     segmentation and pretrained: channels, labels, file ending
      splits.json           segmentation: the cross-validation folds [{"train": [...], "val": [...]}, ...]
                            (a cascade's are its first stage's, so that each case's first-stage prediction comes
                            from the fold that did not train on it)
      calibration.json      optional: the probability calibration that medseg calibrate fitted on the folds'
                            validation predictions (medseg.config.calibration); the Predictor applies it
      fold_K/               K in 0..4, or "all" (trained on every case; the only fold of an interactive model)
        weights.safetensors         the network's weights (safetensors: loading never unpickles)
        weights.json                {"schema_version": 1, "file": "weights.safetensors", "sha256": hex} written
                                    right after the weights; loading refuses a file whose bytes differ. Folders
                                    from before it (no weights.json) still load, with a logged warning.
        train_config.json           the TrainConfig of the run
        checkpoint.pt               latest training state, read with torch.load(weights_only=True)
        training_log.json           one entry per epoch: steps, time, loss, learning rate, validation figures
        progress.png                loss and validation curves
        validation/                 segmentation: predictions of the fold's validation cases

Folders of schema 1 (segmentation ``model.json`` whose ``network`` held PlanUNet arguments) are read as schema 2.
Interactive folders from before this contract (``interactive.json`` + ``model.safetensors``) raise an error that
says how to convert them: ``medseg model upgrade FOLDER`` (:mod:`medseg.config.model_upgrade`).
"""

from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from medseg.config.dataset_spec import DatasetSpec
from medseg.config.json_files import read_json, write_json_atomic
from medseg.config.plan import Plan
from medseg.errors import MedsegError

SCHEMA_VERSION = 2
MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"
WEIGHTS_RECORD = "weights.json"
TASKS = ("segmentation", "interactive", "incontext", "universal", "pretrained")
PRETRAINING = "pretraining"  # ModelSpec.extra key of a pretrained folder: method, mask ratio, block, images
LEGACY_INTERACTIVE_JSON = "interactive.json"
UPGRADE_FIX = "convert it once with: medseg model upgrade {folder}"


def medseg_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("medseg")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


@dataclass
class NetworkSpec:
    """The arguments of ``medseg.nets.create(name, spatial_dims, in_channels, num_classes, **options)``."""

    name: str
    spatial_dims: int
    in_channels: int
    num_classes: int
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NetworkSpec":
        return cls(str(data["name"]), int(data["spatial_dims"]), int(data["in_channels"]), int(data["num_classes"]),
                   dict(data.get("options") or {}))


def plan_network_spec(network: dict[str, Any], name: str = "plan_unet") -> NetworkSpec:
    """A plan configuration's ``network`` (PlanUNet arguments, ``spatial_dims``/``in_channels``/``num_classes``
    among them) as a ``NetworkSpec``."""
    options = dict(network)
    return NetworkSpec(name, int(options.pop("spatial_dims")), int(options.pop("in_channels")),
                       int(options.pop("num_classes")), options)


@dataclass
class WeightsCard:
    """What a user needs to know before trusting the weights: what they were trained on, with which budget, when,
    by which medseg, under which licence, for what use, and how well they did on data they did not see."""

    training_data: list[str] = field(default_factory=list)  # dataset names
    training_cases: int = 0
    budget_seconds: float | None = None
    train_seconds: float | None = None
    steps: int | None = None
    date: str = ""  # ISO 8601, UTC
    medseg_version: str = ""
    licence: str = "the licences of the training data apply"
    intended_use: str = "research; not a medical device"
    figures: dict[str, Any] = field(default_factory=dict)  # held-out figures, e.g. {"validation_dice": {...}}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WeightsCard":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def now(cls, **values: Any) -> "WeightsCard":
        """A card dated now (UTC) with this medseg's version."""
        date = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
        return cls(date=date, medseg_version=medseg_version(), **values)


@dataclass
class ModelSpec:
    """``model.json``: what was trained and how to rebuild it."""

    task: str
    network: NetworkSpec
    label_values: list[int]
    configuration: str | None = None
    card: WeightsCard = field(default_factory=WeightsCard)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise MedsegError(f"unknown model task {self.task!r}", fix=f"use one of {', '.join(TASKS)}")
        distance = 1 if self.extra.get(INSTANCE_HEAD) else 0  # an instance model's distance-map channel
        if self.task == "segmentation" and len(self.label_values) + distance != self.network.num_classes:
            raise MedsegError(f"{len(self.label_values)} label values {self.label_values} for a network with "
                              f"{self.network.num_classes} outputs", fix="one label value per output channel"
                              + (" and one for the distance map" if distance else ""))

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "task": self.task, "network": self.network.to_dict(),
                "label_values": self.label_values, "configuration": self.configuration,
                "card": self.card.to_dict(), "extra": self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> "ModelSpec":
        try:
            version = int(data.get("schema_version", 1))
        except (TypeError, ValueError):
            raise MedsegError(f"model.json has schema_version {data.get('schema_version')!r}, not a number",
                              path=path, fix="pass a folder written by medseg, or retrain") from None
        if version > SCHEMA_VERSION:
            raise MedsegError(f"model.json schema_version {version} is newer than this medseg's ({SCHEMA_VERSION})",
                              path=path, fix="upgrade medseg")
        try:
            if version == 1:  # segmentation folders before the contract: network = PlanUNet arguments
                return cls("segmentation", plan_network_spec(data["network"]), [int(v) for v in data["label_values"]],
                           data.get("configuration"), schema_version=SCHEMA_VERSION)
            return cls(data["task"], NetworkSpec.from_dict(data["network"]),
                       [int(v) for v in data["label_values"]], data.get("configuration"),
                       WeightsCard.from_dict(data.get("card") or {}), dict(data.get("extra") or {}))
        except (KeyError, TypeError, ValueError) as error:
            raise MedsegError(f"model.json is incomplete or malformed ({type(error).__name__}: {error})", path=path,
                              fix="pass a folder written by medseg, or retrain") from None
        except MedsegError as error:
            if path is None or error.path is not None:
                raise
            raise MedsegError(str(error).split(" (fix: ")[0], path=path, fix=error.fix) from None


def write_model_spec(folder: str | Path, spec: ModelSpec) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(spec.to_dict(), folder / MODEL_JSON)


def read_model_spec(folder: str | Path) -> ModelSpec:
    """``folder/model.json`` -> ``ModelSpec``; a folder of the old interactive layout -> a MedsegError saying how
    to upgrade it."""
    folder = Path(folder)
    path = folder / MODEL_JSON
    if not path.is_file():
        if (folder / LEGACY_INTERACTIVE_JSON).is_file():
            raise MedsegError("an interactive model folder in the layout before medseg's one model-folder format "
                              "(interactive.json + model.safetensors)", path=folder,
                              fix=UPGRADE_FIX.format(folder=folder))
        raise MedsegError("not a medseg model folder (no model.json)", path=folder,
                          fix="pass the folder that medseg train or medseg train-interactive wrote")
    data = read_json(path)
    if not isinstance(data, dict):
        raise MedsegError("model.json is not a JSON object", path=path, fix="pass a folder written by medseg")
    return ModelSpec.from_dict(data, path)


def write_segmentation_model(folder: str | Path, spec: ModelSpec, plan: Plan, dataset: DatasetSpec) -> None:
    """``model.json``, ``plans.json`` and ``dataset_spec.json`` of a segmentation model."""
    folder = Path(folder)
    write_model_spec(folder, spec)
    write_json_atomic(plan.to_dict(), folder / "plans.json")
    write_json_atomic(dataset.to_dict(), folder / "dataset_spec.json")


def read_segmentation_model(folder: str | Path) -> tuple[ModelSpec, Plan, DatasetSpec]:
    folder = Path(folder)
    spec = read_model_spec(folder)
    if spec.task != "segmentation":
        raise MedsegError(f"a {spec.task} model, not a segmentation model", path=folder,
                          fix="medseg predict takes the folders of medseg train"
                              + {"interactive": "; use medseg interactive for this one",
                                 "universal": "; use medseg segment --prompt NAME for this one",
                                 "pretrained": PRETRAINED_FIX.format(folder=folder)}.get(spec.task, ""))
    return spec, *_plan_and_dataset(folder)


PRETRAINED_FIX = ("; it has no segmentation head: fine-tune it with medseg train DATASET -c CONFIGURATION "
                  "--init {folder}, or medseg adapt {folder} DATASET")


def read_start_model(folder: str | Path) -> tuple[ModelSpec, Plan, DatasetSpec]:
    """A folder that training can start from (``medseg train --init``, ``medseg adapt``): a segmentation model
    (fine-tuning) or a pretrained one (``medseg pretrain``); its spec, plan and dataset spec."""
    folder = Path(folder)
    spec = read_model_spec(folder)
    if spec.task == "pretrained":
        return spec, *_plan_and_dataset(folder)
    return read_segmentation_model(folder)


def _plan_and_dataset(folder: Path) -> tuple[Plan, DatasetSpec]:
    plan = Plan.from_dict(read_json(folder / "plans.json"), path=folder / "plans.json")
    dataset = DatasetSpec.from_dict(read_json(folder / "dataset_spec.json"))
    return plan, dataset


INSTANCE_HEAD = "instance_head"  # ModelSpec.extra key: true for an instance model (last output: distance map)
PREVIOUS_STAGE = "previous_stage"  # ModelSpec.extra key of a cascade: {"model": relative path, "absolute": path}


def previous_stage_reference(model: str | Path, previous: str | Path) -> dict[str, str]:
    """What a cascade's ``model.json`` keeps of its first stage's folder: the path relative to the cascade's
    folder (so the two move together) and the absolute one."""
    import os

    previous = Path(previous).resolve()
    return {"model": os.path.relpath(previous, Path(model).resolve()), "absolute": str(previous)}


def previous_stage_folder(model: str | Path, spec: ModelSpec) -> Path:
    """The first stage's model folder of a cascade ``model`` (its ``model.json``'s reference, relative first)."""
    reference = spec.extra.get(PREVIOUS_STAGE) or {}
    candidates = [Path(model) / reference["model"]] if reference.get("model") else []
    candidates += [Path(reference["absolute"])] if reference.get("absolute") else []
    for candidate in candidates:
        if (candidate / MODEL_JSON).is_file():
            return candidate
    raise MedsegError("the cascade's first-stage model folder is missing"
                      + (f" (looked in {', '.join(map(str, candidates))})" if candidates else ""), path=model,
                      fix="keep the first stage's folder beside the cascade's, where it was when the cascade was "
                      "trained, or retrain the cascade with --previous-stage")


def fold_folder(model: str | Path, fold: int | str) -> Path:
    return Path(model) / f"fold_{fold}"


def available_folds(model: str | Path) -> list[str]:
    """Folds with final weights, e.g. ``["0", "1"]`` or ``["all"]``."""
    return sorted(p.name.removeprefix("fold_") for p in Path(model).glob("fold_*") if (p / WEIGHTS).is_file())


def write_fold_weights(fold_dir: str | Path, state_dict: dict[str, Any]) -> Path:
    """Write ``fold_dir/weights.safetensors`` and then its ``weights.json`` (sha256). The old record goes first,
    so a run killed in between leaves unverified weights (a warning at load), never a false 'damaged' error."""
    from medseg.weights_file import save_weights

    fold_dir = Path(fold_dir)
    fold_dir.mkdir(parents=True, exist_ok=True)
    (fold_dir / WEIGHTS_RECORD).unlink(missing_ok=True)
    record_weights(fold_dir, save_weights(state_dict, fold_dir / WEIGHTS))
    return fold_dir / WEIGHTS


def record_weights(fold_dir: str | Path, digest: str) -> Path:
    """``fold_dir/weights.json``: the sha256 of ``fold_dir/weights.safetensors`` that every load checks."""
    return write_json_atomic({"schema_version": 1, "file": WEIGHTS, "sha256": digest}, Path(fold_dir) / WEIGHTS_RECORD)


def recorded_sha256(fold_dir: str | Path) -> str | None:
    """The sha256 that ``weights.json`` records for the fold's weights, or None for a folder without one."""
    record = Path(fold_dir) / WEIGHTS_RECORD
    if not record.is_file():
        return None
    raw = read_json(record)
    digest = raw.get("sha256") if isinstance(raw, dict) else None
    if not isinstance(digest, str) or len(digest) != 64:
        raise MedsegError("weights.json has no valid sha256", path=record, fix="retrain the fold or restore the file")
    return digest


def read_fold_weights(model: str | Path, fold: int | str, *, device: str = "cpu") -> dict[str, Any]:
    """The verified state dict of ``fold`` (safetensors, sha256 checked against ``weights.json``)."""
    from medseg.weights_file import load_weights

    fold_dir = fold_folder(model, fold)
    path = fold_dir / WEIGHTS
    if not path.is_file():
        raise MedsegError(f"fold {fold} has no weights", path=path,
                          fix=f"train it (medseg train ... -f {fold}) or choose one of {available_folds(model)}")
    return load_weights(path, recorded_sha256(fold_dir), device=device)
