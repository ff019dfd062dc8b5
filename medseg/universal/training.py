"""``medseg train-universal``: one network over several datasets with different label sets.

Each dataset gets its own plan (``make_plan`` at its share of the budget) and keeps that plan's 2D configuration
(spacing, normalisation, patch and batch size; the patch rounded up to the universal network's stride): 2D and 3D
datasets alike train through 2D patches (a 3D volume through its slices). The classes of all datasets are unified
by name into one vocabulary (``medseg.universal.vocabulary``); the network has one output per single-label class
(``UniversalSource`` maps each dataset's label values to them) and is trained by the one trainer on the
``UniversalTask`` (partial labels, datasets drawn uniformly).

The model folder::

    MODEL/model.json            task "universal", the network, the sources (datasets and their classes), the card
    MODEL/vocabulary.json       the structures and their names
    MODEL/datasets/<name>/plans.json   each dataset's plan (its 2d configuration is what prediction uses)
    MODEL/fold_all/             weights.safetensors, training log, curves, checkpoint (resume)
    MODEL/preprocessed/<name>/  each dataset's cache (not needed to predict)
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Sequence

from medseg.config import Plan, read_json, write_json_atomic
from medseg.config.model_folder import ModelSpec, NetworkSpec, WeightsCard, fold_folder, write_model_spec
from medseg.config.train_config import TrainConfig
from medseg.errors import MedsegError
from medseg.universal.sources import NETWORK_CHANNELS, UniversalSource
from medseg.universal.task import UniversalOptions, UniversalTask
from medseg.universal.vocabulary import Vocabulary, dataset_entries, merge_vocabularies

FOLD = "all"
CONFIGURATION = "2d"
# the shared 2D U-Net: six stages (stride 32), narrow enough to ship (<= 20 MB of float32 weights)
FEATURES = (16, 32, 64, 128, 192, 256)
STRIDE = 2 ** (len(FEATURES) - 1)


@dataclasses.dataclass
class UniversalResult:
    model_dir: Path
    steps: int
    seconds: float
    resumed: bool


def plan_path(model_dir: Path, name: str) -> Path:
    return model_dir / "datasets" / name / "plans.json"


def universal_network(num_outputs: int) -> NetworkSpec:
    """The plan U-Net in 2D, ``NETWORK_CHANNELS`` in, ``num_outputs`` out, deep supervision on."""
    stages = len(FEATURES)
    return NetworkSpec("plan_unet", 2, NETWORK_CHANNELS, num_outputs,
                       {"features_per_stage": list(FEATURES), "kernel_sizes": [[3, 3]] * stages,
                        "strides": [[1, 1]] + [[2, 2]] * (stages - 1), "n_conv_per_stage": 2,
                        "n_conv_per_stage_decoder": 2, "encoder": "plain", "deep_supervision": True})


def network_classes(vocabulary: Vocabulary) -> dict[tuple[str, int], int]:
    """``(dataset, label value) -> output channel`` (1..K): one channel per entry of a single label value, shared
    by every dataset that annotates a structure of that name."""
    channels: dict[tuple[str, int], int] = {}
    count = 0
    for entry in vocabulary.entries:
        single = [o for o in entry.origins if len(o.label_values) == 1]
        if not single:
            continue
        count += 1
        for origin in single:
            channels[(origin.dataset, origin.label_values[0])] = count
    return channels


def _sources(vocabulary: Vocabulary, specs: dict[str, Any]) -> list[UniversalSource]:
    channels = network_classes(vocabulary)
    sources = []
    for name, spec in specs.items():
        values = sorted(spec.foreground_labels.values())
        missing = [v for v in values if (name, v) not in channels]
        if missing:
            raise MedsegError(f"labels {missing} of {name} have no class in the vocabulary",
                              fix="give every foreground label its own name in dataset.json")
        sources.append(UniversalSource(name, len(spec.channel_names), values, [channels[(name, v)] for v in values]))
    return sources


def _rounded_plan(plan: Plan) -> Plan:
    """The plan with its 2D configuration's patch rounded up to a multiple of the universal network's stride."""
    config = plan.configurations[CONFIGURATION]
    patch = [int(math.ceil(p / STRIDE) * STRIDE) for p in config.patch_size]
    plan.configurations = {CONFIGURATION: dataclasses.replace(config, patch_size=patch)}
    return plan


def train_universal(datasets: Sequence[str | Path], model_dir: str | Path, *, budget_seconds: float,
                    resume: bool = False, train_config: dict[str, Any] | None = None,
                    progress: bool | None = None) -> UniversalResult:
    """Train one universal model over ``datasets`` for ``budget_seconds`` in all (each dataset's plan is made
    for an equal share) into ``model_dir``; ``resume`` continues a run that was stopped."""
    import torch

    from medseg.data.layout import open_dataset
    from medseg.devices import require_device
    from medseg.nets.from_folder import build_network
    from medseg.output_paths import prepare_output_dir
    from medseg.planning.service import make_plan
    from medseg.preprocess.pipeline import check_dataset_for_plan, preprocess_dataset
    from medseg.training.trainer import Trainer

    model_dir = Path(model_dir)
    if not budget_seconds or budget_seconds <= 0:
        raise MedsegError(f"the budget must be positive, not {budget_seconds}", fix="use e.g. --budget 2h")
    if len(datasets) < 1:
        raise MedsegError("no datasets given", fix="pass one or more dataset folders")
    opened = [open_dataset(d).require_cases() for d in datasets]
    names = [d.spec.name or d.root.name for d in opened]
    if len(set(names)) != len(names):
        raise MedsegError(f"two datasets have the same name ({', '.join(names)})",
                          fix="give each dataset.json its own name")
    options = dict(train_config or {})
    device = require_device(options.pop("device", None) or "cpu")
    fold_dir = fold_folder(model_dir, FOLD)
    if fold_dir.exists() and any(fold_dir.iterdir()) and not resume:
        raise MedsegError("this model folder already has a training run", path=fold_dir,
                          fix="pass --resume to continue it, or choose another folder with -o")
    prepare_output_dir(model_dir, inputs=[d.root for d in opened], overwrite=True)
    share = budget_seconds / len(opened)
    configurations, caches, train_cases = [], [], []
    for data, name in zip(opened, names):
        path = plan_path(model_dir, name)
        if path.is_file():
            plan = Plan.from_dict(read_json(path), path=path)
        else:
            plan = make_plan(data.root, budget=share, device=device, progress=progress)
            if CONFIGURATION not in plan.configurations:
                raise MedsegError("the planner made no 2D configuration for this dataset", path=data.root,
                                  fix="train it with medseg train instead")
            plan = _rounded_plan(plan)
        write_json_atomic(plan.to_dict(), path)
        check_dataset_for_plan(data, plan, plans_path=path, progress=progress)
        cache_root = model_dir / "preprocessed" / name
        preprocess_dataset(data.root, plan, CONFIGURATION, cache_root, progress=progress, checked=True)
        configurations.append(plan.configurations[CONFIGURATION])
        caches.append(cache_root / CONFIGURATION)
        train_cases.append([c.case_id for c in data.cases])
    vocabulary = merge_vocabularies([dataset_entries(name, d.spec.foreground_labels, d.spec.channel_names,
                                                     d.spec.regions) for d, name in zip(opened, names)])
    specs = {name: d.spec for d, name in zip(opened, names)}
    sources = _sources(vocabulary, specs)
    num_outputs = 1 + len({c for source in sources for c in source.classes})
    spec = ModelSpec("universal", universal_network(num_outputs), list(range(num_outputs)), CONFIGURATION,
                     WeightsCard.now(training_data=names, training_cases=sum(len(c) for c in train_cases),
                                     budget_seconds=budget_seconds),
                     {"sources": [s.to_dict() for s in sources]})
    vocabulary.write(model_dir)
    write_model_spec(model_dir, spec)
    task_options = UniversalOptions.from_dict({k: options.pop(k) for k in ("loss", "validation_batches")
                                               if k in options})
    config = TrainConfig(task="universal", budget_seconds=budget_seconds, device=device,
                         task_options=task_options.to_dict(), **options)
    task = UniversalTask(sources=sources, configurations=configurations, cache_dirs=caches, train_cases=train_cases,
                         num_outputs=num_outputs, options=task_options, seed=config.seed,
                         num_workers=config.num_workers, device=device)
    torch.manual_seed(config.seed)
    trainer = Trainer(build_network(spec), task, config, fold_dir)
    resumed = trainer.resume() if resume else False
    state = trainer.run(progress=progress)
    spec.card.steps, spec.card.train_seconds = state.iteration, round(state.elapsed, 1)
    write_model_spec(model_dir, spec)
    return UniversalResult(model_dir, state.iteration, state.elapsed, resumed)
