"""A short throughput figure for a device: training steps/s of a plan-sized U-Net (float32, and bfloat16 autocast
as ``medseg train`` uses on CUDA) in 2D and 3D, and sliding-window prediction windows/s, each for ``--seconds``.
Part of ``bench/gpu_check.sh``; runs on the CPU too (with small ``--scale``, for its test).

    python bench/gpu_throughput.py --device cuda --seconds 20 --output bench/results/gpu_check.json

Writes ``{"device": str, "torch": str, "results": {"2d" | "3d": {"train_float32_steps_per_s": float,
"train_bfloat16_steps_per_s": float, "predict_windows_per_s": float, "patch": [...], "batch": int}}}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from medseg.devices import require_device
from medseg.losses.registry import create
from medseg.nets.plan_unet import PlanUNet

# what the planner gives the shared datasets on a large GPU (isbi2012_em 2d, brats2013_mini 3d_fullres), at scale 1
SHAPES = {"2d": {"patch": [512, 512], "batch": 12, "features": [32, 64, 128, 256, 512, 512, 512, 512]},
          "3d": {"patch": [128, 128, 128], "batch": 2, "features": [32, 64, 128, 256, 320, 320]}}


def network_config(dims: int, features: list[int], channels: int, classes: int) -> dict:
    return dict(spatial_dims=dims, in_channels=channels, num_classes=classes, features_per_stage=features,
                kernel_sizes=[3] * len(features), strides=[1] + [2] * (len(features) - 1), deep_supervision=False)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def steps_per_second(step, seconds: float, device: torch.device) -> float:
    """Calls of ``step`` per second over ``seconds`` after two warm-up calls."""
    step(), step()
    _synchronize(device)
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        count += 1
    _synchronize(device)
    return count / (time.perf_counter() - start)


def measure(name: str, device: torch.device, seconds: float, scale: float) -> dict:
    shape = SHAPES[name]
    dims = len(shape["patch"])
    patch = [max(16, int(round(p * scale / 16)) * 16) for p in shape["patch"]]
    stages = max(2, min(len(shape["features"]), int(torch.tensor(min(patch)).log2().item()) - 2))
    features = [max(4, int(f * scale)) for f in shape["features"][:stages]]
    batch = max(1, int(round(shape["batch"] * scale)))
    torch.manual_seed(0)
    network = PlanUNet.from_config(network_config(dims, features, 1, 3)).to(device)
    loss_fn = create("dice_ce")
    optimizer = torch.optim.SGD(network.parameters(), lr=1e-3, momentum=0.99, nesterov=True)
    images = torch.randn((batch, 1, *patch), device=device)
    labels = torch.randint(0, 3, (batch, 1, *patch), device=device)
    result = {"patch": patch, "batch": batch, "features": features}
    for precision, dtype in (("float32", None), ("bfloat16", torch.bfloat16)):
        def train_step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = loss_fn(network(images), labels)
            loss.backward()
            optimizer.step()

        network.train()
        result[f"train_{precision}_steps_per_s"] = round(steps_per_second(train_step, seconds, device), 3)
    network.eval()

    def predict_window() -> None:
        with torch.inference_mode():
            torch.softmax(network(images[:1]), 1)

    result["predict_windows_per_s"] = round(steps_per_second(predict_window, seconds, device), 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seconds", type=float, default=20.0, help="per measurement")
    parser.add_argument("--scale", type=float, default=1.0, help="patch, batch and width factor (CPU smoke: 0.1)")
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    device = torch.device(require_device(args.device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    results = {shape: measure(shape, device, args.seconds, args.scale) for shape in args.shapes}
    for shape, figures in results.items():
        print(shape, figures, flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"device": name, "torch": torch.__version__, "scale": args.scale,
                                       "seconds": args.seconds, "date": datetime.now(timezone.utc).isoformat(),
                                       "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
