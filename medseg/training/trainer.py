"""The one trainer: a network, a task that supplies the batches and the loss of a step, a ``TrainConfig``, and
callbacks (checkpoint, training log, curves, final weights). Every kind of model medseg trains goes through it.

The schedule's clock is ``fraction = max(wall time used / budget, steps done / max steps)``: learning rate
``lr0 * (1 - fraction) ** 0.9``, and training ends at ``fraction = 1``, so any budget ends with a fully decayed
model. Every ``iterations_per_epoch`` steps the task validates and the callbacks run (a checkpoint among them);
wall time is counted across resumes (it is stored in the checkpoint), so ``resume()`` after a kill -9 continues
the same schedule. A non-finite loss stops training with a clear error instead of saving a broken model.

Each step is ``medseg.compute.training_step`` (the one the planner times) at the config's resolved precision
(bfloat16 autocast or float32) with a fused optimizer; on a CPU the torch thread count of each step comes from a
``ThreadChooser`` that times the run's own steps at each candidate count and follows changes of the machine's load.

Data-parallel (several processes under torchrun, a process group running: ``medseg.distributed``): each rank
trains a ``DistributedDataParallel`` copy on its own share of the batch stream (the task's ``shard_batches``),
the schedule's fraction is the largest over the ranks at every step (so all ranks take the same learning rate and
stop at the same step), the epoch's wall time and mean loss are agreed, and only rank 0 validates, writes
``train_config.json``, shows progress and runs the callbacks (checkpoints, logs, weights).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from medseg.atomic import remove_stale_temporaries
from medseg.compute import (NonFiniteLoss, ThreadChooser, autocast, build_optimizer, resolve_precision,
                            thread_candidates, training_step)
from medseg.config import write_json_atomic
from medseg.config.train_config import TrainConfig
from medseg.distributed import RankGroup, processes_on_this_machine
from medseg.errors import MedsegError
from medseg.progress import FractionBar
from medseg.training.callbacks import BOOKKEEPING, default_callbacks
from medseg.training.checkpoint import load_checkpoint

log = logging.getLogger(__name__)


class TrainingTask(Protocol):
    """What is trained: batches, the loss of one batch, and validation figures.

    ``batches(epoch, count)`` yields ``count`` batches for epoch ``epoch`` (its randomness seeded by the epoch, so
    a resumed run draws what an uninterrupted one would have); ``loss(network, batch)`` runs the network in train
    mode and returns the scalar loss; ``validate(network)`` returns JSON-friendly figures for the history (a list
    value is one figure per class); ``default_iterations`` is the step count without a budget.

    A task that trains data-parallel also has ``shard_batches(epoch, count, rank, world_size)``: rank ``rank``'s
    own ``count`` batches of the epoch, seeded by the epoch and the rank (so a resumed run draws the same, and
    rank 0 of 1 draws what ``batches`` does).

    A task whose loss follows the run's clock (a ramped-up term) also has ``set_fraction(fraction)``: the
    schedule's fraction (0 -> 1), told before every step.
    """

    name: str
    default_iterations: int

    def batches(self, epoch: int, count: int) -> Iterable[Any]: ...

    def loss(self, network: nn.Module, batch: Any) -> torch.Tensor: ...

    def validate(self, network: nn.Module) -> dict[str, Any]: ...


class Callback(Protocol):
    """Called by the trainer after every epoch and once at the end (either method may be a no-op)."""

    def on_epoch_end(self, trainer: "Trainer") -> None: ...

    def on_train_end(self, trainer: "Trainer") -> None: ...


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
    """Trains ``network`` on ``task`` into ``folder`` (a model's ``fold_K/``) under ``config``'s schedule.

    ``callbacks`` default: :func:`medseg.training.callbacks.default_callbacks` (checkpoint and training log every
    epoch; final weights with their sha256, the log and the curves PNG at the end).
    """

    def __init__(self, network: nn.Module, task: TrainingTask, config: TrainConfig, folder: str | Path, *,
                 callbacks: Sequence[Callback] | None = None):
        self.config, self.task, self.folder = config, task, Path(folder)
        self.device = torch.device(config.device)
        self.network = network.to(self.device)
        self.optimizer = build_optimizer(self.network.parameters(), config.optimizer, config.initial_learning_rate,
                                         config.weight_decay, self.device.type)
        self.precision = resolve_precision(config.precision, self.device.type)
        self.callbacks = list(default_callbacks() if callbacks is None else callbacks)
        # With a time budget the clock ends training; the task's step count is an estimate, not a limit.
        if config.max_iterations is not None:
            self.max_iterations = int(config.max_iterations)
        else:
            self.max_iterations = 10**9 if config.budget_seconds else int(task.default_iterations)
        self.state = TrainState()
        self.ranks = RankGroup(self.device)
        if self.ranks.parallel and not hasattr(task, "shard_batches"):
            raise MedsegError(f"{task.name} cannot train data-parallel (its task draws no per-rank batches)",
                              fix="run it in one process, without torchrun or --nproc")
        self.train_network = network

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / "checkpoint.pt"

    def resume(self) -> bool:
        """Load the last checkpoint if there is one; True when training continues from it. Temporaries that a
        kill left in the folder are removed first (never a finished file)."""
        if self.folder.is_dir() and self.ranks.is_main:
            remove_stale_temporaries(self.folder, recursive=True)
        if not self.checkpoint_path.is_file():
            return False
        saved = load_checkpoint(self.checkpoint_path)
        try:
            self.network.load_state_dict(saved["network"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.state = TrainState(**saved["state"])
        except (KeyError, RuntimeError, ValueError, TypeError) as error:
            raise MedsegError(f"the checkpoint does not fit this run ({str(error).splitlines()[0][:160]})",
                              path=self.checkpoint_path,
                              fix="resume with the options it was started with, or delete it to start again") from None
        log.info("resumed %s at epoch %d, step %d", self.folder, self.state.epoch, self.state.iteration)
        return True

    def fraction(self, elapsed: float | None = None) -> float:
        return schedule_fraction(self.state.elapsed if elapsed is None else elapsed, self.state.iteration,
                                 self.config.budget_seconds, self.max_iterations)

    def run(self, *, progress: bool | None = None) -> TrainState:
        """Train until the budget (or step limit) is spent; then the callbacks' ``on_train_end``."""
        main = self.ranks.is_main
        if main:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.config.to_dict(), self.folder / "train_config.json")
        threads = torch.get_num_threads()
        self.thread_chooser = None
        if self.device.type == "cpu":  # the fastest thread count, measured as training goes (medseg.compute.threads)
            candidates = ([self.config.threads] if self.config.threads
                          else thread_candidates(self.config.num_workers, processes_on_this_machine()))
            self.thread_chooser = ThreadChooser(candidates)
        self.train_network = self.ranks.data_parallel(self.network)
        try:
            with FractionBar(self.task.name, enabled=progress if main else False) as bar:
                while self.fraction() < 1.0:
                    self._epoch()
                    for callback in self.callbacks if main else ():
                        callback.on_epoch_end(self)
                    bar.update(self.fraction(), self._summary())
        finally:
            torch.set_num_threads(threads)
            self.train_network = self.network
        for callback in self.callbacks if main else ():
            callback.on_train_end(self)
        return self.state

    def _epoch(self) -> None:
        started = time.perf_counter()
        losses, step_seconds = [], []
        self.network.train()
        chooser = self.thread_chooser
        step_started = started
        for batch in self._batches():
            fraction = self.ranks.agree_max(self.fraction(self.state.elapsed + time.perf_counter() - started))
            if fraction >= 1.0:
                break
            for group in self.optimizer.param_groups:
                group["lr"] = poly_learning_rate(self.config.initial_learning_rate, fraction)
            if hasattr(self.task, "set_fraction"):
                self.task.set_fraction(fraction)
            threads = chooser.threads() if chooser else None
            if threads is not None and threads != torch.get_num_threads():
                torch.set_num_threads(threads)
            losses.append(self._step(batch))
            self.state.iteration += 1
            now = time.perf_counter()
            step_seconds.append(now - step_started)  # the step's wall time, the wait for its batch included
            if chooser:
                chooser.record(threads, step_seconds[-1])
            step_started = now
        figures = {}
        if self.ranks.is_main:
            with torch.no_grad(), autocast(self.device.type, self.precision):
                figures = self.task.validate(self.network)
        self.network.train()
        self.state.elapsed = self.ranks.agree_max(self.state.elapsed + time.perf_counter() - started)
        self.state.epoch += 1
        loss = self.ranks.mean(float(np.mean(losses))) if losses else None  # every rank stepped as often
        self.state.history.append({"epoch": self.state.epoch, "iteration": self.state.iteration,
                                   "elapsed": round(self.state.elapsed, 2),
                                   "train_loss": round(loss, 5) if loss is not None else None,
                                   "lr": self.optimizer.param_groups[0]["lr"],
                                   "step_seconds": round(float(np.median(step_seconds)), 4) if step_seconds else None,
                                   "threads": chooser.chosen if chooser else None, **figures})

    def _step(self, batch: Any) -> float:
        try:
            loss = training_step(self.train_network, self.optimizer, lambda net: self.task.loss(net, batch),
                                 precision=self.precision, device_type=self.device.type,
                                 gradient_clip=self.config.gradient_clip)
        except NonFiniteLoss as error:
            raise MedsegError(f"{error} at step {self.state.iteration}", path=self.folder,
                              fix="check the data for extreme values or lower the learning rate; "
                                  "--resume continues from the last good checkpoint") from None
        return float(loss)

    def _batches(self) -> Iterable[Any]:
        epoch, count = self.state.epoch, self.config.iterations_per_epoch
        if self.ranks.parallel:
            return self.task.shard_batches(epoch, count, self.ranks.rank, self.ranks.world_size)
        return self.task.batches(epoch, count)

    def _summary(self) -> str:
        last = self.state.history[-1] if self.state.history else {}
        loss = last.get("train_loss")
        figures = ", ".join(f"{k} {np.nanmean(v):.3f}" for k, v in last.items()
                            if k not in BOOKKEEPING
                            and isinstance(v, (int, float, list)) and v != [])
        return f"epoch {self.state.epoch} loss {'-' if loss is None else f'{loss:.3f}'} {figures}".rstrip()
