"""Checkpoints written atomically (temporary name, fsync, rename) and read without unpickling code."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from medseg.errors import MedsegError


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """``state`` holds tensors, numbers, strings, lists and dicts only (so ``weights_only`` loading works)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(state, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a foreign or damaged file: never fall back to full unpickling
        raise MedsegError(f"cannot read checkpoint ({str(error).splitlines()[0][:200]})", path=path,
                          fix="delete it to start the fold again") from None


def save_weights(network: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(handle)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
