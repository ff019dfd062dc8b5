"""The budget-driven trainer: the plan's network, deep supervision, Dice + CE, SGD (Nesterov 0.99) or AdamW,
a learning rate that decays with the fraction of the time budget spent, checkpoints every epoch, resume.

The schedule's clock is ``fraction = max(wall time used / budget, steps done / max steps)``: learning rate
``lr0 * (1 - fraction) ** 0.9``, and training ends at ``fraction = 1``, so any budget ends with a fully decayed
model. Wall time is counted across resumes (it is stored in the checkpoint).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.atomic import atomic_write, remove_stale_temporaries
from medseg.config import Configuration, write_json_atomic
from medseg.errors import MedsegError
from medseg.parallel import compute_threads
from medseg.progress import FractionBar
from medseg.training.checkpoint import load_checkpoint, save_checkpoint
from medseg.training.model_folder import write_fold_weights

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Options of one training run (saved as ``fold_K/train_config.json``)."""

    configuration: str
    fold: str = "0"
    budget_seconds: float | None = None
    max_iterations: int | None = None  # default: no step limit under a budget, else the plan's num_iterations
    iterations_per_epoch: int = 50
    validation_batches: int = 8
    optimizer: str = "sgd"
    learning_rate: float | None = None  # sgd 1e-2, adamw 1e-3
    weight_decay: float = 3e-5
    loss: str = "nnunet_dice_ce"
    num_workers: int = 1
    seed: int = 0
    device: str = "cpu"
    augmentation: dict[str, Any] | None = None  # AugmentationConfig fields; None = the defaults for the patch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainState:
    iteration: int = 0
    epoch: int = 0
    elapsed: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def schedule_fraction(elapsed: float, iteration: int, budget: float | None, max_iterations: int) -> float:
    by_steps = iteration / max(max_iterations, 1)
    return max(by_steps, elapsed / budget) if budget else by_steps


def poly_learning_rate(initial: float, fraction: float, exponent: float = 0.9) -> float:
    return initial * max(0.0, 1.0 - fraction) ** exponent


