"""``medseg adapt``: fine-tune a segmentation model folder on a few labelled cases of a target dataset, with one of
the methods of :mod:`medseg.adapt.methods`, on the one trainer and the segmentation task; the new model folder
holds only the trained deltas and a reference to the base (:mod:`medseg.config.adaptation`).

The shots are preprocessed with the base model's plan configuration (:func:`medseg.planning.transfer.target_plan`)
into a temporary cache; every shot is both trained on and used for the trainer's validation patches (there is
nothing else labelled). The folder is written beside its final name and renamed when complete.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.adapt.methods import (
    METHODS,
    ParameterCounts,
    check_method,
    delta_state,
    freeze,
    trainable_names,
)
from medseg.adapt.target import draw_shots
from medseg.config.adaptation import (
    ADAPTATION,
    AdaptationRecord,
    BaseReference,
    adaptation_record,
)
from medseg.config.model_folder import (
    WEIGHTS,
    ModelSpec,
    NetworkSpec,
    WeightsCard,
    available_folds,
    fold_folder,
    read_fold_weights,
    read_start_model,
    write_fold_weights,
    write_segmentation_model,
)
from medseg.errors import MedsegError
from medseg.planning.transfer import target_plan

FOLD = "all"


@dataclass
class AdaptResult:
    model_dir: Path
    counts: ParameterCounts
    steps: int
    seconds: float
    shots: list[str]
    new_head: bool
    new_stem: bool


class FinalDeltas:
    """Trainer callback: the trainable tensors (and norm statistics) as the fold's weights when training ends."""

    def on_epoch_end(self, trainer: Any) -> None:
        pass

    def on_train_end(self, trainer: Any) -> None:
        write_fold_weights(trainer.folder, delta_state(trainer.network))


def base_fold(model: Path, fold: str | None) -> str:
    folds = available_folds(model)
    if not folds:
        raise MedsegError("the base model has no fold with weights", path=model, fix="train it first")
    if fold is None:
        return "all" if "all" in folds else folds[0]
    if str(fold) not in folds:
        raise MedsegError(f"the base model has no fold {fold}", path=model, fix=f"use --base-fold {' or '.join(folds)}")
    return str(fold)


def adapt_model(model: str | Path, dataset: str | Path, *, method: str, shots: int, output: str | Path,
                seed: int = 0, budget_seconds: float | None = 600.0, fold: str | None = None,
                peft_options: dict[str, Any] | None = None, train_options: dict[str, Any] | None = None,
                progress: bool | None = None) -> AdaptResult:
    """Adapt ``model`` (its fold ``fold``, default ``all`` or the first) to ``shots`` cases of ``dataset`` drawn
    with ``seed`` into the new folder ``output``. ``peft_options``: ``medseg.nets.peft.PeftOptions`` fields;
    ``train_options``: ``TrainConfig``/``SegmentationOptions`` fields (``max_iterations``, ``learning_rate``, ...).
    Every argument is checked before any work."""
    import torch

    from medseg.atomic import atomic_folder
    from medseg.data.layout import open_dataset
    from medseg.data.validate import dataset_record, validate_cases
    from medseg.nets.peft import PeftOptions
    from medseg.output_paths import prepare_output_dir
    from medseg.training.service import segmentation_train_config

    model, output = Path(model), Path(output)
    check_method(method)
    base_spec, base_plan, base_dataset, fold = read_base(model, fold)
    options = PeftOptions.from_dict(peft_options or {})
    if budget_seconds is not None and not budget_seconds > 0:
        raise MedsegError(f"the budget must be positive, not {budget_seconds:g} s", fix="use e.g. --budget 10m")
    run_config = segmentation_train_config(dict(train_options or {}, seed=seed), configuration=base_spec.configuration,
                                           fold=FOLD, budget_seconds=budget_seconds)
    prepare_output_dir(output, inputs=[dataset, model], must_not_exist=True)
    data = open_dataset(dataset).require_cases()
    chosen = draw_shots(data, shots, seed)
    plan, config = target_plan(base_plan, base_spec.configuration, data.spec)
    validate_cases(chosen, progress=progress)
    plan.dataset = dataset_record(chosen, validated=False)
    spec, record = target_spec(base_spec, base_dataset, chosen, method=method, options=options.to_dict(),
                               base=BaseReference.to(output, model, fold, _weights_sha256(model, fold)), seed=seed)
    torch.manual_seed(seed)
    network, counts = trainable_network(spec, record, read_fold_weights(model, fold))
    with tempfile.TemporaryDirectory(prefix="medseg_adapt_") as cache, atomic_folder(output) as partial:
        state = train_on_shots(network, config, chosen, run_config, Path(cache), fold_folder(partial, FOLD),
                               progress=progress)
        spec.card = WeightsCard.now(training_data=[data.spec.name or data.root.name], training_cases=shots,
                                    budget_seconds=budget_seconds, train_seconds=round(state.elapsed, 1),
                                    steps=state.iteration,
                                    figures={"adaptation": {"method": method, **counts.to_dict(),
                                                            "base_model": str(model.resolve()), "base_fold": fold}})
        write_segmentation_model(partial, spec, plan, data.spec)
    return AdaptResult(output, counts, state.iteration, state.elapsed, record.shots, record.new_head, record.new_stem)


