"""The interactive task of the trainer: the promptable network trained with simulated interactions.

Each step draws a batch of slices (dataset first, uniformly, so a small dataset is not drowned by a large one),
augments them (flips, 90-degree turns, contrast and gamma), and gives every slice a simulated first prompt of a
random mode (clicks, box, scribbles, box+clicks; jittered box, near-central first click). Then, as in RITM and
ScribblePrompt, the network is run without gradients for 0..``max_corrections`` rounds on its own predictions,
each round adding the simulator's corrective prompt in the largest error region and feeding the last probability
back as the previous-mask channel; the loss (Dice + binary cross-entropy, per slice) is taken on the final round.
The image embedding is computed once per step and shared by every round.

The schedule, checkpoints, resume and the curves are the one trainer's (``medseg.training.Trainer``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from medseg.atomic import remove_stale_temporaries
from medseg.config.model_folder import WeightsCard, write_model_spec
from medseg.config.train_config import TrainConfig, memory_task_config, record_from_dict
from medseg.errors import MedsegError
from medseg.interactive.predictor import FOLD, interactive_spec
from medseg.interactive.prompts import PromptSet, encode_prompts
from medseg.interactive.simulate import MODES, corrective_prompt, initial_prompts
from medseg.interactive.slices import SliceBank
from medseg.metrics import confusion, dice
from medseg.nets.promptable_unet import PromptableConfig, PromptableUNet
from medseg.training.callbacks import default_callbacks
from medseg.training.trainer import Trainer


@dataclass
class InteractiveOptions:
    """The interactive task's part of ``TrainConfig.task_options``."""

    batch_size: int = 8
    max_corrections: int = 4
    mode_weights: dict[str, float] = field(default_factory=lambda: {"clicks": 0.4, "box": 0.2, "scribbles": 0.2,
                                                                    "box+clicks": 0.2})
    box_jitter: float = 0.1
    click_tolerance: float = 0.5
    validation_clicks: int = 5
    validation_slices: int = 32

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "InteractiveOptions":
        return record_from_dict(cls, data, "interactive option")


def interactive_train_config(*, learning_rate: float = 2e-3, **options: Any) -> TrainConfig:
    """The ``TrainConfig`` of an interactive run (``memory_task_config``'s run options: budget_seconds,
    max_iterations, weight_decay, validate_every, threads, seed, device); the other ``options`` as
    :class:`InteractiveOptions`."""
    return memory_task_config("interactive", InteractiveOptions, learning_rate=learning_rate, **options)