class Trainer:
    """Trains one fold of one configuration into ``fold_dir`` from the cache at ``cache_dir``."""

    def __init__(self, *, configuration: Configuration, cache_dir: Path, fold_dir: Path, train_cases: list[str],
                 val_cases: list[str], label_values: list[int], config: TrainConfig):
        from medseg.losses import DeepSupervisionLoss, create
        from medseg.nets.plan_unet import PlanUNet

        self.configuration, self.cache_dir, self.fold_dir = configuration, Path(cache_dir), Path(fold_dir)
        self.train_cases, self.val_cases, self.config = train_cases, val_cases, config
        self.device = torch.device(config.device)
        # With a time budget the clock ends training; the plan's step count is an estimate, not a limit.
        if config.max_iterations is not None:
            self.max_iterations = int(config.max_iterations)
        else:
            self.max_iterations = 10**9 if config.budget_seconds else int(configuration.num_iterations)
        torch.manual_seed(config.seed)
        self.network = PlanUNet.from_config(dict(configuration.network)).to(self.device)
        self.loss = DeepSupervisionLoss(create(config.loss), zero_coarsest=len(configuration.network["strides"]) > 2)
        lr = config.learning_rate or (1e-2 if config.optimizer == "sgd" else 1e-3)
        self.initial_lr = lr
        if config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(self.network.parameters(), lr=lr, momentum=0.99, nesterov=True,
                                             weight_decay=config.weight_decay)
        elif config.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=lr, weight_decay=config.weight_decay)
        else:
            raise MedsegError(f"unknown optimizer {config.optimizer!r}", fix="use sgd or adamw")
        lut = np.zeros(256, dtype=np.int64)
        for index, value in enumerate(label_values):
            lut[value % 256] = index
        self.label_lut = torch.from_numpy(lut)
        self.state = TrainState()

    @property
    def checkpoint_path(self) -> Path:
        return self.fold_dir / "checkpoint.pt"

    def resume(self) -> bool:
        """Load the last checkpoint if there is one; True when training continues from it."""
        remove_stale_temporaries(self.fold_dir, recursive=True)  # a kill's leftovers here and in validation/
        if not self.checkpoint_path.is_file():
            return False
        saved = load_checkpoint(self.checkpoint_path)
        self.network.load_state_dict(saved["network"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.state = TrainState(**saved["state"])
        log.info("resumed %s at epoch %d, step %d", self.fold_dir, self.state.epoch, self.state.iteration)
        return True

    def fraction(self) -> float:
        return schedule_fraction(self.state.elapsed, self.state.iteration, self.config.budget_seconds,
                                 self.max_iterations)

    def run(self, *, progress: bool | None = None) -> TrainState:
        """Train until the budget (or step limit) is spent; checkpoint after every epoch; write final weights."""
        self.fold_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.config.to_dict(), self.fold_dir / "train_config.json")
        threads = torch.get_num_threads()
        if self.device.type == "cpu":
            torch.set_num_threads(compute_threads(self.config.num_workers))
        try:
            self._run_epochs(progress)
        finally:
            torch.set_num_threads(threads)
        write_fold_weights(self.fold_dir, self.network.state_dict())  # + weights.json (sha256)
        write_json_atomic({"history": self.state.history, "max_iterations": self.max_iterations,
                           "budget_seconds": self.config.budget_seconds}, self.fold_dir / "training_log.json")
        self._plot()
        return self.state

    def _run_epochs(self, progress: bool | None) -> None:
        with FractionBar(f"train {self.configuration.name} fold {self.config.fold}", enabled=progress) as bar:
            while self.fraction() < 1.0:
                started = time.perf_counter()
                losses = self._train_epoch(started)
                dice = self.validate()
                self.state.elapsed += time.perf_counter() - started
                self.state.epoch += 1
                self.state.history.append({"epoch": self.state.epoch, "iteration": self.state.iteration,
                                           "elapsed": round(self.state.elapsed, 2),
                                           "train_loss": float(np.mean(losses)) if losses else None,
                                           "val_dice": dice, "lr": self.optimizer.param_groups[0]["lr"]})
                self._checkpoint()
                loss = self.state.history[-1]["train_loss"]
                bar.update(self.fraction(), f"epoch {self.state.epoch} loss "
                           f"{'-' if loss is None else f'{loss:.3f}'} val Dice {np.mean(dice):.3f}")

    def _train_epoch(self, started: float) -> list[float]:
        from medseg.data.loader import PatchLoader
        from medseg.transforms.config import AugmentationConfig

        augmentation = (AugmentationConfig.from_dict(self.config.augmentation) if self.config.augmentation
                        else AugmentationConfig.for_patch(self.configuration.patch_size))
        loader = PatchLoader(self.cache_dir, self.configuration.patch_size, self.configuration.batch_size,
                             augmentation=augmentation, num_workers=self.config.num_workers,
                             seed=self.config.seed * 1_000_003 + self.state.epoch, progress=False,
                             num_batches=self.config.iterations_per_epoch, case_ids=self.train_cases)
        self.network.train()
        self.network.deep_supervision = True
        losses = []
        for batch in loader:
            now = self.state.elapsed + time.perf_counter() - started
            fraction = schedule_fraction(now, self.state.iteration, self.config.budget_seconds, self.max_iterations)
            if fraction >= 1.0:
                break
            for group in self.optimizer.param_groups:
                group["lr"] = poly_learning_rate(self.initial_lr, fraction)
            losses.append(self._step(batch))
            self.state.iteration += 1
        return losses

    def _step(self, batch: dict[str, Any]) -> float:
        image = batch["image"].to(self.device, non_blocking=True)
        target = self.label_lut[batch["label"].long()].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            outputs = self.network(image)
        loss = self.loss([o.float() for o in outputs], target)
        if not torch.isfinite(loss):
            raise MedsegError(f"the loss became {loss.item()} at step {self.state.iteration}",
                              fix="check the data for extreme values or lower the learning rate")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12.0)
        self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def validate(self) -> list[float]:
        """Pseudo-Dice per foreground class on fixed, unaugmented validation patches (nnU-Net's online Dice)."""
        from medseg.data.loader import PatchLoader
        from medseg.transforms.config import AugmentationConfig

        loader = PatchLoader(self.cache_dir, self.configuration.patch_size, self.configuration.batch_size,
                             augmentation=AugmentationConfig.disabled(), num_workers=0, seed=self.config.seed + 7,
                             progress=False, num_batches=self.config.validation_batches, case_ids=self.val_cases)
        self.network.eval()
        self.network.deep_supervision = False
        classes = self.configuration.network["num_classes"]
        tp, fp, fn = (torch.zeros(classes) for _ in range(3))
        for batch in loader:
            prediction = self.network(batch["image"].to(self.device)).argmax(1).cpu()
            target = self.label_lut[batch["label"].long()][:, 0]
            for c in range(1, classes):
                p, t = prediction == c, target == c
                tp[c] += (p & t).sum()
                fp[c] += (p & ~t).sum()
                fn[c] += (~p & t).sum()
        self.network.deep_supervision = True
        dice = (2 * tp / (2 * tp + fp + fn).clamp(min=1))[1:]
        return [round(float(d), 4) for d in dice]

    def _checkpoint(self) -> None:
        save_checkpoint({"network": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
                         "state": asdict(self.state)}, self.checkpoint_path)

    def _plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        history = self.state.history
        if not history:
            return
        epochs = [h["epoch"] for h in history]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(epochs, [h["train_loss"] for h in history], label="train loss", color="tab:blue")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        twin = ax.twinx()
        twin.plot(epochs, [float(np.mean(h["val_dice"])) for h in history], label="val pseudo-Dice", color="tab:green")
        twin.set_ylabel("Dice")
        twin.set_ylim(0, 1)
        fig.legend(loc="upper center", ncol=2)
        fig.tight_layout()
        atomic_write(self.fold_dir / "progress.png", lambda temporary: fig.savefig(temporary, format="png", dpi=100))
        plt.close(fig)
