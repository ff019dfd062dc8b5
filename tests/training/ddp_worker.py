"""A data-parallel training run of the one Trainer on synthetic data, for the distributed tests.

Run under torchrun (``python -m torch.distributed.run --nproc-per-node 2 tests/training/ddp_worker.py OUT``) it
trains twice through ``medseg.distributed.process_group`` (gloo): ``OUT/curve`` (fixed steps, each rank a half of
every global batch) and ``OUT/budget`` (a 2 s budget, rank 1 made slower per step); each rank writes
``OUT/<run>_rank<r>.json`` with the steps it took. In one process, :func:`train` is the reference run with the
whole global batch.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from medseg.config.train_config import TrainConfig
from medseg.training.callbacks import default_callbacks
from medseg.training.trainer import Trainer

GLOBAL_BATCH = 8  # per step, over all ranks
SAMPLES = 64


def synthetic_data() -> tuple[torch.Tensor, torch.Tensor]:
    """``images (64, 1, 8, 8)`` float32 and ``labels (64, 8, 8)`` int64: class 1 where a smoothed noise image is
    bright (a pattern a 3x3 convolution can learn)."""
    generator = torch.Generator().manual_seed(123)
    images = torch.randn(SAMPLES, 1, 8, 8, generator=generator)
    smooth = nn.functional.avg_pool2d(images, 3, stride=1, padding=1)
    return images, (smooth[:, 0] > 0.1).long()


def tiny_network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))


class SyntheticTask:
    """Global batch ``k`` of epoch ``e``: ``GLOBAL_BATCH`` samples of a permutation seeded by ``e``; rank ``r`` of
    ``W`` takes the ``r``-th of its ``W`` equal slices. No augmentation, so one process with the whole global batch
    sees exactly what the ranks see together. ``slow_rank`` sleeps ``delay`` s in each of its steps."""

    name = "synthetic"
    default_iterations = 20

    def __init__(self, *, slow_rank: int | None = None, delay: float = 0.0):
        self.images, self.labels = synthetic_data()
        self.slow_rank, self.delay, self.rank = slow_rank, delay, 0
        self.criterion = nn.CrossEntropyLoss()

    def batches(self, epoch: int, count: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.shard_batches(epoch, count, 0, 1)

    def shard_batches(self, epoch: int, count: int, rank: int, world_size: int
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.rank = rank
        order = torch.randperm(SAMPLES, generator=torch.Generator().manual_seed(epoch))
        share = GLOBAL_BATCH // world_size
        for step in range(count):
            start = (step * GLOBAL_BATCH) % SAMPLES + rank * share
            picked = order[start:start + share]
            yield self.images[picked], self.labels[picked]

    def loss(self, network: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        if self.rank == self.slow_rank:
            time.sleep(self.delay)
        images, labels = batch
        return self.criterion(network(images), labels)

    def validate(self, network: nn.Module) -> dict[str, float]:
        return {"val_loss": round(float(self.criterion(network(self.images), self.labels)), 6)}


class CallsOfRank:
    """A callback that appends to ``<folder>_callbacks_rank<r>.txt`` beside ``folder`` (only rank 0 should call
    it)."""

    def __init__(self, folder: Path, rank: int):
        self.path = folder.parent / f"{folder.name}_callbacks_rank{rank}.txt"

    def on_epoch_end(self, trainer) -> None:
        with self.path.open("a") as file:
            file.write("epoch\n")

    def on_train_end(self, trainer) -> None:
        self.on_epoch_end(trainer)


def train(folder: Path, *, rank: int = 0, budget: float | None = None, max_iterations: int | None = 20,
          slow_rank: int | None = None, delay: float = 0.0) -> Trainer:
    config = TrainConfig(task="segmentation", max_iterations=max_iterations, budget_seconds=budget,
                         iterations_per_epoch=5, learning_rate=0.05, threads=1)
    trainer = Trainer(tiny_network(), SyntheticTask(slow_rank=slow_rank, delay=delay), config, folder,
                      callbacks=[*default_callbacks(), CallsOfRank(folder, rank)])
    trainer.run(progress=False)
    return trainer


def main(out: Path) -> None:
    from medseg.distributed import process_group

    with process_group("cpu") as ranks:
        runs = {"curve": {}, "budget": {"budget": 2.0, "max_iterations": None, "slow_rank": 1, "delay": 0.02}}
        for name, options in runs.items():
            trainer = train(out / name, rank=ranks.rank, **options)
            record = {"rank": ranks.rank, "world_size": ranks.world_size, "iteration": trainer.state.iteration,
                      "epochs": trainer.state.epoch, "history": trainer.state.history}
            (out / f"{name}_rank{ranks.rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