def read_base(model: Path, fold: str | None) -> tuple[ModelSpec, Any, Any, str]:
    """The base folder's spec, plan and dataset spec and the fold to adapt (a model of medseg train, or of
    medseg pretrain: its reconstruction head is always replaced); an adapted base is refused."""
    if not model.is_dir():
        raise MedsegError("base model folder not found", path=model, fix="pass the folder that medseg train wrote")
    spec, plan, dataset = read_start_model(model)
    if adaptation_record(spec, model) is not None:
        raise MedsegError("the base model is itself an adapted model", path=model,
                          fix="adapt the model it was adapted from, or a model of medseg train")
    return spec, plan, dataset, base_fold(model, fold)


def _weights_sha256(model: Path, fold: str) -> str:
    from medseg.weights_file import sha256_file

    return sha256_file(fold_folder(model, fold) / WEIGHTS)


def target_spec(base_spec: ModelSpec, base_dataset, shots, *, method: str, options: dict[str, Any],
                base: BaseReference, seed: int) -> tuple[ModelSpec, AdaptationRecord]:
    """The adapted folder's ``ModelSpec`` (the base network for the target's channels and labels) with its
    adaptation record in ``extra``; the counts are filled in by :func:`trainable_network`."""
    target = shots.spec
    label_values = target.predicted_label_values
    network = NetworkSpec(base_spec.network.name, base_spec.network.spatial_dims, len(target.channel_names),
                          len(label_values), dict(base_spec.network.options))
    new_head = base_spec.task == "pretrained" or _plain_labels(target.labels) != _plain_labels(base_dataset.labels)
    record = AdaptationRecord(method, METHODS[method], options, new_head,
                              network.in_channels != base_spec.network.in_channels, 0, 0, base, target.name,
                              sorted(c.case_id for c in shots.cases), seed)
    spec = ModelSpec("segmentation", network, label_values, base_spec.configuration)
    spec.extra[ADAPTATION] = record.to_dict()
    return spec, record


def trainable_network(spec: ModelSpec, record: AdaptationRecord, base_state: dict) -> tuple[Any, ParameterCounts]:
    """The target network from the base weights with the method's structure, frozen but for what the method
    trains; the counts are written into the record (``spec.extra`` too)."""
    from medseg.nets.adapted import adapted_network, changing_keys

    network = adapted_network(spec, record, base_state)
    always = changing_keys(spec.network, "num_classes")
    if record.new_stem:
        always |= changing_keys(spec.network, "in_channels")
    counts = freeze(network, trainable_names(network, record.method, always))
    record.trainable_params, record.frozen_params = counts.trainable, counts.frozen
    spec.extra[ADAPTATION] = record.to_dict()
    return network, counts


def train_on_shots(network, config, shots, run_config, cache: Path, fold_dir: Path, *, progress: bool | None):
    """The trainer on the segmentation task of the preprocessed shots (trained on and validated on); the fold
    gets the deltas (``FinalDeltas``), the training log and the curves, no checkpoint."""
    from medseg.training.callbacks import Curves, TrainingLog
    from medseg.training.segmentation_task import SegmentationOptions, SegmentationTask
    from medseg.training.trainer import Trainer

    cases = sorted(c.case_id for c in shots.cases)
    task = SegmentationTask(configuration=config, cache_dir=_preprocess_shots(shots, config, cache, progress),
                            train_cases=cases, val_cases=cases, label_values=shots.spec.predicted_label_values,
                            options=SegmentationOptions.from_dict(run_config.task_options), seed=run_config.seed,
                            num_workers=run_config.num_workers, device=run_config.device)
    trainer = Trainer(network, task, run_config, fold_dir, callbacks=[TrainingLog(), FinalDeltas(), Curves()])
    return trainer.run(progress=progress)


def _plain_labels(labels: dict) -> dict:
    return {name: value for name, value in labels.items() if isinstance(value, int) and name != "ignore"}


def _preprocess_shots(dataset, config, cache: Path, progress: bool | None) -> Path:
    """The shots in the trainer's cache layout, ``cache/<configuration>/``."""
    from medseg.preprocess.pipeline import preprocess_case
    from medseg.progress import track

    folder = cache / config.name
    folder.mkdir(parents=True)
    for item in track(list(enumerate(dataset.cases)), "preprocess shots", enabled=progress):
        preprocess_case(dataset, config, folder, item)
    return folder
