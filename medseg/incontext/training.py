"""Meta-training of the in-context networks as a task of the one trainer (``medseg.training.Trainer``).

Each step draws one support size ``k`` (uniform in ``[min_support, max_support]``) and a batch of tasks: a real
task (dataset uniform, then one of its label/region/axis tasks, then ``k + 1`` slices of distinct cases where
there are enough) or, with probability ``synthetic_fraction``, a synthetic task (``medseg.incontext.synthetic``).
Task-level augmentation applies to the whole task, in-task augmentation to each example
(``medseg.incontext.augment``). The first example is the target, the other ``k`` the support set.

Loss: Dice + binary cross-entropy per target. The stochastic network (Tyche) predicts ``candidates`` masks per
target from independent noise and is trained with the best-candidate loss: the smallest of the candidates'
losses, so that candidates are free to differ and each covers a plausible answer.

The schedule, checkpoints, resume and curves are the one trainer's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from medseg.atomic import remove_stale_temporaries
from medseg.config.model_folder import WeightsCard, write_model_spec
from medseg.config.train_config import TrainConfig, memory_task_config, record_from_dict
from medseg.errors import MedsegError
from medseg.incontext.augment import in_task_augment, task_augment
from medseg.incontext.model import FOLD, incontext_spec
from medseg.incontext.synthetic import synthetic_task
from medseg.incontext.tasks import TaskBank, draw_real_task
from medseg.losses.overlap import dice as soft_dice_loss
from medseg.losses.pixelwise import binary_cross_entropy
from medseg.metrics import confusion, dice
from medseg.nets.incontext_unet import InContextConfig, InContextUNet
from medseg.training.callbacks import default_callbacks
from medseg.training.trainer import Trainer


@dataclass
class InContextOptions:
    """The in-context task's part of ``TrainConfig.task_options``."""

    batch_size: int = 4
    min_support: int = 1
    max_support: int = 8
    synthetic_fraction: float = 0.5
    candidates: int = 3  # stochastic network: candidates per target in training
    augment_probability: float = 0.5
    validation_tasks: int = 24
    validation_support: int = 8

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InContextOptions:
        return record_from_dict(cls, data, "in-context option")


def incontext_train_config(*, learning_rate: float = 1e-3, **options: Any) -> TrainConfig:
    """The ``TrainConfig`` of an in-context run (``memory_task_config``'s run options: budget_seconds,
    max_iterations, weight_decay, validate_every, threads, seed, device); the other ``options`` as
    :class:`InContextOptions`."""
    return memory_task_config("incontext", InContextOptions, learning_rate=learning_rate, **options)


class TaskBatch(NamedTuple):
    """``target (B, 1, H, W)``, ``target_mask (B, 1, H, W)`` binary float, ``support_images (B, k, 1, H, W)``,
    ``support_masks (B, k, 1, H, W)`` in [0, 1]."""

    target: torch.Tensor
    target_mask: torch.Tensor
    support_images: torch.Tensor
    support_masks: torch.Tensor


