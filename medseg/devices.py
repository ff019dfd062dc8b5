"""The device a command runs on: ``cpu`` or ``cuda``, checked before any work so that a missing GPU is one clear
line (exit code 2), not a CUDA error halfway through."""

from __future__ import annotations

from medseg.errors import MedsegError

DEVICES = ("cpu", "cuda")


def require_device(device: str) -> str:
    """``device`` (``"cpu"``, ``"cuda"`` or ``"cuda:N"``) when this process can use it; else a ``MedsegError``
    saying what to pass instead."""
    kind = str(device).split(":", 1)[0]
    if kind not in DEVICES:
        raise MedsegError(f"unknown device {device!r}", fix="use --device cpu or --device cuda")
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise MedsegError(f"--device {device} but no CUDA GPU is visible to this process",
                              fix="use --device cpu, or run on a machine whose GPU torch sees "
                                  "(python -c 'import torch; print(torch.cuda.is_available())')")
        index = int(device.split(":", 1)[1]) if ":" in str(device) else 0
        if index >= torch.cuda.device_count():
            raise MedsegError(f"--device {device} but only {torch.cuda.device_count()} GPU(s) are visible",
                              fix=f"use --device cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return str(device)
