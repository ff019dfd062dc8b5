"""How one training run goes, whatever is trained (``train_config.json`` beside the weights it produced)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from medseg.errors import MedsegError

PRECISIONS = ("float32", "bfloat16", "auto")
SCHEMA_VERSION = 1
TASKS = ("segmentation", "interactive", "tent", "incontext", "universal", "pretrain")
OPTIMIZERS = ("sgd", "adamw")


def record_from_dict(cls: type, data: dict[str, Any], what: str) -> Any:
    """``cls(**data)`` for a dataclass read from JSON; an unknown field is a MedsegError naming ``what``."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise MedsegError(f"unknown {what} field(s) {unknown}", fix=f"use some of {sorted(known)}")
    return cls(**data)


@dataclass
class TrainConfig:
    """The options of the one trainer (``medseg.training.Trainer``); ``task_options`` are the task's own.

    The schedule: ``fraction = max(wall time used / budget_seconds, steps done / max_iterations)``, learning rate
    ``lr0 * (1 - fraction) ** 0.9``, training ends at ``fraction = 1``. ``max_iterations`` None: no step limit
    under a budget, else the task's default. Every ``iterations_per_epoch`` steps the task validates and a
    checkpoint is written. ``threads`` None: on a CPU, the fastest count measured as training goes
    (``medseg.compute.threads``). ``precision``: float32, bfloat16 (autocast; float32 master weights) or auto
    (bfloat16 where the device has it natively and the plan's calibration timed it faster; else bfloat16 on a
    GPU, float32 on a CPU).
    ``learning_rate`` None: 1e-2 for sgd (Nesterov, momentum 0.99), 1e-3 for adamw.
    """

    task: str = "segmentation"
    budget_seconds: float | None = None
    max_iterations: int | None = None
    iterations_per_epoch: int = 50
    optimizer: str = "sgd"
    learning_rate: float | None = None
    weight_decay: float = 3e-5
    gradient_clip: float = 12.0
    num_workers: int = 1
    threads: int | None = None
    precision: str = "auto"
    seed: int = 0
    device: str = "cpu"
    task_options: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise MedsegError(f"unknown training task {self.task!r}", fix=f"use one of {', '.join(TASKS)}")
        if self.optimizer not in OPTIMIZERS:
            raise MedsegError(f"unknown optimizer {self.optimizer!r}", fix=f"use one of {', '.join(OPTIMIZERS)}")
        if self.precision not in PRECISIONS:
            raise MedsegError(f"unknown precision {self.precision!r}", fix=f"use one of {', '.join(PRECISIONS)}")
        if self.iterations_per_epoch < 1:
            raise MedsegError(f"iterations_per_epoch={self.iterations_per_epoch}", fix="use 1 or more")
        if self.budget_seconds is not None and self.budget_seconds <= 0:
            raise MedsegError(f"budget of {self.budget_seconds} s", fix="give a positive budget, e.g. 20m")
        if self.max_iterations is not None and self.max_iterations < 1:
            raise MedsegError(f"max_iterations={self.max_iterations}", fix="use 1 or more")

    @property
    def initial_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return 1e-2 if self.optimizer == "sgd" else 1e-3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        config = record_from_dict(cls, data, "train_config")
        if int(config.schema_version) > SCHEMA_VERSION:
            raise MedsegError(f"train_config schema_version {config.schema_version} is newer than this medseg's "
                              f"({SCHEMA_VERSION})", fix="upgrade medseg")
        return config


def memory_task_config(task: str, options_type: type, *, budget_seconds: float | None = 600.0,
                       max_iterations: int | None = None, learning_rate: float = 1e-3, weight_decay: float = 1e-4,
                       validate_every: int = 100, threads: int | None = None, seed: int = 0, device: str = "cpu",
                       **task_options: Any) -> TrainConfig:
    """The ``TrainConfig`` of a task that holds its training data in memory (interactive, in-context): AdamW,
    validation and a checkpoint every ``validate_every`` steps, no loader workers. The named keywords configure
    the run; the other keywords build ``options_type`` (the task's options dataclass), stored as
    ``task_options``."""
    return TrainConfig(task=task, budget_seconds=budget_seconds, max_iterations=max_iterations,
                       iterations_per_epoch=validate_every, optimizer="adamw", learning_rate=learning_rate,
                       weight_decay=weight_decay, num_workers=0, threads=threads, seed=seed, device=device,
                       task_options=options_type(**task_options).to_dict())