def augment(images: torch.Tensor, targets: torch.Tensor, rng: np.random.Generator
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips, 90-degree turns, contrast and gamma per slice. ``images (B, C, H, W)`` in [0, 1] float32,
    ``targets (B, H, W)`` bool; square grids keep their shape under turns."""
    out_images, out_targets = [], []
    for image, target in zip(images, targets):
        if rng.random() < 0.5:
            image, target = image.flip(-1), target.flip(-1)
        if rng.random() < 0.5:
            image, target = image.flip(-2), target.flip(-2)
        if image.shape[-1] == image.shape[-2]:
            turns = int(rng.integers(4))
            image, target = torch.rot90(image, turns, (-2, -1)), torch.rot90(target, turns, (-2, -1))
        gamma = float(np.exp(rng.uniform(-0.4, 0.4)))
        contrast, shift = float(rng.uniform(0.75, 1.25)), float(rng.uniform(-0.1, 0.1))
        image = ((image.clamp(0, 1) ** gamma - 0.5) * contrast + 0.5 + shift).clamp(0, 1)
        out_images.append(image)
        out_targets.append(target)
    return torch.stack(out_images), torch.stack(out_targets)


class InteractiveTask:
    """Batches of slices from a ``SliceBank`` and the loss after simulated interaction rounds; validation: mean
    Dice after 1 and after ``validation_clicks`` simulated clicks on held-out slices."""

    name = "train-interactive"
    default_iterations = 1000

    def __init__(self, bank: SliceBank, options: InteractiveOptions, *, validation: SliceBank | None = None,
                 grid: Sequence[int], seed: int = 0, device: str = "cpu"):
        from medseg.losses import create

        self.bank, self.validation, self.options = bank, validation, options
        self.grid, self.seed, self.device = list(grid), seed, torch.device(device)
        modes = [m for m in MODES if options.mode_weights.get(m, 0) > 0]
        if not modes:
            raise MedsegError("no interaction mode has a positive weight", fix=f"weight one of {', '.join(MODES)}")
        weights = np.array([options.mode_weights[m] for m in modes], float)
        self.modes, self.mode_p = modes, weights / weights.sum()
        self.criterion = create("dice_ce", activation="sigmoid", batch=False)
        self.rng = np.random.default_rng(seed)

    def batches(self, epoch: int, count: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``count`` batches ``images (B, C, H, W)`` float32, ``targets (B, H, W)`` bool: dataset uniform, then
        slice; the epoch's generator also draws the simulated prompts of its steps."""
        self.rng = np.random.default_rng([self.seed, epoch])
        datasets = np.unique(self.bank.dataset)
        for _ in range(count):
            indices = []
            for _ in range(self.options.batch_size):
                members = np.flatnonzero(self.bank.dataset == self.rng.choice(datasets))
                indices.append(int(self.rng.choice(members)))
            yield augment(self.bank.images[indices].float(), self.bank.targets[indices], self.rng)

    def _prompt_maps(self, prompt_sets: Sequence[PromptSet], previous: np.ndarray | None) -> torch.Tensor:
        maps = [encode_prompts(p, self.grid, None if previous is None else previous[i])
                for i, p in enumerate(prompt_sets)]
        return torch.from_numpy(np.stack(maps)).to(self.device)

    def loss(self, network: PromptableUNet, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, targets = batch
        masks = targets.numpy()
        options = self.options
        modes = self.rng.choice(self.modes, size=len(masks), p=self.mode_p)
        prompt_sets = [initial_prompts(m, t, self.rng, box_jitter=options.box_jitter,
                                       click_tolerance=options.click_tolerance) for m, t in zip(modes, masks)]
        embedding = network.embed(images.to(self.device))
        previous = None
        for _ in range(int(self.rng.integers(options.max_corrections + 1))):
            with torch.no_grad():
                probability = torch.sigmoid(network.decode([e.detach() for e in embedding],
                                                           self._prompt_maps(prompt_sets, previous)).float())
            previous = probability[:, 0].cpu().numpy()
            for mode, prompts, prediction, target in zip(modes, prompt_sets, previous, masks):
                prompt = corrective_prompt(mode, prediction >= 0.5, target, self.rng)
                if prompt is not None:
                    prompts.add(prompt)
        logits = network.decode(embedding, self._prompt_maps(prompt_sets, previous))
        return self.criterion(logits.float(), targets.to(self.device)[:, None].float())

    def validate(self, network: PromptableUNet) -> dict[str, float]:
        """``{"dice_1_clicks": ..., "dice_K_clicks": ...}`` on up to ``validation_slices`` held-out slices (per-slice
        Dice from ``medseg.metrics``, averaged); empty without held-out slices."""
        if self.validation is None or len(self.validation) == 0:
            return {}
        network.eval()
        bank, clicks = self.validation, self.options.validation_clicks
        chosen = np.linspace(0, len(bank) - 1, min(self.options.validation_slices, len(bank))).round().astype(int)
        images, masks = bank.images[chosen].float().to(self.device), bank.targets[chosen].numpy()
        embedding = network.embed(images)
        rng = np.random.default_rng(0)
        prompt_sets = [initial_prompts("clicks", t, rng) for t in masks]
        previous, figures = None, {}
        for round_index in range(1, clicks + 1):
            probability = torch.sigmoid(network.decode(embedding, self._prompt_maps(prompt_sets, previous)).float())
            previous = probability[:, 0].cpu().numpy()
            predicted = previous >= 0.5
            if round_index in (1, clicks):
                scores = [dice(confusion(p, t)) for p, t in zip(predicted, masks)]
                figures[f"dice_{round_index}_clicks"] = round(float(np.mean(scores)), 4)
            for prompts, prediction, target in zip(prompt_sets, predicted, masks):
                prompt = corrective_prompt("clicks", prediction, target, rng)
                if prompt is not None:
                    prompts.add(prompt)
        return figures


class InteractiveModel:
    """The trainer's last callback for an interactive run: ``model.json`` (network, weights card, ``info``) in the
    model folder above the trainer's ``fold_all/`` (whose weights the default callbacks have written)."""

    def __init__(self, model_folder: Path, info: dict[str, Any]):
        self.model_folder, self.info = model_folder, info

    def on_epoch_end(self, trainer: Trainer) -> None:
        pass

    def on_train_end(self, trainer: Trainer) -> None:
        history = trainer.state.history
        figures = {k: v for k, v in (history[-1] if history else {}).items() if k.startswith("dice_")}
        cases = self.info.get("train_cases", {})
        card = WeightsCard.now(training_data=[Path(d).name for d in self.info.get("datasets", [])],
                               training_cases=sum(len(v) for v in cases.values()) if isinstance(cases, dict) else 0,
                               budget_seconds=trainer.config.budget_seconds,
                               train_seconds=round(trainer.state.elapsed, 1),
                               steps=trainer.state.iteration, figures={"holdout_slices": figures})
        write_model_spec(self.model_folder, interactive_spec(trainer.network.config, self.info, card))


def interactive_trainer(bank: SliceBank, output: str | Path, *, config: TrainConfig | None = None,
                        network_config: PromptableConfig | None = None, validation: SliceBank | None = None,
                        info: dict[str, Any] | None = None) -> Trainer:
    """The one ``Trainer`` set up for a ``PromptableUNet`` on ``bank``: the model folder ``output`` gets
    ``model.json`` and ``fold_all/`` (weights, checkpoint, training log, curves)."""
    config = config or interactive_train_config()
    if config.task != "interactive":
        raise MedsegError(f"a {config.task!r} TrainConfig for interactive training", fix="use task='interactive'")
    grid = list(bank.images.shape[2:])
    network_config = network_config or PromptableConfig(image_channels=bank.images.shape[1], grid=grid)
    network_config.grid = grid
    torch.manual_seed(config.seed)
    network = PromptableUNet(network_config)
    task = InteractiveTask(bank, InteractiveOptions.from_dict(config.task_options), validation=validation,
                           grid=grid, seed=config.seed, device=config.device)
    output = Path(output)
    return Trainer(network, task, config, output / f"fold_{FOLD}",
                   callbacks=[*default_callbacks(), InteractiveModel(output, info or {})])


def train_interactive(datasets: Sequence[str | Path], output: str | Path, *, config: TrainConfig | None = None,
                      network_config: PromptableConfig | None = None, train_fraction: float = 0.8,
                      grid: Sequence[int] = (128, 128), slice_step: int = 2, resume: bool = False,
                      progress: bool | None = None) -> Path:
    """Load the training and held-out slices of ``datasets`` and train one model across them."""
    from medseg.devices import require_device
    from medseg.interactive.slices import load_slices

    if config is not None:
        require_device(config.device)  # before the datasets are read
    train = load_slices(datasets, part="train", train_fraction=train_fraction, grid=grid, slice_step=slice_step)
    holdout = None
    if train_fraction < 1:
        holdout = load_slices(datasets, part="holdout", train_fraction=train_fraction, grid=grid,
                              slice_step=slice_step * 4)
    info = {"datasets": [str(Path(d).resolve()) for d in datasets], "train_fraction": train_fraction,
            "train_cases": train.case_ids, "holdout_cases": holdout.case_ids if holdout else {},
            "train_slices": len(train)}
    trainer = interactive_trainer(train, output, config=config, network_config=network_config, validation=holdout,
                                  info=info)
    if resume:
        remove_stale_temporaries(output)  # model.json's; the trainer cleans its fold_all/
        trainer.resume()
    trainer.run(progress=progress)
    return Path(output)

