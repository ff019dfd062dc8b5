"""Benchmark: training steps per second and achieved FLOP/s on this CPU, medseg before / with each optimisation /
with all of them, beside nnU-Net v2's trainer step on the same network and batch, in one run.

For each dataset the plan ``medseg plan --budget 20m`` makes here (isbi2012_em: its ``2d``; brats2013_mini: its
``3d_fullres``), the training cases are preprocessed once into a temporary cache and every variant trains the
plan's network for ``--steps`` steps through the one ``Trainer`` on real augmented batches from ``PatchLoader``
(one loader worker, the default), with no checkpoints. A variant's ``steps_per_s`` is 1 / the median step wall time
(the wait for the batch included) and ``gflops`` the analytic convolution FLOPs of a step (3x forward, as the
planner counts them) over that time; ``elapsed_steps_per_s`` is the steps over the whole loop (warm-up, thread
probes and the one validation included).

    before            float32, unfused SGD, 1 torch thread (the rule up to now: the cores one loader worker leaves)
    bfloat16          before + bfloat16 autocast
    fused_optimizer   before + fused SGD
    threads_measured  before + the thread count chosen by timing the run's steps (medseg.compute.ThreadChooser)
    channels_last     before + channels-last weights and activations
    compile           before + torch.compile of the network (first_step_seconds: the compile)
    default           medseg train's defaults now: --precision auto (the plan's calibration), fused SGD, threads
                      measured
    before_loaded, default_loaded
                      the same with one busy process beside the run (a core taken by other work)
    nnunet_v2         nnU-Net v2's ``nnUNetTrainer.train_step`` (its code, unchanged: float32 on a CPU,
                      ``torch.set_num_threads(cpu_count)`` as its CLI does) on nnU-Net's PlainConvUNet of the same
                      stages, features, kernels and strides, its DC_and_CE_loss with deep supervision, its SGD,
                      on the same batches

The peak FLOP/s: the best of a few 4096 x 4096 matrix products on all cores, float32 and bfloat16.

    python bench/train_speed.py                       # both datasets, about 25 minutes on 2 cores
    python bench/train_speed.py --datasets isbi2012_em --steps 12 --skip compile   # a shorter run

Writes ``bench/results/train_speed.json`` (``{"results": {dataset: {variant: {"steps_per_s", "gflops", ...}}},
"peak_gflops": {"float32", "bfloat16"}, ...}``) and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "train_speed.json"
DATASETS = {"isbi2012_em": "2d", "brats2013_mini": "3d_fullres"}
VARIANTS = {  # TrainConfig fields, the optimizer's fusion, the network's memory format, torch.compile, a busy core
    "before": dict(precision="float32", threads=1, fused=False),
    "bfloat16": dict(precision="bfloat16", threads=1, fused=False),
    "fused_optimizer": dict(precision="float32", threads=1, fused=True),
    "threads_measured": dict(precision="float32", threads=None, fused=False),
    "channels_last": dict(precision="float32", threads=1, fused=False, channels_last=True),
    "compile": dict(precision="float32", threads=1, fused=False, compile=True),
    "default": dict(precision="auto", threads=None, fused=True),
    "before_loaded": dict(precision="float32", threads=1, fused=False, loaded=True),
    "default_loaded": dict(precision="auto", threads=None, fused=True, loaded=True),
}


def peak_gflops(dtype: torch.dtype, size: int = 4096, repeats: int = 5) -> float:
    """Best FLOP/s of ``size`` x ``size`` matrix products in ``dtype`` on all cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    torch.set_num_threads(threads)
    return 2 * size**3 / best / 1e9


def step_flops(config) -> float:
    """Analytic FLOPs of one training step of ``config``'s plan U-Net (3x the forward convolutions, the batch)."""
    from medseg.planning.topology import Topology, forward_flops

    network = config.network
    divisor = [1] * len(config.patch_size)
    for stride in network["strides"]:
        divisor = [d * s for d, s in zip(divisor, stride)]
    topology = Topology(list(config.patch_size), network["kernel_sizes"], network["strides"], divisor)
    forward = forward_flops(topology, list(network["features_per_stage"]), network["in_channels"],
                            network["num_classes"])
    return 3 * forward * config.batch_size


class BusyCore:
    """One process spinning on a core for the duration of a ``with`` block (a machine with other work on it)."""

    def __enter__(self) -> "BusyCore":
        self.process = multiprocessing.get_context("spawn").Process(target=_spin, daemon=True)
        self.process.start()
        time.sleep(1.0)
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.join()


def _spin() -> None:
    x = 0
    while True:
        x = (x * 1103515245 + 12345) % 2**31


