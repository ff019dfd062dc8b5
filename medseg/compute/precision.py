"""The arithmetic precision of training: float32, or bfloat16 autocast (float32 master weights, optimizer state and
loss; convolutions and matrix products in bfloat16) on devices that compute bfloat16 natively."""

from __future__ import annotations

import contextlib
from functools import lru_cache
from pathlib import Path

from medseg.config.train_config import PRECISIONS
from medseg.errors import MedsegError

# CPU flags of native bfloat16 arithmetic (AVX512-BF16 dot products, AMX tiles); without them oneDNN emulates it
_NATIVE_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@lru_cache(maxsize=None)
def native_bfloat16(device_type: str) -> bool:
    """True when ``device_type`` (``"cpu"`` or ``"cuda"``) computes bfloat16 natively: a GPU that supports it, or a
    CPU with AVX512-BF16 or AMX-BF16 whose oneDNN build uses them."""
    import torch

    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device_type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return bool(_cpu_flags() & set(_NATIVE_CPU_FLAGS)) and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device_type: str, *, measured: str | None = None) -> str:
    """``"float32"`` or ``"bfloat16"`` for a requested ``precision`` (one of ``PRECISIONS``) on ``device_type``.

    ``"auto"``: ``measured`` (the precision the planner's calibration timed faster on this machine) where given
    and native, else bfloat16 on a GPU that has it (AMP, as before) and float32 on a CPU (no measured gain).
    ``"bfloat16"`` on a device without native support is an error: emulated bfloat16 is slower than float32."""
    if precision not in PRECISIONS:
        raise MedsegError(f"unknown precision {precision!r}", fix=f"use one of {', '.join(PRECISIONS)}")
    native = native_bfloat16(device_type)
    if precision == "bfloat16" and not native:
        raise MedsegError(f"--precision bfloat16 on a {device_type} without native bfloat16 arithmetic",
                          fix="use --precision float32 or auto (this device has no AVX512-BF16/AMX or bf16 GPU)")
    if precision != "auto":
        return precision
    if measured is not None:
        return measured if native else "float32"
    return "bfloat16" if device_type == "cuda" and native else "float32"


def autocast(device_type: str, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of a forward pass at a resolved ``precision`` (``"float32"``: none)."""
    import torch

    if precision == "bfloat16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