def stack_tasks(tasks: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> TaskBatch:
    """``[(images (k+1, H, W), masks (k+1, H, W))]`` -> a ``TaskBatch`` (the first example is the target)."""
    images = torch.stack([t[0] for t in tasks])[:, :, None]
    masks = torch.stack([t[1] for t in tasks])[:, :, None]
    return TaskBatch(images[:, 0], (masks[:, 0] >= 0.5).float(), images[:, 1:], masks[:, 1:])


def candidate_losses(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``logits (B, K, H, W)``, ``target (B, 1, H, W)`` -> ``(B, K)``: soft Dice + binary cross-entropy of each
    candidate against the target."""
    target = target.expand_as(logits)
    overlap = soft_dice_loss(logits, target, activation="sigmoid", reduction="none")
    pixelwise = binary_cross_entropy(logits, target, reduction="none").flatten(2).mean(2)
    return overlap + pixelwise


class InContextTask:
    """Batches of tasks from a ``TaskBank`` (and synthetic ones) and the (best-candidate) loss; validation: mean
    Dice on fixed held-out tasks with ``validation_support`` examples (best and mean candidate for Tyche)."""

    name = "train-incontext"
    default_iterations = 2000

    def __init__(self, bank: TaskBank | None, options: InContextOptions, *, validation: TaskBank | None = None,
                 grid: Sequence[int], seed: int = 0, device: str = "cpu"):
        if bank is None and options.synthetic_fraction <= 0:
            raise MedsegError("no datasets and no synthetic tasks to train on",
                              fix="give datasets, or a synthetic fraction above 0")
        if not 1 <= options.min_support <= options.max_support:
            raise MedsegError(f"support sizes {options.min_support}..{options.max_support} are not a range from 1",
                              fix="use 1 <= min_support <= max_support")
        self.bank, self.options, self.grid, self.seed = bank, options, list(grid), seed
        self.device = torch.device(device)
        self.tasks = bank.usable_tasks() if bank is not None else np.array([], int)
        if bank is not None and len(self.tasks) == 0:
            raise MedsegError("no task has slices from two different cases", fix="give datasets with more cases")
        self.synthetic = options.synthetic_fraction if len(self.tasks) else 1.0
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.validation_batches = self._validation_batches(validation)

    def draw_task(self, rng: np.random.Generator, count: int, *, augment: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """One task of ``count`` examples: ``images (count, H, W)``, ``masks (count, H, W)`` float32."""
        if rng.random() < self.synthetic:
            images, masks = synthetic_task(rng, count, self.grid)
            masks = masks.float()
        else:
            images, masks, _ = draw_real_task(self.bank, rng, count, self.tasks)
        if augment:
            p = self.options.augment_probability
            images, masks = task_augment(images, masks, rng, probability=p)
            images, masks = in_task_augment(images, masks, rng, probability=p)
        return images, masks

    def batches(self, epoch: int, count: int) -> Iterator[TaskBatch]:
        """``count`` batches; the epoch's generators draw the tasks and the candidates' noise."""
        self.rng = np.random.default_rng([self.seed, epoch])
        self.generator = torch.Generator().manual_seed(int(self.rng.integers(2**62)))
        o = self.options
        for _ in range(count):
            k = int(self.rng.integers(o.min_support, o.max_support + 1))
            yield stack_tasks([self.draw_task(self.rng, k + 1) for _ in range(o.batch_size)])

    def _candidates(self, network: InContextUNet) -> int:
        return max(1, self.options.candidates) if network.config.stochastic else 1

    def loss(self, network: InContextUNet, batch: TaskBatch) -> torch.Tensor:
        batch = TaskBatch(*(t.to(self.device) for t in batch))
        logits = network(batch.target, batch.support_images, batch.support_masks,
                         candidates=self._candidates(network), generator=self.generator)
        return candidate_losses(logits.float(), batch.target_mask).min(1).values.mean()

    def _validation_batches(self, validation: TaskBank | None) -> list[TaskBatch]:
        """Fixed tasks (seed 0): held-out real tasks when there is a held-out bank, else synthetic ones."""
        o = self.options
        rng = np.random.default_rng(0)
        count = o.validation_support + 1
        if validation is not None and len(validation.usable_tasks()):
            tasks = [draw_real_task(validation, rng, count)[:2] for _ in range(o.validation_tasks)]
        else:
            tasks = [tuple(t.float() for t in synthetic_task(rng, count, self.grid)) for _ in range(o.validation_tasks)]
        return [stack_tasks(tasks[i:i + o.batch_size]) for i in range(0, len(tasks), o.batch_size)]

    def validate(self, network: InContextUNet) -> dict[str, float]:
        """``{"dice_kN": mean Dice}`` (Tyche: of the mean candidate, and ``best_dice_kN`` of the best one)."""
        network.eval()
        generator = torch.Generator().manual_seed(0)
        k, candidates = self.options.validation_support, max(self._candidates(network), 1)
        mean_scores, best_scores = [], []
        for batch in self.validation_batches:
            batch = TaskBatch(*(t.to(self.device) for t in batch))
            probability = torch.sigmoid(network(batch.target, batch.support_images, batch.support_masks,
                                                candidates=candidates, generator=generator).float()).cpu().numpy()
            truth = batch.target_mask[:, 0].cpu().numpy() >= 0.5
            for candidate_p, reference in zip(probability, truth):
                mean_scores.append(dice(confusion(candidate_p.mean(0) >= 0.5, reference)))
                best_scores.append(max(dice(confusion(p >= 0.5, reference)) for p in candidate_p))
        figures = {f"dice_k{k}": round(float(np.nanmean(mean_scores)), 4)}
        if network.config.stochastic:
            figures[f"best_dice_k{k}"] = round(float(np.nanmean(best_scores)), 4)
        return figures


class InContextModelWriter:
    """The trainer's last callback: ``model.json`` (network, weights card, ``info``) in the model folder above the
    trainer's ``fold_all/`` (whose weights the default callbacks have written)."""

    def __init__(self, model_folder: Path, info: dict[str, Any]):
        self.model_folder, self.info = model_folder, info

    def on_epoch_end(self, trainer: Trainer) -> None:
        pass

    def on_train_end(self, trainer: Trainer) -> None:
        history = trainer.state.history
        figures = {k: v for k, v in (history[-1] if history else {}).items() if "dice" in k}
        cases = self.info.get("train_cases", {})
        names = [Path(d).name for d in self.info.get("datasets", [])]
        card = WeightsCard.now(training_data=names + (["synthetic tasks"] if self.info.get("synthetic") else []),
                               training_cases=sum(len(v) for v in cases.values()),
                               budget_seconds=trainer.config.budget_seconds,
                               train_seconds=round(trainer.state.elapsed, 1), steps=trainer.state.iteration,
                               figures={"validation_tasks": figures})
        write_model_spec(self.model_folder, incontext_spec(trainer.network.config, self.info, card))


def incontext_trainer(bank: TaskBank | None, output: str | Path, *, config: TrainConfig | None = None,
                      network_config: InContextConfig | None = None, validation: TaskBank | None = None,
                      info: dict[str, Any] | None = None) -> Trainer:
    """The one ``Trainer`` set up for an ``InContextUNet``: the model folder ``output`` gets ``model.json`` and
    ``fold_all/`` (weights, checkpoint, training log, curves)."""
    config = config or incontext_train_config()
    if config.task != "incontext":
        raise MedsegError(f"a {config.task!r} TrainConfig for in-context training", fix="use task='incontext'")
    network_config = network_config or InContextConfig()
    if bank is not None:
        network_config.grid = list(bank.images.shape[1:])
    torch.manual_seed(config.seed)
    network = InContextUNet(network_config)
    options = InContextOptions.from_dict(config.task_options)
    task = InContextTask(bank, options, validation=validation, grid=network_config.grid, seed=config.seed,
                         device=config.device)
    info = {"synthetic": task.synthetic > 0, **(info or {})}
    output = Path(output)
    return Trainer(network, task, config, output / f"fold_{FOLD}",
                   callbacks=[*default_callbacks(), InContextModelWriter(output, info)])


def selected_datasets(datasets: Sequence[str | Path], exclude: Sequence[str]) -> list[Path]:
    """``datasets`` without those named in ``exclude`` (folder names or paths); an exclusion that matches none is
    a ``MedsegError`` (a typo would otherwise leak the evaluation dataset into training)."""
    paths = [Path(d) for d in datasets]
    names = {p.resolve().name: p for p in paths}
    for item in exclude:
        if Path(item).resolve().name not in names and Path(item).name not in names:
            raise MedsegError(f"--exclude {item} matches none of the datasets ({', '.join(sorted(names))})",
                              fix="name one of the dataset folders given")
    dropped = {Path(item).name for item in exclude} | {Path(item).resolve().name for item in exclude}
    return [p for p in paths if p.resolve().name not in dropped]


def train_incontext(datasets: Sequence[str | Path], output: str | Path, *, exclude: Sequence[str] = (),
                    config: TrainConfig | None = None, network_config: InContextConfig | None = None,
                    train_fraction: float = 0.8, slices_per_axis: int = 4, max_cases: int | None = None,
                    resume: bool = False, progress: bool | None = None) -> Path:
    """Load the training and held-out blocks of ``datasets`` (minus ``exclude``; at most ``max_cases`` cases of
    each block) and meta-train one model."""
    from medseg.devices import require_device
    from medseg.incontext.tasks import load_task_bank

    if config is not None:
        require_device(config.device)  # before the datasets are read
    network_config = network_config or InContextConfig()
    chosen = selected_datasets(datasets, exclude)
    grid = tuple(network_config.grid)
    train = load_task_bank(chosen, part="train", train_fraction=train_fraction, grid=grid,
                           slices_per_axis=slices_per_axis, max_cases=max_cases) if chosen else None
    holdout = None
    if chosen and train_fraction < 1:
        holdout = load_task_bank(chosen, part="holdout", train_fraction=train_fraction, grid=grid,
                                 slices_per_axis=1, max_cases=max_cases)
    info = {"datasets": [str(p.resolve()) for p in chosen], "excluded": [Path(e).name for e in exclude],
            "train_fraction": train_fraction, "train_cases": train.case_ids if train else {},
            "holdout_cases": holdout.case_ids if holdout else {}, "train_slices": len(train) if train else 0,
            "tasks": len(train.task_names) if train else 0}
    trainer = incontext_trainer(train, output, config=config, network_config=network_config, validation=holdout,
                                info=info)
    if resume:
        remove_stale_temporaries(output)
        trainer.resume()
    trainer.run(progress=progress)
    return Path(output)
