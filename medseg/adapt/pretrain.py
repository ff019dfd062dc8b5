"""``medseg pretrain``: self-supervised pretraining of a plan's network on unlabelled images, into a model folder
that ``medseg train --init`` and ``medseg adapt`` start from.

The plan is the first dataset's (made for the budget, as ``medseg train`` makes one) or ``--plans``; every source
(dataset folders: all their images, labels ignored; or folders of images) is preprocessed with its configuration
into ``OUTPUT/preprocessed/<configuration>/``, and the plan's network, its head giving one output per image
channel, trains on the one trainer with the masked-image task (:mod:`medseg.adapt.masked_image`). A share of the
images (``VALIDATION_SHARE``, at least one) gives the validation reconstruction error and is trained on too (there
are no labels to keep apart). The folder (``model.json`` task ``pretrained``, ``plans.json``, ``dataset_spec.json``,
``fold_all/``) checkpoints every epoch; ``resume`` continues a killed run. Until the final weights are written the
folder has no fold with weights, so nothing starts from a half-trained one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from medseg.adapt.masked_image import METHODS, MaskedImageOptions, MaskedImageTask, mask_block
from medseg.config import Plan, read_json
from medseg.config.dataset_spec import DatasetSpec
from medseg.config.model_folder import (PRETRAINING, ModelSpec, NetworkSpec, WeightsCard, fold_folder,
                                        plan_network_spec, read_model_spec, write_model_spec)
from medseg.config.train_config import TrainConfig
from medseg.errors import MedsegError

FOLD = "all"
VALIDATION_SHARE = 0.1
MAX_VALIDATION_IMAGES = 16


@dataclass
class PretrainResult:
    model_dir: Path
    images: int
    steps: int
    seconds: float
    resumed: bool
    first_val: float | None
    last_val: float | None


def pretrain(sources: Sequence[str | Path], output: str | Path, *, configuration: str, method: str = "mae",
             plans: str | Path | None = None, budget_seconds: float | None = 3600.0, mask_ratio: float = 0.6,
             block: Sequence[int] | None = None, train_options: dict[str, Any] | None = None, resume: bool = False,
             progress: bool | None = None) -> PretrainResult:
    """Pretrain ``configuration``'s network on the images of ``sources`` into ``output``. ``train_options``:
    ``TrainConfig`` fields (``seed``, ``num_workers``, ``threads``, ``max_iterations``, ``learning_rate``, ...).
    Every argument and every image is checked before anything is written."""
    import torch

    from medseg.nets.from_folder import build_network
    from medseg.output_paths import prepare_output_dir
    from medseg.preprocess.unlabelled import check_unlabelled, preprocess_unlabelled
    from medseg.training.checkpoint import check_new_run
    from medseg.training.trainer import Trainer
    from medseg.training.unlabelled import unlabelled_images

    output = Path(output)
    if method not in METHODS:
        raise MedsegError(f"unknown pretraining method {method!r}", fix=f"use one of {', '.join(METHODS)}")
    if not 0.0 < mask_ratio < 1.0:
        raise MedsegError(f"mask ratio {mask_ratio}", fix="use a share between 0 and 1, e.g. 0.6")
    fold_dir = fold_folder(output, FOLD)
    check_new_run(fold_dir, budget_seconds=budget_seconds, resume=resume, example_budget="1h")
    prepare_output_dir(output, inputs=list(sources), overwrite=True)
    images = unlabelled_images(sources)
    plan = _pretraining_plan(sources, plans, configuration, budget_seconds, progress)
    config = plan.configurations[configuration]
    masked_block = mask_block(config, block)  # a block that does not fit the patch is refused before any reading
    channels = len(plan.channel_names)
    check_unlabelled(images, config, channels=channels, progress=progress)
    options = MaskedImageOptions(configuration, method, mask_ratio, list(block) if block else None)
    run_config = TrainConfig(task="pretrain", budget_seconds=budget_seconds, task_options=options.to_dict(),
                             **{k: v for k, v in (train_options or {}).items() if v is not None})
    network_spec = plan_network_spec(config.network, config.network_name)
    network_spec = NetworkSpec(network_spec.name, network_spec.spatial_dims, channels, channels, network_spec.options)
    spec = ModelSpec("pretrained", network_spec, [], configuration,
                     WeightsCard.now(training_data=[Path(s).resolve().name for s in sources],
                                     training_cases=len(images), budget_seconds=budget_seconds),
                     {PRETRAINING: {"method": method, "mask_ratio": mask_ratio,
                                    "block": masked_block, "images": len(images),
                                    "reconstruction": "the head predicts the normalised image, one output per "
                                                      "channel"}})
    _write_folder(output, spec, plan, configuration, _dataset_spec(plan, images))
    cases = preprocess_unlabelled(images, config, output / "preprocessed" / configuration, progress=progress)
    validation = _validation_cases(cases, run_config.seed)
    task = MaskedImageTask(configuration=config, cache_dir=output / "preprocessed" / configuration,
                           train_cases=cases, val_cases=validation, options=options, seed=run_config.seed,
                           num_workers=run_config.num_workers, device=run_config.device)
    torch.manual_seed(run_config.seed)
    trainer = Trainer(build_network(spec), task, run_config, fold_dir)
    resumed = trainer.resume() if resume else False
    state = trainer.run(progress=progress)
    errors = [h["val_masked_mse"] for h in state.history if "val_masked_mse" in h]
    spec = read_model_spec(output)
    spec.card.train_seconds, spec.card.steps = round(state.elapsed, 1), state.iteration
    spec.card.figures = {"val_masked_mse": {"first_epoch": errors[0] if errors else None,
                                            "last_epoch": errors[-1] if errors else None,
                                            "validation_images": len(validation)}}
    write_model_spec(output, spec)
    return PretrainResult(output, len(images), state.iteration, state.elapsed, resumed,
                          errors[0] if errors else None, errors[-1] if errors else None)


def _pretraining_plan(sources: Sequence[str | Path], plans: str | Path | None, configuration: str,
                      budget_seconds: float | None, progress: bool | None) -> Plan:
    """``plans`` read, or the first source's plan made for the budget (it must then be a dataset folder)."""
    if plans is not None:
        path = Path(plans)
        if not path.is_file():
            raise MedsegError("plans file not found", path=path, fix="run medseg plan first or omit --plans")
        plan = Plan.from_dict(read_json(path), path=path)
    else:
        first = Path(sources[0])
        if not (first / "dataset.json").is_file():
            raise MedsegError("no plan to pretrain with: the first source is not a dataset folder", path=first,
                              fix="pass --plans PLANS (from medseg plan), or a dataset folder first")
        from medseg.planning.service import make_plan

        plan = make_plan(first, budget=budget_seconds, progress=progress)
    if configuration not in plan.configurations:
        raise MedsegError(f"no configuration {configuration!r} in the plan", path=plans,
                          fix=f"use one of {', '.join(plan.configurations)}")
    plan = copy.deepcopy(plan)
    plan.configurations = {configuration: plan.configurations[configuration]}
    return plan


def _dataset_spec(plan: Plan, images) -> DatasetSpec:
    """What the folder says of its data: the plan's channels and labels (the labels of the dataset it was planned
    for, which ``medseg adapt`` compares with its target's) and the images' suffix."""
    from medseg.io.formats import require_image_suffix

    return DatasetSpec(plan.dataset_name, list(plan.channel_names), dict(plan.labels),
                       require_image_suffix(Path(images[0][1][0])), num_training=0,
                       description="unlabelled images of a medseg pretrain run")


def _write_folder(output: Path, spec: ModelSpec, plan: Plan, configuration: str, dataset: DatasetSpec) -> None:
    from medseg.config import write_json_atomic

    output.mkdir(parents=True, exist_ok=True)
    write_model_spec(output, spec)
    write_json_atomic(plan.to_dict(), output / "plans.json")
    write_json_atomic(dataset.to_dict(), output / "dataset_spec.json")


def _validation_cases(cases: list[str], seed: int) -> list[str]:
    import numpy as np

    count = min(MAX_VALIDATION_IMAGES, max(1, round(VALIDATION_SHARE * len(cases))))
    return sorted(np.random.default_rng(seed).choice(cases, size=count, replace=False).tolist())
