"""Compute budgets: parsing ``30m`` / ``8GB``, the device's memory, and a short calibration run."""

from __future__ import annotations

import os
import re
import time

from medseg.errors import MedsegError

_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*$")
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


def calibrate(device: str, spatial_dims: int, *, seconds: float = 2.0, num_workers: int = 1) -> dict[str, float]:
    """Measure the training throughput (FLOP/s, forward+backward) of a small plan U-Net on ``device``.

    Times training steps of a fixed reference network for about ``seconds`` after one warm-up step and divides
    the analytic FLOPs of a step (3x the forward FLOPs) by the fastest step time.
    """
    import torch

    from medseg.planning.topology import features_per_stage, forward_flops, pooling_topology
    from medseg.parallel import compute_threads

    patch = [128, 128] if spatial_dims == 2 else [32, 64, 64]
    topology = pooling_topology([1.0] * spatial_dims, patch, max_stages=5)
    features = features_per_stage(topology.num_stages, 16, 128)
    network = dict(spatial_dims=spatial_dims, in_channels=1, num_classes=2, features_per_stage=features,
                   kernel_sizes=topology.kernel_sizes, strides=topology.strides)
    step = measure_step_seconds(network, topology.patch_size, 2, device, seconds=seconds, num_workers=num_workers)
    step_flops = 3 * 2 * forward_flops(topology, features, 1, 2)  # batch of 2; forward + backward = 3x forward
    return {"flops_per_second": step_flops / step, "reference_step_seconds": step,
            "reference_patch": topology.patch_size,
            "threads": compute_threads(num_workers) if device == "cpu" else torch.get_num_threads()}


def measure_step_seconds(network: dict, patch_size: list[int], batch_size: int, device: str, *,
                         seconds: float = 3.0, num_workers: int = 1, network_name: str = "plan_unet") -> float:
    """Fastest wall time of a training step (forward, cross-entropy on the full-resolution output, backward, SGD)
    of the planned network (``medseg.nets.create(network_name, **network)``) on random data, after one warm-up
    step, with the torch threads training will use next to ``num_workers`` loader workers; stops after about
    ``seconds``."""
    import torch

    from medseg.parallel import compute_threads

    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(compute_threads(num_workers))
    try:
        return _time_steps(network, patch_size, batch_size, device, seconds, network_name)
    finally:
        torch.set_num_threads(threads)


def _time_steps(network: dict, patch_size: list[int], batch_size: int, device: str, seconds: float,
                network_name: str) -> float:
    import torch

    from medseg.nets import create

    net = create(network_name, **dict(network)).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((batch_size, network["in_channels"], *patch_size), generator=generator).to(device)
    y = torch.randint(0, network["num_classes"], (batch_size, *patch_size), generator=generator).to(device)
    times = []
    deadline = time.perf_counter() + seconds
    for step in range(20):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        outputs = net(x)
        outputs = outputs if isinstance(outputs, list) else [outputs]
        torch.nn.functional.cross_entropy(outputs[0], y).backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if step > 0:
            times.append(time.perf_counter() - start)
        if step >= 2 and time.perf_counter() > deadline:
            break
    return min(times)  # the least disturbed by other work on the machine