def prepare(name: str, work: Path):
    """The dataset's plan (20-minute budget, made here) and its preprocessed training cache."""
    from medseg.data import open_dataset
    from medseg.planning.service import make_plan
    from medseg.preprocess.pipeline import preprocess_dataset

    plan = make_plan(DATA / name, budget="20m", progress=False)
    configuration = DATASETS[name]
    preprocess_dataset(DATA / name, plan, configuration, work / "cache", progress=False)
    return plan, configuration, open_dataset(DATA / name).spec.predicted_label_values


def run_medseg(plan, configuration: str, cache: Path, label_values: list[int], folder: Path, steps: int,
               variant: dict) -> dict:
    """Train ``steps`` steps of the plan's network through the ``Trainer`` under ``variant``; its figures."""
    from medseg.compute import build_optimizer, resolve_precision
    from medseg.config.train_config import TrainConfig
    from medseg.data.cache import cached_case_ids
    from medseg.nets import create
    from medseg.training.segmentation_task import SegmentationOptions, SegmentationTask
    from medseg.training.trainer import Trainer

    config = plan.configurations[configuration]
    cases = cached_case_ids(cache)
    precision = resolve_precision(variant["precision"], "cpu", measured=plan.calibration.get("precision"))
    train_config = TrainConfig(max_iterations=steps, iterations_per_epoch=steps, threads=variant["threads"],
                               precision=precision, task_options={"configuration": configuration,
                                                                  "validation_batches": 1})
    task = SegmentationTask(configuration=config, cache_dir=cache, train_cases=cases, val_cases=cases[:1],
                            label_values=label_values,
                            options=SegmentationOptions(configuration=configuration, validation_batches=1))
    torch.manual_seed(0)
    network = create(config.network_name, **config.network)
    if variant.get("channels_last"):
        network = network.to(memory_format=torch.channels_last if config.network["spatial_dims"] == 2
                             else torch.channels_last_3d)
    # static shapes: a recompile for the validation batch with dynamic shapes hit an inductor error on the 3D net
    trained = torch.compile(network, dynamic=False) if variant.get("compile") else network
    trainer = Trainer(trained, task, train_config, folder, callbacks=[])
    trainer.optimizer = build_optimizer(trainer.network.parameters(), "sgd", train_config.initial_learning_rate,
                                        train_config.weight_decay, "cpu", fused=variant["fused"])
    first: list[float] = []
    original_step = trainer._step

    def timed_step(batch):  # the first step's time alone (a compile happens there)
        start = time.perf_counter()
        loss = original_step(batch)
        if not first:
            first.append(time.perf_counter() - start)
        return loss

    trainer._step = timed_step
    with BusyCore() if variant.get("loaded") else contextlib.nullcontext():
        load = os.getloadavg()[0]
        start = time.perf_counter()
        state = trainer.run(progress=False)
        elapsed = time.perf_counter() - start
    entry = state.history[-1]
    chooser = trainer.thread_chooser
    return {"step_seconds": entry["step_seconds"], "steps_per_s": 1.0 / entry["step_seconds"],
            "gflops": step_flops(config) / entry["step_seconds"] / 1e9,
            "elapsed_steps_per_s": state.iteration / elapsed, "steps": state.iteration,
            "first_step_seconds": round(first[0], 2) if first else None, "precision": precision,
            "threads": entry["threads"], "thread_probes": chooser.history if chooser else [],
            "load_average_1m_at_start": round(load, 2)}


