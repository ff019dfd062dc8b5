"""The `plan` job end to end: fingerprint (computed or read), budget, calibration, plan, overrides."""

from __future__ import annotations

from pathlib import Path

from medseg.config import Fingerprint, Plan, read_json
from medseg.data.layout import open_dataset
from medseg.data.validate import dataset_record
from medseg.devices import require_device
from medseg.errors import MedsegError
from medseg.planning.budget import (EPOCH_OVERHEAD, available_memory, calibrate, measure_step_seconds,
                                   parse_duration, parse_memory)
from medseg.planning.fingerprint import compute_fingerprint
from medseg.planning.overrides import apply_overrides
from medseg.planning.planner import Budget, plan_dataset


def make_plan(dataset: str | Path, *, device: str = "cpu", budget: str | float | None = None,
              memory: str | int | None = None, fingerprint_path: str | Path | None = None,
              min_iterations: int = 1000, overrides: list[str] | None = None,
              flops_per_second: float | None = None, progress: bool | None = None,
              instances: bool | None = None) -> Plan:
    """The plan of ``dataset`` for ``device`` and ``budget`` (see ``plan_dataset``). ``instances``: plan the
    ``instance`` configuration too; None: when the dataset has ``instancesTr/``. A dataset with several raters'
    label maps per case (``labelsTr/<case>_r<K>``) also gets the ``probabilistic`` configuration."""
    require_device(device)
    seconds = None if budget is None else (float(budget) if isinstance(budget, (int, float)) else parse_duration(budget))
    memory_bytes = available_memory(device) if memory is None else (
        int(memory) if isinstance(memory, int) else parse_memory(memory))
    data = open_dataset(dataset)
    if fingerprint_path is not None:
        fingerprint = Fingerprint.from_dict(read_json(fingerprint_path))
        if fingerprint.dataset_name != data.spec.name or fingerprint.num_cases != len(data.cases):
            raise MedsegError(f"the fingerprint is of dataset {fingerprint.dataset_name!r} with "
                              f"{fingerprint.num_cases} cases, not of {data.spec.name!r} with {len(data.cases)}",
                              path=fingerprint_path, fix=f"run medseg fingerprint {data.root} or omit --fingerprint")
        record = dataset_record(data, validated=False)
    else:
        record = dataset_record(data, validated=True)  # the files as they are now; the fingerprint checks them
        fingerprint = compute_fingerprint(dataset, progress=progress)
    dims = len(fingerprint.median_spacing)
    if flops_per_second is None:
        calibration = calibrate(device, dims)
        flops_per_second = calibration["flops_per_second"]
    else:
        calibration = {"flops_per_second": flops_per_second, "source": "given by the user"}
    budget_spec = Budget(device, memory_bytes, seconds, flops_per_second, min_iterations=min_iterations)
    if instances is None:
        from medseg.data.validate import INSTANCES_FOLDER

        instances = INSTANCES_FOLDER in data.extra_folders
    plan = plan_dataset(fingerprint, budget_spec, calibration=calibration, instances=instances,
                        raters=data.num_raters)
    if seconds is not None and calibration.get("source") != "given by the user":
        plan = _correct_by_measurement(fingerprint, budget_spec, plan, calibration)
    plan = apply_overrides(plan, list(overrides or []))
    plan.dataset = record
    return plan


def _correct_by_measurement(fingerprint: Fingerprint, budget: Budget, plan: Plan, calibration: dict) -> Plan:
    """Small networks reach a lower FLOP rate than the calibration network: time one real step of each planned
    dimensionality's network, re-plan with the corrected throughput, and time the result again (each step at
    the precision the calibration chose)."""
    precision = calibration.get("precision", "float32")
    representatives = {2: "2d", 3: "3d_fullres"}
    for dims, name in representatives.items():
        if name in plan.configurations:
            config = plan.configurations[name]
            measured = measure_step_seconds(config.network, config.patch_size, config.batch_size, budget.device,
                                            precision=precision)
            budget.flops_per_second_by_dims[dims] = budget.throughput(dims) * config.estimated_step_seconds / measured
    raters = plan.configurations["probabilistic"].raters if "probabilistic" in plan.configurations else 0
    plan = plan_dataset(fingerprint, budget, calibration=calibration, instances="instance" in plan.configurations,
                        raters=raters)
    measured_steps = {}
    for name, config in plan.configurations.items():
        key = (tuple(config.patch_size), config.batch_size, str(config.network["features_per_stage"]),
               config.network.get("in_channels"))
        if key not in measured_steps:
            measured_steps[key] = measure_step_seconds(config.network, config.patch_size, config.batch_size,
                                                       budget.device, precision=precision)
        config.estimated_step_seconds = float(measured_steps[key])
        config.num_iterations = int(max(1, budget.seconds // config.estimated_step_seconds))
        config.decide("num_iterations", config.num_iterations,
                      f"budget {budget.seconds:.0f} s / {config.estimated_step_seconds:.3g} s per step, timed on "
                      f"this device with the planned network in {precision}, plus {EPOCH_OVERHEAD:.0%} for "
                      f"validation and checkpoints")
    calibration["flops_per_second_by_dims"] = {str(k): v for k, v in budget.flops_per_second_by_dims.items()}
    plan.calibration = calibration
    return plan
