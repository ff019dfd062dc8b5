"""``medseg adapt``: fine-tune a segmentation model folder on a few labelled cases of a target dataset, with one of
the methods of :mod:`medseg.adapt.methods`, on the one trainer and the segmentation task; the new model folder
holds only the trained deltas and a reference to the base (:mod:`medseg.config.adaptation`).

The shots are preprocessed with the base model's plan configuration (:func:`medseg.adapt.target.target_plan`)
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
from medseg.adapt.target import draw_shots, target_plan
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
    read_segmentation_model,
    write_fold_weights,
    write_segmentation_model,
)
from medseg.errors import MedsegError

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
    ``train_options``: ``TrainConfig``/``SegmentationOptions`` fields (``max_iterations``, ``learning_rate``, ...)."""
    import torch

    from medseg.atomic import atomic_folder
    from medseg.data.layout import open_dataset
    from medseg.data.validate import dataset_record, validate_cases
    from medseg.nets.adapted import adapted_network, changing_keys
    from medseg.nets.peft import PeftOptions
    from medseg.output_paths import prepare_output_dir
    from medseg.training.callbacks import Curves, TrainingLog
    from medseg.training.segmentation_task import SegmentationOptions, SegmentationTask
    from medseg.training.service import segmentation_train_config
    from medseg.training.trainer import Trainer
    from medseg.weights_file import sha256_file

    model, output = Path(model), Path(output)
    check_method(method)
    if not model.is_dir():
        raise MedsegError("base model folder not found", path=model, fix="pass the folder that medseg train wrote")
    if budget_seconds is not None and not budget_seconds > 0:
        raise MedsegError(f"the budget must be positive, not {budget_seconds:g} s", fix="use e.g. --budget 10m")
    base_spec, base_plan, base_dataset = read_segmentation_model(model)
    if adaptation_record(base_spec, model) is not None:
        raise MedsegError("the base model is itself an adapted model", path=model,
                          fix="adapt the model it was adapted from, or a model of medseg train")
    fold = base_fold(model, fold)
    options = PeftOptions.from_dict(peft_options or {})
    prepare_output_dir(output, inputs=[dataset, model], must_not_exist=True)
    data = open_dataset(dataset).require_cases()
    chosen = draw_shots(data, shots, seed)
    plan, config = target_plan(base_plan, base_spec.configuration, data.spec)
    label_values = data.spec.predicted_label_values
    new_head = _plain_labels(data.spec.labels) != _plain_labels(base_dataset.labels)
    network_spec = NetworkSpec(base_spec.network.name, base_spec.network.spatial_dims, len(data.spec.channel_names),
                               len(label_values), dict(base_spec.network.options))
    new_stem = network_spec.in_channels != base_spec.network.in_channels
    validate_cases(chosen, progress=progress)
    plan.dataset = dataset_record(chosen, validated=False)
    base_state = read_fold_weights(model, fold)
    record = AdaptationRecord(method, METHODS[method], options.to_dict(), new_head, new_stem, 0, 0,
                              BaseReference.to(output, model, fold, sha256_file(fold_folder(model, fold) / WEIGHTS)),
                              data.spec.name, sorted(c.case_id for c in chosen.cases), seed)
    spec = ModelSpec("segmentation", network_spec, label_values, base_spec.configuration)
    torch.manual_seed(seed)
    network = adapted_network(spec, record, base_state)
    always = changing_keys(network_spec, "num_classes") | (changing_keys(network_spec, "in_channels") if new_stem
                                                           else set())
    counts = freeze(network, trainable_names(network, method, always))
    record.trainable_params, record.frozen_params = counts.trainable, counts.frozen
    run_config = segmentation_train_config(dict(train_options or {}, seed=seed), configuration=config.name,
                                           fold=FOLD, budget_seconds=budget_seconds)
    with tempfile.TemporaryDirectory(prefix="medseg_adapt_") as cache, atomic_folder(output) as partial:
        cache_dir = _preprocess_shots(chosen, config, Path(cache), progress)
        task = SegmentationTask(configuration=config, cache_dir=cache_dir, train_cases=record.shots,
                                val_cases=record.shots, label_values=label_values,
                                options=SegmentationOptions.from_dict(run_config.task_options), seed=seed,
                                num_workers=run_config.num_workers, device=run_config.device)
        trainer = Trainer(network, task, run_config, fold_folder(partial, FOLD),
                          callbacks=[TrainingLog(), FinalDeltas(), Curves()])
        state = trainer.run(progress=progress)
        spec.card = WeightsCard.now(training_data=[data.spec.name or data.root.name], training_cases=shots,
                                    budget_seconds=budget_seconds, train_seconds=round(state.elapsed, 1),
                                    steps=state.iteration,
                                    figures={"adaptation": {"method": method, **counts.to_dict(),
                                                            "base_model": str(model.resolve()), "base_fold": fold}})
        spec.extra[ADAPTATION] = record.to_dict()
        write_segmentation_model(partial, spec, plan, data.spec)
    return AdaptResult(output, counts, state.iteration, state.elapsed, record.shots, new_head, new_stem)


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