def run_nnunet(plan, configuration: str, cache: Path, label_values: list[int], steps: int) -> dict:
    """nnU-Net v2's own ``train_step`` on its PlainConvUNet of the plan's topology, on medseg's batches."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from types import SimpleNamespace

    from medseg.data.loader import PatchLoader
    from medseg.training.segmentation_task import label_lookup
    from medseg.transforms.config import AugmentationConfig

    config = plan.configurations[configuration]
    net = config.network
    dims = net["spatial_dims"]
    conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    norm = torch.nn.InstanceNorm2d if dims == 2 else torch.nn.InstanceNorm3d
    stages = len(net["features_per_stage"])
    network = PlainConvUNet(net["in_channels"], stages, net["features_per_stage"], conv, net["kernel_sizes"],
                            net["strides"], 2, net["num_classes"], 2, True, norm, {"eps": 1e-5, "affine": True},
                            None, None, torch.nn.LeakyReLU, {"inplace": True}, deep_supervision=True)
    weights = [1 / 2**i for i in range(stages - 1)]
    weights[-1] = 0
    weights = [w / sum(weights) for w in weights]
    loss = DeepSupervisionWrapper(DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False,
                                                  "ddp": False}, {}, weight_ce=1, weight_dice=1,
                                                 ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss), weights)
    optimizer = torch.optim.SGD(network.parameters(), 1e-2, weight_decay=3e-5, momentum=0.99, nesterov=True)
    trainer = SimpleNamespace(device=torch.device("cpu"), network=network, loss=loss, optimizer=optimizer,
                              grad_scaler=None)
    scales = [[1] * dims]
    for stride in net["strides"][1:-1]:
        scales.append([s * t for s, t in zip(scales[-1], stride)])
    loader = PatchLoader(cache, config.patch_size, config.batch_size,
                         augmentation=AugmentationConfig.for_patch(config.patch_size), num_workers=1, seed=0,
                         progress=False, num_batches=steps + 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(multiprocessing.cpu_count())  # as nnU-Net's CLI on a CPU
    times = []
    try:
        network.train()
        previous = time.perf_counter()
        for batch in loader:
            target = label_lookup(label_values)[batch["label"].long()].float()
            targets = [torch.nn.functional.interpolate(target, scale_factor=[1 / s for s in scale],
                                                       mode="nearest-exact") for scale in scales]
            nnUNetTrainer.train_step(trainer, {"data": batch["image"], "target": targets})
            now = time.perf_counter()
            times.append(now - previous)
            previous = now
    finally:
        torch.set_num_threads(threads)
    step = statistics.median(times[1:])
    return {"step_seconds": step, "steps_per_s": 1.0 / step, "gflops": step_flops(config) / step / 1e9,
            "steps": len(times), "precision": "float32", "threads": multiprocessing.cpu_count()}


def table(results: dict) -> str:
    lines = ["| dataset | variant | steps/s | x before | GFLOP/s | threads | precision |",
             "|---|---|---|---|---|---|---|"]
    for name, variants in results.items():
        before = variants.get("before", {}).get("steps_per_s")
        for variant, entry in variants.items():
            if not isinstance(entry, dict) or "steps_per_s" not in entry:
                continue
            ratio = f"{entry['steps_per_s'] / before:.2f}" if before else ""
            lines.append(f"| {name} | {variant} | {entry['steps_per_s']:.3f} | {ratio} | {entry['gflops']:.1f} | "
                         f"{entry.get('threads')} | {entry.get('precision')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--steps", type=int, default=20, help="training steps per variant")
    parser.add_argument("--skip", nargs="*", default=[], choices=[*VARIANTS, "nnunet_v2"])
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    report = json.loads(args.output.read_text()) if args.output.is_file() else {}
    results = report.get("results", {})
    started = datetime.now(timezone.utc)
    peak = {"float32": round(peak_gflops(torch.float32), 1), "bfloat16": round(peak_gflops(torch.bfloat16), 1)}
    print(f"peak GFLOP/s {peak}", flush=True)
    for name in args.datasets:
        with tempfile.TemporaryDirectory(prefix=f"medseg_train_speed_{name}_") as tmp:
            work = Path(tmp)
            plan, configuration, label_values = prepare(name, work)
            config = plan.configurations[configuration]
            cache = work / "cache" / configuration
            entries = {"network": {"configuration": configuration, "patch_size": list(config.patch_size),
                                   "batch_size": config.batch_size,
                                   "features_per_stage": list(config.network["features_per_stage"]),
                                   "step_gflop": round(step_flops(config) / 1e9, 1),
                                   "planned_step_seconds": round(config.estimated_step_seconds, 4),
                                   "plan_precision": plan.calibration.get("precision")}}
            for variant, settings in VARIANTS.items():
                if variant in args.skip:
                    continue
                try:
                    entries[variant] = run_medseg(plan, configuration, cache, label_values, work / variant,
                                                  args.steps, settings)
                except Exception as error:  # torch.compile's failures above all: recorded, the run goes on
                    entries[variant] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
                    print(f"{name} {variant}: failed: {entries[variant]['error']}", flush=True)
                    continue
                print(f"{name} {variant}: {entries[variant]['steps_per_s']:.3f} steps/s, "
                      f"{entries[variant]['gflops']:.1f} GFLOP/s, threads {entries[variant]['threads']}", flush=True)
            if "nnunet_v2" not in args.skip:
                entries["nnunet_v2"] = run_nnunet(plan, configuration, cache, label_values, args.steps)
                print(f"{name} nnunet_v2: {entries['nnunet_v2']['steps_per_s']:.3f} steps/s", flush=True)
            for entry in entries.values():
                if "steps_per_s" in entry:
                    entry["fraction_of_peak"] = round(entry["gflops"] / peak[entry["precision"]], 4)
                    entry.update({k: round(v, 4) for k, v in entry.items() if isinstance(v, float)})
            results[name] = entries
            write_report(args.output, results, peak, args.steps, started)
    print(table(results))


def write_report(output: Path, results: dict, peak: dict, steps: int, started: datetime) -> None:
    report = {"benchmark": "training steps/s and GFLOP/s: medseg before, each optimisation, default; nnU-Net v2",
              "results": results, "peak_gflops": peak, "steps_per_variant": steps,
              "date": f"{started:%Y-%m-%d %H:%M} UTC",
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                         f"torch {torch.__version__}",
              "load_average_end": [round(x, 2) for x in os.getloadavg()]}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
