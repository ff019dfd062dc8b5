"""`train` end to end: plan (made if missing), preprocess (resumable), splits, model folder, one fold."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from dataclasses import fields
from typing import Any, Sequence

from medseg.atomic import remove_stale_temporaries
from medseg.config import Configuration, Plan, read_json, write_json_atomic
from medseg.config.model_folder import (INSTANCE_HEAD, PREVIOUS_STAGE, ModelSpec, WeightsCard, fold_folder,
                                        plan_network_spec, previous_stage_reference, read_model_spec, write_model_spec,
                                        write_segmentation_model)
from medseg.config.train_config import TrainConfig
from medseg.data.layout import open_dataset
from medseg.distributed import process_group
from medseg.errors import MedsegError
from medseg.preprocess.previous_stage import PreviousStage
from medseg.training.cascade import cascade_input_channels, first_stage_predictions, share_first_stage_splits
from medseg.training.checkpoint import check_new_run
from medseg.training.initial_weights import INIT, StartModel, load_start_weights, read_start, start_plan
from medseg.training.segmentation_task import SegmentationOptions, SegmentationTask
from medseg.training.splits import fold_cases, load_or_make_splits
from medseg.training.trainer import Trainer, TrainState


# the configuration names the planner can make
PLANNED_CONFIGURATIONS = ("2d", "2.5d", "3d_fullres", "3d_lowres", "3d_cascade_fullres", "instance")
DEFAULT_FOLDS = 5  # make_splits' default; fewer when the dataset has fewer cases


@dataclass
class TrainResult:
    model_dir: Path
    fold_dir: Path
    state: TrainState
    resumed: bool
    validation_dice: dict[str, float] | None = None  # full-image Dice per foreground label on the fold's cases
    rank: int = 0  # data-parallel under torchrun: this process's rank (only rank 0 writes and validates)


@dataclass
class PreparedFold:
    """What training a fold needs once the plan, the model folder, the cache and the splits are there (made once,
    on rank 0 under torchrun; the other ranks get it without ``data`` and ``first_stage``, which only rank 0's
    validation reads)."""

    config: Configuration
    spec: ModelSpec
    run_config: TrainConfig
    cache_dir: Path
    train_cases: list[str]
    val_cases: list[str]
    label_values: list[int]
    data: Any = None
    first_stage: PreviousStage | None = None
    start: StartModel | None = None


def train_fold(dataset: str | Path, configuration: str, fold: str | int, *, model_dir: str | Path,
               plans: str | Path | None = None, preprocessed: str | Path | None = None,
               budget_seconds: float | None = None, resume: bool = False, split_mode: str = "random",
               groups_file: str | Path | None = None, train_config: dict | None = None,
               network: str | None = None, network_options: dict[str, Any] | None = None,
               validate: bool = True, progress: bool | None = None,
               previous_stage: str | Path | None = None, init: str | Path | None = None,
               unlabelled: Sequence[str | Path] | None = None, semi: str | None = None) -> TrainResult:
    """Train ``fold`` (0..4 or "all") of ``configuration``; ``plans`` default: ``MODEL/plans.json`` or a new plan
    for ``budget_seconds``; ``preprocessed`` default: ``MODEL/preprocessed``. Afterwards (``validate``, not for
    fold "all") the fold's validation cases are predicted in full into ``fold_K/validation/``.

    A cascade configuration (``3d_cascade_fullres``) needs ``previous_stage``: the first stage's model folder,
    every case of which has a cross-validation prediction (``medseg.training.cascade``); the cascade takes its
    folds.

    Under torchrun (``torchrun --nproc-per-node N -m medseg train ...``) every rank calls this: rank 0 checks the
    arguments, plans, preprocesses and writes the model folder while the others wait; all train data-parallel
    (``medseg.training.trainer``); rank 0 alone writes the fold and validates. After a kill of any rank, run the
    same command again with ``resume``."""
    import torch

    from medseg.nets.from_folder import build_network

    model_dir = Path(model_dir)
    fold = str(fold)
    fold_dir = fold_folder(model_dir, fold)
    with process_group(_group_device(train_config, plans, model_dir)) as ranks:
        prepared = ranks.run_on_main(
            lambda: _prepare_fold(dataset, configuration, fold, model_dir=model_dir, plans=plans,
                                  preprocessed=preprocessed, budget_seconds=budget_seconds, resume=resume,
                                  split_mode=split_mode, groups_file=groups_file, train_config=train_config,
                                  network=network, network_options=network_options, progress=progress,
                                  previous_stage=previous_stage, init=init, unlabelled=unlabelled, semi=semi),
            shared=lambda result: replace(result, data=None, first_stage=None))
        run_config = prepared.run_config
        options = SegmentationOptions.from_dict(run_config.task_options)
        task = SegmentationTask(configuration=prepared.config, cache_dir=prepared.cache_dir,
                                train_cases=prepared.train_cases, val_cases=prepared.val_cases,
                                label_values=prepared.label_values, options=options, seed=run_config.seed,
                                num_workers=run_config.num_workers, device=run_config.device)
        if options.semi:
            from medseg.training.semi_supervised import SemiOptions, SemiSupervisedTask

            task = SemiSupervisedTask(task, SemiOptions.from_dict(options.semi))
        torch.manual_seed(run_config.seed)
        network = build_network(prepared.spec)
        if prepared.start is not None:
            started = load_start_weights(network, prepared.spec, prepared.start)
            if ranks.is_main:
                _record_start(model_dir, started)
        trainer = Trainer(network, task, run_config, fold_dir)
        resumed = trainer.resume() if resume else False
        state = trainer.run(progress=progress)
        if not ranks.is_main:
            return TrainResult(model_dir, fold_dir, state, resumed, rank=ranks.rank)
    write_json_atomic({"train": prepared.train_cases, "val": prepared.val_cases}, fold_dir / "cases.json")
    validation = None
    if validate and fold != "all":
        validation = predict_validation(model_dir, fold, prepared.data, prepared.val_cases, progress=progress,
                                        previous_stage=prepared.first_stage)
    _record_fold(model_dir, fold, state, len(prepared.train_cases), validation)
    return TrainResult(model_dir, fold_dir, state, resumed, validation)


def _group_device(train_config: dict | None, plans: str | Path | None, model_dir: Path) -> str:
    """The device the ranks' process group is for (NCCL on CUDA, gloo otherwise), known before rank 0 reads the
    plan: the train options' device, else the device of the plan already on disk, else the CPU (a plan made by
    this run is a CPU plan)."""
    if (train_config or {}).get("device"):
        return str(train_config["device"])
    plan_path = Path(plans) if plans is not None else model_dir / "plans.json"
    try:
        return str(read_json(plan_path).get("device") or "cpu")
    except (OSError, ValueError, AttributeError, MedsegError):
        return "cpu"  # missing or broken: rank 0's checks name the problem


def _prepare_fold(dataset: str | Path, configuration: str, fold: str, *, model_dir: Path,
                  plans: str | Path | None, preprocessed: str | Path | None, budget_seconds: float | None,
                  resume: bool, split_mode: str, groups_file: str | Path | None, train_config: dict | None,
                  network: str | None, network_options: dict[str, Any] | None, progress: bool | None,
                  previous_stage: str | Path | None, init: str | Path | None = None,
                  unlabelled: Sequence[str | Path] | None = None, semi: str | None = None) -> PreparedFold:
    """``train_fold``'s work before training: every argument checked, then the plan (made if missing), the
    model folder, the preprocessed cache and the splits."""
    from medseg.compute import resolve_precision
    from medseg.devices import require_device
    from medseg.planning.service import make_plan
    from medseg.preprocess.pipeline import check_dataset_for_plan, preprocess_dataset

    data = open_dataset(dataset).require_cases()
    plan_path = Path(plans) if plans is not None else model_dir / "plans.json"
    plan = _check_arguments(data, configuration, fold, model_dir=model_dir, plan_path=plan_path,
                            plans_given=plans is not None, preprocessed=preprocessed, budget_seconds=budget_seconds,
                            resume=resume, network=network, previous_stage=previous_stage)
    start = read_start(init) if init is not None else None
    if semi is not None and not unlabelled:
        raise MedsegError(f"--semi {semi} needs unlabelled images", fix="pass --unlabelled DIR (repeatable)")
    if plan is None and start is not None:
        from medseg.data.validate import dataset_record

        plan = start_plan(start, configuration, data.spec)
        plan.dataset = dataset_record(data, validated=False)  # made for it now; its cases are checked below
    elif plan is None:
        plan = make_plan(dataset, budget=budget_seconds, progress=progress)
    if configuration not in plan.configurations:
        raise MedsegError(f"no configuration {configuration!r} in the plan made for this dataset", path=dataset,
                          fix=f"use one of {', '.join(plan.configurations)}")
    config = plan.configurations[configuration]
    label_values = data.spec.predicted_label_values
    case_ids = [c.case_id for c in data.cases]
    first_stage = None
    if config.previous_stage:
        cascade_input_channels(config, len(plan.channel_names), label_values)
        first_stage = first_stage_predictions(previous_stage, config, case_ids, label_values)
    elif previous_stage is not None:
        raise MedsegError(f"{configuration} has no previous stage", path=previous_stage,
                          fix="--previous-stage is for a cascade configuration (3d_cascade_fullres)")
    train_config = dict(train_config or {})
    train_config["device"] = require_device(train_config.get("device") or plan.device)  # default: the plan's
    run_config = segmentation_train_config(train_config, configuration=configuration, fold=fold,
                                           budget_seconds=budget_seconds if budget_seconds is not None
                                           else plan.budget_seconds)
    run_config.precision = resolve_precision(run_config.precision, run_config.device.split(":")[0],
                                             measured=plan.calibration.get("precision"))
    if network is None and network_options:  # --set net.KEY=VALUE alone: the planned network with these options
        network = config.network_name
    if network is not None and (network != config.network_name or network_options):
        from medseg.planning.network_fit import fit_network

        config = fit_network(config, network, network_options, memory_bytes=plan.memory_bytes,
                             budget_seconds=run_config.budget_seconds, device=run_config.device,
                             num_workers=run_config.num_workers, precision=run_config.precision)
        plan.configurations[configuration] = config
    if label_values != list(range(len(label_values))) and max(label_values) > 255:
        raise MedsegError(f"label values {label_values} above 255", fix="relabel to 0..N-1")
    check_dataset_for_plan(data, plan, plans_path=plan_path if plan_path.is_file() else None, progress=progress)
    images = _check_unlabelled(unlabelled, config, plan, progress) if unlabelled else None
    spec = _model_spec(model_dir, config, label_values, data, plan)
    if first_stage is not None:
        spec.extra[PREVIOUS_STAGE] = previous_stage_reference(model_dir, previous_stage)
    write_segmentation_model(model_dir, spec, plan, data.spec)
    cache_root = Path(preprocessed) if preprocessed is not None else model_dir / "preprocessed"
    preprocess_dataset(dataset, plan, configuration, cache_root, progress=progress, checked=True,
                       previous_stage=first_stage)
    if images is not None:
        from medseg.preprocess.unlabelled import preprocess_unlabelled
        from medseg.training.semi_supervised import SemiOptions

        folder = cache_root / f"{configuration}_unlabelled"
        cases = preprocess_unlabelled(images, config, folder, progress=progress)
        run_config.task_options["semi"] = SemiOptions(semi or "mean-teacher", str(folder.resolve()), cases).to_dict()
    groups = read_json(groups_file) if groups_file else None
    if first_stage is not None:
        share_first_stage_splits(previous_stage, model_dir)
    splits = load_or_make_splits(model_dir / "splits.json", case_ids, mode=split_mode, groups=groups)
    train_cases, val_cases = fold_cases(splits, fold, case_ids)
    if resume:
        remove_stale_temporaries(model_dir)  # model.json's, splits.json's; the trainer cleans fold_K/
    return PreparedFold(config, spec, run_config, cache_root / configuration, train_cases, val_cases, label_values,
                        data, first_stage, start)


def _check_unlabelled(sources: Sequence[str | Path], config: Configuration, plan: Plan,
                      progress: bool | None) -> list:
    """The unlabelled images of a semi-supervised run, every one read and checked before anything is written."""
    from medseg.preprocess.unlabelled import check_unlabelled
    from medseg.training.unlabelled import unlabelled_images

    images = unlabelled_images(sources)
    check_unlabelled(images, config, channels=len(plan.channel_names), progress=progress)
    return images


def _record_start(model_dir: Path, started: dict[str, Any]) -> None:
    spec = read_model_spec(model_dir)
    spec.extra[INIT] = started
    write_model_spec(model_dir, spec)


def segmentation_train_config(options: dict[str, Any], *, configuration: str, fold: str,
                              budget_seconds: float | None) -> TrainConfig:
    """A segmentation run's ``TrainConfig`` from flat options: ``TrainConfig`` fields and ``SegmentationOptions``
    fields (``loss``, ``validation_batches``, ``augmentation``) side by side; None values keep the defaults."""
    options = {k: v for k, v in options.items() if v is not None}
    task_keys = {f.name for f in fields(SegmentationOptions)}
    config_keys = {f.name for f in fields(TrainConfig)} - {"task", "task_options", "schema_version"}
    unknown = sorted(set(options) - task_keys - config_keys)
    if unknown:
        raise MedsegError(f"unknown training option(s) {unknown}", fix=f"use some of {sorted(task_keys | config_keys)}")
    task_options = SegmentationOptions(configuration=configuration, fold=fold,
                                       **{k: v for k, v in options.items() if k in task_keys})
    return TrainConfig(task="segmentation", budget_seconds=budget_seconds, task_options=task_options.to_dict(),
                       **{k: v for k, v in options.items() if k in config_keys})


def _model_spec(model_dir: Path, config: Configuration, label_values: list[int], data, plan: Plan) -> ModelSpec:
    """The folder's ``ModelSpec``: kept (with its card's per-fold figures) when the folder already has one for
    the same network, else new."""
    network = plan_network_spec(config.network, config.network_name)
    if (model_dir / "model.json").is_file():
        previous = read_model_spec(model_dir)
        if previous.network == network and previous.configuration == config.name:
            return previous
    card = WeightsCard.now(training_data=[data.spec.name or data.root.name], training_cases=len(data.cases),
                           budget_seconds=plan.budget_seconds)
    extra = {INSTANCE_HEAD: True} if config.instances else {}
    return ModelSpec("segmentation", network, label_values, config.name, card, extra)


def _record_fold(model_dir: Path, fold: str, state: TrainState, train_cases: int,
                 validation: dict[str, float] | None) -> None:
    """The fold's figures on the weights card: steps, time, training cases and its validation cases' Dice."""
    spec = read_model_spec(model_dir)
    spec.card.figures[f"fold_{fold}"] = {"steps": state.iteration, "train_seconds": round(state.elapsed, 1),
                                         "train_cases": train_cases, "validation_dice": validation}
    spec.card.steps = sum(f.get("steps", 0) for f in spec.card.figures.values() if isinstance(f, dict))
    write_model_spec(model_dir, spec)


def _check_arguments(data, configuration: str, fold: str, *, model_dir: Path, plan_path: Path, plans_given: bool,
                     preprocessed: str | Path | None, budget_seconds: float | None, resume: bool,
                     network: str | None = None, previous_stage: str | Path | None = None) -> Plan | None:
    """Every argument of ``train_fold`` checked before any work (planning, preprocessing, writing); returns the
    plan when it is read from a file, None when it has to be made."""
    from medseg.output_paths import prepare_output_dir

    if fold != "all":
        splits_path = model_dir / "splits.json"
        if not splits_path.is_file() and previous_stage is not None:  # a cascade takes its first stage's folds
            splits_path = Path(previous_stage) / "splits.json"
        count = len(read_json(splits_path)) if splits_path.is_file() else min(DEFAULT_FOLDS, len(data.cases))
        if not fold.isdigit() or not 0 <= int(fold) < count:
            raise MedsegError(f"fold {fold!r} does not exist ({count} folds for {len(data.cases)} cases)",
                              fix=f"use -f 0..{count - 1} or -f all")
    if network is not None:
        from medseg.nets.registry import model_info

        model_info(network)  # an unknown name lists the valid ones, before any work
    check_new_run(fold_folder(model_dir, fold), budget_seconds=budget_seconds, resume=resume)
    prepare_output_dir(model_dir, inputs=[data.root], overwrite=True)
    if preprocessed is not None:
        prepare_output_dir(preprocessed, inputs=[data.root], overwrite=True)
    if plan_path.is_file():
        plan = Plan.from_dict(read_json(plan_path), path=plan_path)
        if configuration not in plan.configurations:
            raise MedsegError(f"no configuration {configuration!r} in the plan", path=plan_path,
                              fix=f"use one of {', '.join(plan.configurations)}")
        return plan
    if plans_given:
        raise MedsegError("plans file not found", path=plan_path, fix="run medseg plan first or omit --plans")
    if configuration not in PLANNED_CONFIGURATIONS:
        raise MedsegError(f"unknown configuration {configuration!r}",
                          fix=f"use one the planner makes: {', '.join(PLANNED_CONFIGURATIONS)}")
    return None


def predict_validation(model_dir: Path, fold: str, data, val_cases: list[str], *,
                       progress: bool | None = None, previous_stage: PreviousStage | None = None
                       ) -> dict[str, float]:
    """Predict the fold's validation cases at full resolution (sliding window, mirroring) into
    ``fold_K/validation/`` (labels in the dataset's format + ``<case>.npz`` probabilities, which ``find-best`` and
    the post-processing decision read) and return the mean Dice per foreground label over those cases.
    A cascade reads each case's first-stage cross-validation prediction from ``previous_stage`` (the first
    stage's folds that trained on the case are not asked)."""
    import numpy as np

    from medseg.inference import Predictor
    from medseg.inference.ensemble import save_probabilities
    from medseg.io import write_image
    from medseg.metrics import confusion, dice
    from medseg.progress import track

    predictor = Predictor.from_folder(model_dir, folds=[fold], calibration=None)  # what calibrate fits on
    folder = fold_folder(model_dir, fold) / "validation"
    foreground = sorted(data.spec.foreground_labels.values())
    scores: dict[int, list[float]] = {value: [] for value in foreground}
    for case_id in track(val_cases, f"validate fold {fold}", enabled=progress):
        case = data.case(case_id)
        previous = previous_stage.read(case_id) if previous_stage is not None else None
        labels, probabilities = predictor.predict_with_probabilities(data.read_image(case), previous)
        write_image(labels, folder / f"{case_id}{data.spec.file_ending}")
        save_probabilities(folder / f"{case_id}.npz", probabilities.array, predictor.label_values)
        reference = data.read_label(case).array[0]
        for value in foreground:
            counts = confusion(labels.array[0] == value, reference == value)
            if counts.n_pred or counts.n_ref:  # a label absent from both says nothing about the model
                scores[value].append(dice(counts))
    summary = {str(v): float(np.mean(d)) if d else float("nan") for v, d in scores.items()}
    write_json_atomic({"mean_dice": summary, "cases": val_cases}, fold_folder(model_dir, fold) / "validation.json")
    return summary
