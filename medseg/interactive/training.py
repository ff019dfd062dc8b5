"""Training the promptable network with simulated interactions, under a wall-clock budget.

Each step draws a batch of slices (dataset first, uniformly, so a small dataset is not drowned by a large one),
augments them (flips, 90-degree turns, contrast and gamma), and gives every slice a simulated first prompt of a
random mode (clicks, box, scribbles, box+clicks; jittered box, near-central first click). Then, as in RITM and
ScribblePrompt, the network is run without gradients for 0..``max_corrections`` rounds on its own predictions,
each round adding the simulator's corrective prompt in the largest error region and feeding the last probability
back as the previous-mask channel; the loss (Dice + binary cross-entropy, per slice) is taken on the final round.
The image embedding is computed once per step and shared by every round.

The schedule is the pipeline trainer's: ``fraction = max(time used / budget, steps / max_steps)``, learning rate
``lr0 * (1 - fraction) ** 0.9``, training ends at ``fraction = 1``. A checkpoint is written atomically every
``checkpoint_seconds`` and at the end; ``resume=True`` continues from it (time used is stored in it).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from medseg.atomic import atomic_write, remove_stale_temporaries
from medseg.config import write_json_atomic
from medseg.errors import MedsegError
from medseg.interactive.model import PromptableConfig, PromptableUNet
from medseg.interactive.predictor import save_model
from medseg.interactive.prompts import PromptSet, encode_prompts
from medseg.interactive.simulate import MODES, corrective_prompt, initial_prompts
from medseg.interactive.slices import SliceBank
from medseg.progress import FractionBar
from medseg.training.checkpoint import load_checkpoint, save_checkpoint
from medseg.training.trainer import poly_learning_rate, schedule_fraction


@dataclass
class InteractiveTrainConfig:
    """Options of one ``train-interactive`` run (saved in the model folder)."""

    budget_seconds: float | None = 600.0
    max_steps: int | None = None  # default: no step limit under a budget, else 1000
    batch_size: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    max_corrections: int = 4
    mode_weights: dict[str, float] = field(default_factory=lambda: {"clicks": 0.4, "box": 0.2, "scribbles": 0.2,
                                                                    "box+clicks": 0.2})
    box_jitter: float = 0.1
    click_tolerance: float = 0.5
    validate_every: int = 100
    checkpoint_seconds: float = 60.0
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None  # torch threads on a CPU; default: all cores

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def soft_dice_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-slice soft Dice + BCE, averaged: ``logits (B, 1, H, W)``, ``targets (B, H, W)`` bool."""
    from medseg.losses import create

    loss = create("dice_ce", activation="sigmoid", batch=False)
    return loss(logits, targets[:, None].float())


