"""Checkpoints written atomically (temporary name, fsync, rename) and read without unpickling code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medseg.atomic import atomic_write
from medseg.errors import MedsegError


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """``state`` holds tensors, numbers, strings, lists and dicts only (so ``weights_only`` loading works)."""
    atomic_write(path, lambda temporary: torch.save(state, temporary), durable=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a foreign or damaged file: never fall back to full unpickling
        raise MedsegError(f"cannot read checkpoint ({str(error).splitlines()[0][:200]})", path=path,
                          fix="delete it to start the fold again") from None


def check_new_run(fold_dir: Path, *, budget_seconds: float | None, resume: bool, example_budget: str = "20m") -> None:
    """Before any work: a positive budget, and a run folder that is empty unless the run resumes."""
    if budget_seconds is not None and not budget_seconds > 0:
        raise MedsegError(f"the budget must be positive, not {budget_seconds:g} s",
                          fix=f"use e.g. --budget {example_budget}")
    if fold_dir.exists() and any(fold_dir.iterdir()) and not resume:
        raise MedsegError("this folder already has a training run", path=fold_dir,
                          fix="pass --resume to continue it, or choose another model folder with -o")
