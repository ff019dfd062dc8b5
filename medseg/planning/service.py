"""The `plan` job end to end: fingerprint (computed or read), budget, calibration, plan, overrides."""

from __future__ import annotations

from pathlib import Path

from medseg.config import Fingerprint, Plan, read_json
from medseg.errors import MedsegError
from medseg.planning.budget import available_memory, calibrate, parse_duration, parse_memory
from medseg.planning.fingerprint import compute_fingerprint
from medseg.planning.overrides import apply_overrides
from medseg.planning.planner import Budget, plan_dataset


def make_plan(dataset: str | Path, *, device: str = "cpu", budget: str | float | None = None,
              memory: str | int | None = None, fingerprint_path: str | Path | None = None,
              min_iterations: int = 1000, overrides: list[str] | None = None,
              flops_per_second: float | None = None, progress: bool | None = None) -> Plan:
    if device not in ("cpu", "cuda"):
        raise MedsegError(f"unknown device {device!r}", fix="use --device cpu or --device cuda")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise MedsegError("--device cuda but no CUDA GPU is visible", fix="plan with --device cpu")
    seconds = None if budget is None else (float(budget) if isinstance(budget, (int, float)) else parse_duration(budget))
    memory_bytes = available_memory(device) if memory is None else (
        int(memory) if isinstance(memory, int) else parse_memory(memory))
    if fingerprint_path is not None:
        fingerprint = Fingerprint.from_dict(read_json(fingerprint_path))
    else:
        fingerprint = compute_fingerprint(dataset, progress=progress)
    dims = len(fingerprint.median_spacing)
    if flops_per_second is None:
        calibration = calibrate(device, dims)
        flops_per_second = calibration["flops_per_second"]
    else:
        calibration = {"flops_per_second": flops_per_second, "source": "given by the user"}
    plan = plan_dataset(fingerprint, Budget(device, memory_bytes, seconds, flops_per_second,
                                            min_iterations=min_iterations), calibration=calibration)
    return apply_overrides(plan, list(overrides or []))
