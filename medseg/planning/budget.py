"""Compute budgets: parsing ``30m`` / ``8GB``, the device's memory, and a short calibration run."""

from __future__ import annotations

import os
import re
import statistics
import time
from pathlib import Path

from medseg.errors import MedsegError

_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*$")
# What a training run spends per step beyond the step itself: every 50 steps the validation of 8 patches (about 2.7
# steps' worth of forward passes) and a checkpoint; measured 7-11 % of an epoch on isbi2012_em's 2D plan
EPOCH_OVERHEAD = 0.08
_MEMORY_UNITS = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_duration(text: str) -> float:
    """``"90s"``, ``"30m"``, ``"2h"``, ``"1h30m"`` or a plain number of seconds -> seconds."""
    text = str(text).strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    match = _DURATION.match(text)
    if not text or match is None or not any(match.groups()):
        raise MedsegError(f"cannot read the duration {text!r}", fix="write e.g. 90s, 30m, 2h or 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def parse_memory(text: str) -> int:
    """``"8GB"``, ``"512MiB"``, ``"2e9"`` -> bytes."""
    match = re.match(r"^\s*([\d.e+]+)\s*([a-zA-Z]*)\s*$", str(text))
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _MEMORY_UNITS:
        raise MedsegError(f"cannot read the memory size {text!r}", fix="write e.g. 8GB, 512MB or 16GiB")
    return int(float(match.group(1)) * _MEMORY_UNITS[unit])


def available_memory(device: str) -> int:
    """Bytes a plan may use: the GPU's memory on cuda, half of the machine's RAM (at most 8 GB) on cpu."""
    if device == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory * 0.9)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        ram = 8 * 10**9
    return int(min(ram // 2, 8 * 10**9))


def calibrate(device: str, spatial_dims: int, *, seconds: float = 2.0, num_workers: int = 1) -> dict:
    """Measure the training throughput (FLOP/s, forward+backward) of a small plan U-Net on ``device``, and the
    precision training will use: where the device has native bfloat16, the step is timed in float32 and in
    bfloat16 autocast and the faster one is ``"precision"`` (what ``--precision auto`` trains with).

    Times training steps (``medseg.compute.training_step``, at each thread count the trainer may choose) of a
    fixed reference network for about ``seconds`` per precision after one warm-up step and divides the analytic
    FLOPs of a step (3x the forward FLOPs) by the step time (``measure_step_seconds``).
    """
    from medseg.compute import native_bfloat16
    from medseg.planning.topology import features_per_stage, forward_flops, pooling_topology

    patch = [128, 128] if spatial_dims == 2 else [32, 64, 64]
    topology = pooling_topology([1.0] * spatial_dims, patch, max_stages=5)
    features = features_per_stage(topology.num_stages, 16, 128)
    network = dict(spatial_dims=spatial_dims, in_channels=1, num_classes=2, features_per_stage=features,
                   kernel_sizes=topology.kernel_sizes, strides=topology.strides)
    precisions = ["float32", "bfloat16"] if native_bfloat16(device.split(":")[0]) else ["float32"]
    steps = {p: measure_step_seconds(network, topology.patch_size, 2, device, seconds=seconds / len(precisions),
                                     num_workers=num_workers, precision=p) for p in precisions}
    precision = "bfloat16" if steps.get("bfloat16", float("inf")) < 0.95 * steps["float32"] else "float32"
    step = steps[precision]
    step_flops = 3 * 2 * forward_flops(topology, features, 1, 2)  # batch of 2; forward + backward = 3x forward
    return {"flops_per_second": step_flops / step, "reference_step_seconds": step,
            "reference_step_seconds_by_precision": steps, "precision": precision,
            "reference_patch": topology.patch_size}


def measure_step_seconds(network: dict, patch_size: list[int], batch_size: int, device: str, *,
                         seconds: float = 3.0, num_workers: int = 1, network_name: str = "plan_unet",
                         precision: str = "float32") -> float:
    """Wall time per step of a training run of the planned network (``medseg.nets.create(network_name,
    **network)``) as training runs it (``medseg.compute.training_step``: ``precision``, the fused SGD, the
    deep-supervision Dice + cross-entropy loss, gradient clipping) on the batches of ``num_workers`` real loader
    workers augmenting a random case beside it (``medseg.planning.timing_batches``: their cores and the wait for a
    batch are part of the step, as in a run), after one warm-up step; on a CPU at each thread count the trainer's
    chooser may pick (the fastest is what it keeps); stops after about ``seconds``. The median step time, plus the
    run's per-epoch validation and checkpoint (``EPOCH_OVERHEAD``)."""
    import torch

    from medseg.compute import thread_candidates
    from medseg.planning.timing_batches import timing_case

    threads = torch.get_num_threads()
    candidates = thread_candidates(num_workers) if device == "cpu" else [threads]
    try:
        best = float("inf")
        with timing_case(patch_size, network["in_channels"], network["num_classes"]) as case:
            for count in candidates:
                torch.set_num_threads(count)
                best = min(best, _time_steps(network, patch_size, batch_size, device, seconds / len(candidates),
                                             network_name, precision, num_workers, case))
        return best * (1 + EPOCH_OVERHEAD)
    finally:
        torch.set_num_threads(threads)


def _time_steps(network: dict, patch_size: list[int], batch_size: int, device: str, seconds: float,
                network_name: str, precision: str, num_workers: int, case: Path) -> float:
    """Median wall time of a step from the end of the one before, its batch's wait included, the batches coming
    from ``num_workers`` loader workers augmenting the timing case in ``case`` beside it as in a run
    (``timing_batches``)."""
    import contextlib

    import torch

    from medseg.compute import build_optimizer, training_step
    from medseg.losses import DeepSupervisionLoss, create as create_loss
    from medseg.nets import create
    from medseg.planning.timing_batches import timing_batches

    net = create(network_name, **dict(network)).to(device)
    if hasattr(net, "deep_supervision"):
        net.deep_supervision = True
    device_type = torch.device(device).type
    optimizer = build_optimizer(net.parameters(), "sgd", 1e-4, 3e-5, device_type)
    criterion = create_loss("nnunet_dice_ce")
    deep = DeepSupervisionLoss(criterion, zero_coarsest=True)
    current: dict = {}

    def loss_of(model: torch.nn.Module) -> torch.Tensor:  # as SegmentationTask.loss: float32 logits into the loss
        outputs = model(current["x"])
        if isinstance(outputs, (list, tuple)):
            return deep([o.float() for o in outputs], current["y"])
        return criterion(outputs.float(), current["y"])

    times = []
    max_steps = 20
    with contextlib.closing(timing_batches(case, patch_size, batch_size, num_workers=num_workers,
                                           num_batches=max_steps)) as batches:
        deadline = time.perf_counter() + seconds
        start = time.perf_counter()
        for step, batch in enumerate(batches):
            current["x"] = batch["image"].to(device)
            current["y"] = batch["label"].long().to(device)
            training_step(net, optimizer, loss_of, precision=precision, device_type=device_type, gradient_clip=12.0)
            if device_type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            if step > 0:  # the first waits for the workers to start
                times.append(now - start)
            start = now
            if step >= 2 and now > deadline:
                break
    return statistics.median(times)
