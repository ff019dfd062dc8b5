"""Network weights on disk: safetensors written atomically with their sha256, read back only when the bytes match.

A truncated or damaged ``.safetensors`` file becomes a ``MedsegError`` naming the file and the fix, never a
traceback; random bytes inside the tensor data (header intact, so safetensors itself would load them) are caught
by the sha256 that the model folder records beside the file when it is written.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Mapping

import torch

from medseg.atomic import atomic_write
from medseg.errors import MedsegError

log = logging.getLogger(__name__)

DAMAGED_FIX = "retrain the fold or restore the file"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def save_weights(state_dict: Mapping[str, torch.Tensor], path: str | Path) -> str:
    """Write ``state_dict`` (name -> tensor, any device) to ``path`` as safetensors, atomically and durably;
    returns the sha256 of the written bytes (hashed before the rename, so it is the hash of exactly this file)."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    data = save(tensors)
    atomic_write(path, lambda temporary: Path(temporary).write_bytes(data), durable=True)
    return sha256_bytes(data)


def load_weights(path: str | Path, expected_sha256: str | None, *, device: str = "cpu",
                 fix: str = DAMAGED_FIX) -> dict[str, torch.Tensor]:
    """Read a safetensors file -> ``{name: tensor}`` on ``device`` after checking its sha256.

    ``expected_sha256`` None (a folder written before medseg recorded hashes) loads with a logged warning. A
    missing, truncated, corrupt or mismatching file raises ``MedsegError`` with ``fix``.
    """
    from safetensors.torch import load

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise MedsegError(f"cannot read the weights ({error.strerror or error})", path=path, fix=fix) from None
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256.lower():
        raise MedsegError("the weights file is damaged: its sha256 differs from the one recorded when it was "
                          "written", path=path, fix=fix)
    try:
        tensors = load(data)
    except Exception as error:  # safetensors raises its own SafetensorError, or others on a bad header
        detail = (str(error).splitlines() or [type(error).__name__])[0][:200]
        raise MedsegError(f"cannot read the weights, the file is truncated or corrupt ({detail})", path=path,
                          fix=fix) from None
    if expected_sha256 is None:  # warned only once the file has loaded: a broken file gives one error line
        log.warning("%s: no sha256 recorded for this weights file (written before medseg recorded them); loaded "
                    "unverified", path)
    return {name: tensor.to(device) for name, tensor in tensors.items()} if device != "cpu" else tensors
