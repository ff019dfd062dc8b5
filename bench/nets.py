"""Benchmark: CPU training-step throughput of medseg's plan-driven U-Net vs MONAI's DynUNet and nnU-Net's
PlainConvUNet (dynamic-network-architectures) at the same configuration.

Configuration (nnU-Net's defaults): 5 stages of 32, 64, 128, 256, 320 (3D) / 512 (2D) features, 3^d kernels,
strides 1, 2, 2, 2, 2, two conv-InstanceNorm(affine)-LeakyReLU(0.01) units per stage in encoder and decoder,
transposed-conv upsampling, deep supervision on (each network's own form: medseg and dynamic-network-architectures
return the per-stage logits, MONAI's DynUNet upsamples them to full resolution and stacks them). One training step
= forward, a loss summing the mean squared logit of every output, backward, SGD (momentum 0.99, nesterov) step.
The three networks run round-robin in one process (same load for all); the best of --rounds rounds of --steps steps
is kept (the median is recorded too), after a warm-up step.

    python bench/nets.py            # writes bench/results/nets.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "nets.json"
CASES = {"2d": {"dims": 2, "batch": 2, "patch": (256, 256), "top": 512},
         "3d": {"dims": 3, "batch": 1, "patch": (48, 48, 48), "top": 320}}


def build(library: str, dims: int, top: int, in_channels: int = 1, classes: int = 3) -> nn.Module:
    features = [32, 64, 128, 256, top]
    kernels, strides = [3] * 5, [1, 2, 2, 2, 2]
    if library == "medseg":
        from medseg.nets import create

        return create("plan_unet", dims, in_channels, classes, features_per_stage=features, kernel_sizes=kernels,
                      strides=strides, deep_supervision=True)
    if library == "monai":
        from monai.networks.nets import DynUNet

        return DynUNet(dims, in_channels, classes, kernel_size=kernels, strides=strides,
                       upsample_kernel_size=strides[1:], filters=features, deep_supervision=True,
                       deep_supr_num=3, norm_name=("INSTANCE", {"affine": True}),
                       act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}))
    if library == "dynamic-network-architectures":
        from dynamic_network_architectures.architectures.unet import PlainConvUNet

        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        norm = nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d
        return PlainConvUNet(in_channels, 5, features, conv, kernels, strides, 2, classes, 2, conv_bias=True,
                             norm_op=norm, norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
                             nonlin_kwargs={"negative_slope": 0.01, "inplace": True}, deep_supervision=True)
    raise ValueError(library)


def train_steps(model: nn.Module, optimiser, x: torch.Tensor, steps: int) -> float:
    """Seconds per training step over ``steps`` steps."""
    start = time.perf_counter()
    for _ in range(steps):
        out = model(x)
        outputs = list(out.unbind(1)) if isinstance(out, torch.Tensor) and out.ndim == x.ndim + 1 else (
            out if isinstance(out, (list, tuple)) else [out])
        loss = sum(o.square().mean() for o in outputs)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return (time.perf_counter() - start) / steps


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: stable timings on a shared machine; 2 oversubscribes a loaded one)")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    libraries = ("medseg", "monai", "dynamic-network-architectures")
    results = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": {
        "cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads,
        "torch": torch.__version__, "python": platform.python_version(), "load_average_start": os.getloadavg()},
        "rounds": args.rounds, "steps": args.steps, "cases": {}}
    for case_name in args.cases:
        case = CASES[case_name]
        torch.manual_seed(0)
        x = torch.randn(case["batch"], 1, *case["patch"])
        entries = {}
        for library in libraries:
            torch.manual_seed(0)
            model = build(library, case["dims"], case["top"]).train()
            optimiser = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.99, nesterov=True)
            train_steps(model, optimiser, x, 1)  # warm-up (allocator, lazy init)
            entries[library] = {"model": model, "optimiser": optimiser, "times": [],
                                "params": sum(p.numel() for p in model.parameters())}
        for _ in range(args.rounds):
            for library in libraries:
                entry = entries[library]
                entry["times"].append(train_steps(entry["model"], entry["optimiser"], x, args.steps))
        best = {library: min(entry["times"]) for library, entry in entries.items()}
        results["cases"][case_name] = {
            "input": [case["batch"], 1, *case["patch"]],
            "libraries": {library: {"params": entries[library]["params"], "seconds_per_step": entries[library]["times"],
                                    "best_seconds_per_step": best[library],
                                    "median_seconds_per_step": statistics.median(entries[library]["times"]),
                                    "steps_per_second": 1.0 / best[library]} for library in libraries},
            "ratios": {f"medseg_vs_{library}": best[library] / best["medseg"] for library in libraries[1:]},
        }
        print(case_name, json.dumps(results["cases"][case_name]["ratios"]), {k: round(v, 3) for k, v in best.items()},
              flush=True)
    results["machine"]["load_average_end"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