class InteractiveTrainer:
    """Trains a ``PromptableUNet`` on a ``SliceBank`` into ``output`` (a model folder)."""

    def __init__(self, bank: SliceBank, output: str | Path, *, config: InteractiveTrainConfig | None = None,
                 network_config: PromptableConfig | None = None, validation: SliceBank | None = None,
                 info: dict[str, Any] | None = None):
        self.bank, self.validation = bank, validation
        self.output = Path(output)
        self.config = config or InteractiveTrainConfig()
        grid = list(bank.images.shape[2:])
        self.network_config = network_config or PromptableConfig(image_channels=bank.images.shape[1], grid=grid)
        self.network_config.grid = grid
        self.device = torch.device(self.config.device)
        torch.manual_seed(self.config.seed)
        self.network = PromptableUNet(self.network_config).to(self.device)
        self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.config.learning_rate,
                                           weight_decay=self.config.weight_decay)
        self.rng = np.random.default_rng(self.config.seed)
        self.max_steps = self.config.max_steps or (10 ** 9 if self.config.budget_seconds else 1000)
        self.step_count, self.elapsed, self.history = 0, 0.0, []
        self.info = info or {}
        modes = [m for m in MODES if self.config.mode_weights.get(m, 0) > 0]
        if not modes:
            raise MedsegError("no interaction mode has a positive weight", fix=f"weight one of {', '.join(MODES)}")
        weights = np.array([self.config.mode_weights[m] for m in modes], float)
        self.modes, self.mode_p = modes, weights / weights.sum()

    @property
    def checkpoint_path(self) -> Path:
        return self.output / "checkpoint.pt"

    def fraction(self, elapsed: float | None = None) -> float:
        return schedule_fraction(self.elapsed if elapsed is None else elapsed, self.step_count,
                                 self.config.budget_seconds, self.max_steps)

    def resume(self) -> bool:
        remove_stale_temporaries(self.output)  # a kill's leftovers (temporaries whose writer is gone)
        if not self.checkpoint_path.is_file():
            return False
        state = load_checkpoint(self.checkpoint_path)
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count, self.elapsed = int(state["step"]), float(state["elapsed"])
        self.history = list(state["history"])
        self.rng = np.random.default_rng([self.config.seed, self.step_count])
        return True

    def _checkpoint(self) -> None:
        save_checkpoint({"network": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
                         "step": self.step_count, "elapsed": self.elapsed, "history": self.history},
                        self.checkpoint_path)

    def _sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch ``images (B, C, H, W)`` float32, ``targets (B, H, W)`` bool: dataset uniform, then slice."""
        datasets = np.unique(self.bank.dataset)
        indices = []
        for _ in range(self.config.batch_size):
            members = np.flatnonzero(self.bank.dataset == self.rng.choice(datasets))
            indices.append(int(self.rng.choice(members)))
        return augment(self.bank.images[indices].float(), self.bank.targets[indices], self.rng)

    def _prompt_maps(self, prompt_sets: Sequence[PromptSet], previous: np.ndarray | None) -> torch.Tensor:
        grid = self.network_config.grid
        maps = [encode_prompts(p, grid, None if previous is None else previous[i]) for i, p in enumerate(prompt_sets)]
        return torch.from_numpy(np.stack(maps)).to(self.device)

    def step(self) -> float:
        """One optimisation step with simulated interaction rounds; the loss."""
        images, targets = self._sample()
        masks = targets.numpy()
        modes = self.rng.choice(self.modes, size=len(masks), p=self.mode_p)
        prompt_sets = [initial_prompts(m, t, self.rng, box_jitter=self.config.box_jitter,
                                       click_tolerance=self.config.click_tolerance) for m, t in zip(modes, masks)]
        self.network.train()
        embedding = self.network.embed(images.to(self.device))
        previous = None
        rounds = int(self.rng.integers(self.config.max_corrections + 1))
        for _ in range(rounds):
            with torch.no_grad():
                probability = torch.sigmoid(self.network.decode([e.detach() for e in embedding],
                                                                self._prompt_maps(prompt_sets, previous)))
            previous = probability[:, 0].cpu().numpy()
            for mode, prompts, prediction, target in zip(modes, prompt_sets, previous, masks):
                prompt = corrective_prompt(mode, prediction >= 0.5, target, self.rng)
                if prompt is not None:
                    prompts.add(prompt)
        logits = self.network.decode(embedding, self._prompt_maps(prompt_sets, previous))
        loss = soft_dice_bce(logits, targets.to(self.device))
        if not torch.isfinite(loss):
            raise MedsegError(f"the loss became {loss.item()} at step {self.step_count}",
                              fix="lower the learning rate")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12.0)
        self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def validate(self, clicks: int = 5, limit: int = 32) -> dict[str, float]:
        """Mean Dice after 1 and after ``clicks`` simulated clicks on (up to ``limit``) held-out slices."""
        if self.validation is None:
            return {}
        self.network.eval()
        bank = self.validation
        chosen = np.linspace(0, len(bank) - 1, min(limit, len(bank))).round().astype(int)
        images, masks = bank.images[chosen].float().to(self.device), bank.targets[chosen].numpy()
        embedding = self.network.embed(images)
        rng = np.random.default_rng(0)
        prompt_sets = [initial_prompts("clicks", t, rng) for t in masks]
        previous, dice = None, {}
        for round_index in range(1, clicks + 1):
            probability = torch.sigmoid(self.network.decode(embedding, self._prompt_maps(prompt_sets, previous)))
            previous = probability[:, 0].cpu().numpy()
            predicted = previous >= 0.5
            overlap = (predicted & masks).sum((1, 2))
            scores = 2 * overlap / np.maximum(predicted.sum((1, 2)) + masks.sum((1, 2)), 1)
            if round_index in (1, clicks):
                dice[f"dice_{round_index}_clicks"] = round(float(scores.mean()), 4)
            for prompts, prediction, target in zip(prompt_sets, predicted, masks):
                prompt = corrective_prompt("clicks", prediction, target, rng)
                if prompt is not None:
                    prompts.add(prompt)
        self.network.train()
        return dice

    def run(self, *, resume: bool = False, progress: bool | None = None) -> Path:
        """Train until the budget or step limit; write the model folder; return its path."""
        self.output.mkdir(parents=True, exist_ok=True)
        if resume:
            self.resume()
        threads = torch.get_num_threads()
        if self.device.type == "cpu" and self.config.threads:
            torch.set_num_threads(self.config.threads)
        losses: list[float] = []
        started = time.perf_counter()
        base = self.elapsed
        last_checkpoint = started
        try:
            with FractionBar("train-interactive", enabled=progress) as bar:
                while self.fraction(base + time.perf_counter() - started) < 1.0:
                    fraction = self.fraction(base + time.perf_counter() - started)
                    for group in self.optimizer.param_groups:
                        group["lr"] = poly_learning_rate(self.config.learning_rate, fraction)
                    losses.append(self.step())
                    self.step_count += 1
                    self.elapsed = base + time.perf_counter() - started
                    if self.step_count % self.config.validate_every == 0:
                        self._record(losses)
                        losses = []
                    if time.perf_counter() - last_checkpoint >= self.config.checkpoint_seconds:
                        self._checkpoint()
                        last_checkpoint = time.perf_counter()
                    bar.update(self.fraction(), f"step {self.step_count} loss {np.mean(losses[-20:] or [0]):.3f}")
            if losses or not self.history:
                self._record(losses)
        finally:
            torch.set_num_threads(threads)
        self._checkpoint()
        self._finish()
        return self.output

    def _record(self, losses: list[float]) -> None:
        entry = {"step": self.step_count, "elapsed": round(self.elapsed, 1),
                 "lr": self.optimizer.param_groups[0]["lr"],
                 "train_loss": round(float(np.mean(losses)), 4) if losses else None, **self.validate()}
        self.history.append(entry)

    def _finish(self) -> None:
        info = {**self.info, "train_config": self.config.to_dict(), "steps": self.step_count,
                "train_seconds": round(self.elapsed, 1), "history": self.history}
        save_model(self.network, self.output, info)
        write_json_atomic({"history": self.history}, self.output / "training_log.json")
        self._plot()

    def _plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [h["step"] for h in self.history]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(steps, [h["train_loss"] for h in self.history], color="tab:blue", label="train loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        if any("dice_1_clicks" in h for h in self.history):
            twin = ax.twinx()
            for key, colour in (("dice_1_clicks", "tab:orange"), ("dice_5_clicks", "tab:green")):
                twin.plot(steps, [h.get(key) for h in self.history], color=colour, label=f"held-out {key}")
            twin.set_ylim(0, 1)
            twin.set_ylabel("Dice")
        fig.legend(loc="upper center", ncol=3, fontsize=8)
        fig.tight_layout()
        atomic_write(self.output / "progress.png", lambda temporary: fig.savefig(temporary, format="png", dpi=100))
        plt.close(fig)


def train_interactive(datasets: Sequence[str | Path], output: str | Path, *,
                      config: InteractiveTrainConfig | None = None, network_config: PromptableConfig | None = None,
                      train_fraction: float = 0.8, grid: Sequence[int] = (128, 128), slice_step: int = 2,
                      resume: bool = False, progress: bool | None = None) -> Path:
    """Load the training and held-out slices of ``datasets`` and train one model across them."""
    from medseg.interactive.slices import load_slices

    train = load_slices(datasets, part="train", train_fraction=train_fraction, grid=grid, slice_step=slice_step)
    holdout = None
    if train_fraction < 1:
        holdout = load_slices(datasets, part="holdout", train_fraction=train_fraction, grid=grid,
                              slice_step=slice_step * 4)
    info = {"datasets": [str(Path(d).resolve()) for d in datasets], "train_fraction": train_fraction,
            "train_cases": train.case_ids, "holdout_cases": holdout.case_ids if holdout else {},
            "train_slices": len(train)}
    trainer = InteractiveTrainer(train, output, config=config, network_config=network_config, validation=holdout,
                                 info=info)
    return trainer.run(resume=resume, progress=progress)
