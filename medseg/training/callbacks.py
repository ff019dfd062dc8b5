"""The trainer's callbacks: checkpoint and training log after every epoch; final weights and curves at the end.

Each takes the running ``medseg.training.trainer.Trainer`` (network, optimizer, state, config, folder)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Sequence

import numpy as np

from medseg.atomic import atomic_write
from medseg.config import write_json_atomic
from medseg.training.checkpoint import save_checkpoint

BOOKKEEPING = ("epoch", "iteration", "elapsed", "train_loss", "lr", "step_seconds", "threads")


class Checkpoint:
    """``checkpoint.pt`` (network, optimiser, schedule state) after every epoch, atomically and durably; read back
    with ``torch.load(weights_only=True)``."""

    def on_epoch_end(self, trainer: Any) -> None:
        save_checkpoint({"network": trainer.network.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                         "state": asdict(trainer.state)}, trainer.checkpoint_path)

    def on_train_end(self, trainer: Any) -> None:
        self.on_epoch_end(trainer)


class TrainingLog:
    """``training_log.json``: the history (one entry per epoch: steps, time, loss, learning rate, figures)."""

    def on_epoch_end(self, trainer: Any) -> None:
        write_json_atomic({"history": trainer.state.history, "max_iterations": trainer.max_iterations,
                           "budget_seconds": trainer.config.budget_seconds}, trainer.folder / "training_log.json")

    def on_train_end(self, trainer: Any) -> None:
        self.on_epoch_end(trainer)


class FinalWeights:
    """``weights.safetensors`` and its sha256 record (``weights.json``) when training ends."""

    def on_epoch_end(self, trainer: Any) -> None:
        pass

    def on_train_end(self, trainer: Any) -> None:
        from medseg.config.model_folder import write_fold_weights

        write_fold_weights(trainer.folder, trainer.network.state_dict())


class Curves:
    """``progress.png``: the training loss and every validation figure (the mean of per-class lists) by step."""

    def on_epoch_end(self, trainer: Any) -> None:
        pass

    def on_train_end(self, trainer: Any) -> None:
        history = trainer.state.history
        if history:
            plot_history(history, trainer.folder / "progress.png")


def default_callbacks() -> list:
    return [Checkpoint(), TrainingLog(), FinalWeights(), Curves()]


def plot_history(history: Sequence[dict], path) -> None:
    """Loss on the left axis, validation figures in [0, 1] on the right, against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["iteration"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [h.get("train_loss") for h in history], label="train loss", color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    figures = [k for k in history[-1] if k not in BOOKKEEPING]
    if figures:
        twin = ax.twinx()
        for key in figures:
            values = [float(np.nanmean(h[key])) if isinstance(h.get(key), (list, int, float)) and h.get(key) != []
                      else None for h in history]
            twin.plot(steps, values, label=key)
        twin.set_ylabel("validation")
        twin.set_ylim(0, 1)
    fig.legend(loc="upper center", ncol=3, fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda temporary: fig.savefig(temporary, format="png", dpi=100))
    plt.close(fig)
