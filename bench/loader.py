"""Benchmark: training patches per second, medseg's PatchLoader vs nnU-Net v2's loader, same plan, same augmentation.

For each dataset (brats2013_mini 3D, isbi2012_em 2D):
  1. a temporary nnUNet_raw copy (symlinks to ../shared/data), nnU-Net's own planning and preprocessing
     (``nnUNetv2_plan_and_preprocess``, nnUNet_* variables set for its subprocesses only);
  2. in a subprocess: nnU-Net's arrays are copied into a medseg cache (``medseg.data.cache.write_case``,
     untimed), then nnU-Net's trainer data path is timed: ``nnUNetDataLoader`` with the trainer's patch sizes,
     foreground oversampling and ``get_training_transforms`` (deep supervision off: medseg makes no
     down-sampled targets), in ``NonDetMultiThreadedAugmenter`` with the trainer's arguments;
  3. medseg's ``PatchLoader`` on that cache: same patch size, batch size, worker count, nnU-Net's default
     probabilities (``AugmentationConfig.for_patch``; one-hot-linear label resampling as nnU-Net).
Both run with ``--workers`` worker processes, one after the other, in ``--rounds`` alternating rounds (the
median rate is reported, so a burst of load on a shared machine hits both); after ``--warmup`` batches the
next ``--batches-3d`` / ``--batches-2d`` are timed. patches/s = batches * batch size / seconds.

    python bench/loader.py            # writes bench/results/loader.json and its section of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "loader.json"
BENCHMARKS = ROOT / "BENCHMARKS.md"
SECTION = "## Loader: patches per second"
DATASETS = {"brats2013_mini": (991, "3d_fullres"), "isbi2012_em": (992, "2d")}


def nnunet_env(base: Path, workers: int) -> dict[str, str]:
    return {**os.environ, "nnUNet_raw": str(base / "raw"), "nnUNet_preprocessed": str(base / "preprocessed"),
            "nnUNet_results": str(base / "results"), "nnUNet_n_proc_DA": str(workers),
            "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def prepare_nnunet(name: str, base: Path, workers: int) -> Path:
    """nnUNet_raw symlink copy of ``name`` + nnU-Net planning/preprocessing; returns the preprocessed folder."""
    number, configuration = DATASETS[name]
    raw = base / "raw" / f"Dataset{number}_{name.replace('_', '')}"
    raw.mkdir(parents=True)
    for part in ("imagesTr", "labelsTr", "dataset.json"):
        (raw / part).symlink_to(DATA / name / part)
    tool = Path(sys.executable).with_name("nnUNetv2_plan_and_preprocess")
    subprocess.run([str(tool), "-d", str(number), "-c", configuration, "-np", str(workers)],
                   env=nnunet_env(base, workers), check=True, stdout=subprocess.DEVNULL)
    return base / "preprocessed" / raw.name


def child_main(args: argparse.Namespace) -> None:
    """In the nnU-Net environment: copy its arrays into a medseg cache, then time its loader (JSON on stdout)."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json, save_json
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from medseg.data.cache import write_case

    folder = Path(args.child)
    plans, dataset_json = load_json(folder / "nnUNetPlans.json"), load_json(folder / "dataset.json")
    plans["continue_training"] = False  # what run_training.py adds before building a trainer
    cases = sorted(p.name[:-len(".b2nd")] for p in (folder / f"nnUNetPlans_{args.configuration}").glob("*.b2nd")
                   if not p.name.endswith("_seg.b2nd"))
    save_json([{"train": cases, "val": cases}], folder / "splits_final.json")  # fold 0 = every case (4 < 5 folds)
    trainer = nnUNetTrainer(plans, args.configuration, 0, dataset_json, device=torch.device("cpu"))
    trainer.enable_deep_supervision = False
    trainer._set_batch_size_and_oversample()  # what trainer.initialize() does, without building the network
    dataset_tr, _ = trainer.get_tr_and_val_datasets()
    patch = [int(p) for p in trainer.configuration_manager.patch_size]
    for case in cases if not Path(args.cache).is_dir() else []:  # later rounds reuse the cache
        data, seg, _, properties = dataset_tr.load_case(case)
        write_medseg_case(Path(args.cache), case, np.asarray(data[:]), np.asarray(seg[:]),
                          properties["class_locations"], len(patch), write_case)
    setup = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    rotation, dummy_2d, initial_patch, mirror_axes = setup
    use_mask = trainer.configuration_manager.use_mask_for_norm
    transforms = trainer.get_training_transforms(
        patch, rotation, None, mirror_axes, dummy_2d, use_mask_for_norm=use_mask,
        foreground_labels=trainer.label_manager.foreground_labels)
    loader = nnUNetDataLoader(dataset_tr, trainer.batch_size, initial_patch, patch, trainer.label_manager,
                              oversample_foreground_percent=trainer.oversample_foreground_percent,
                              transforms=transforms)
    from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter

    augmenter = NonDetMultiThreadedAugmenter(data_loader=loader, transform=None, num_processes=args.workers,
                                             num_cached=max(6, args.workers // 2), seeds=None, pin_memory=False,
                                             wait_time=0.002)
    seconds, cpu = time_batches(augmenter, args.warmup, args.batches)
    augmenter._finish()
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "patch_size": patch, "batch_size": trainer.batch_size,
                      "initial_patch_size": [int(p) for p in initial_patch], "dummy_2d": bool(dummy_2d),
                      "use_mask_for_norm": [bool(u) for u in use_mask]}))


def write_medseg_case(cache: Path, case: str, data, seg, class_locations: dict, ndim: int, write_case) -> None:
    """nnU-Net arrays ``(C, [1,] *S)`` -> medseg cache case; 2D images lose nnU-Net's singleton z axis."""
    drop = data.ndim - 1 - ndim  # 1 for nnU-Net's pseudo-3D 2D images
    if drop:
        data, seg = data[:, 0], seg[:, 0]
    locations = {int(k): np.asarray(v)[:, 1 + drop:] for k, v in class_locations.items()
                 if not isinstance(k, tuple) and int(k) > 0}
    write_case(cache, case, data.astype(np.float32), seg.astype(np.int8), locations, {"source": "nnU-Net"})


def time_batches(iterator, warmup: int, batches: int) -> tuple[float, float]:
    """Wall seconds and CPU seconds (this process + its worker processes) for ``batches`` after ``warmup``."""
    iterator = iter(iterator)
    for _ in range(warmup):
        next(iterator)
    start, cpu = time.perf_counter(), process_tree_cpu()
    for _ in range(batches):
        next(iterator)
    return time.perf_counter() - start, process_tree_cpu() - cpu


def process_tree_cpu() -> float:
    """User + system CPU seconds of this process and its live children (the loader's workers), from /proc."""
    total, ticks = time.process_time(), os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():  # field 4, the parent's pid
            total += (int(fields[11]) + int(fields[12])) / ticks  # fields 14 and 15, utime and stime
    return total


def time_medseg(cache: Path, plan: dict, args: argparse.Namespace, label_mode: str) -> tuple[float, float]:
    from medseg.data.loader import PatchLoader
    from medseg.transforms import AugmentationConfig

    config = AugmentationConfig.for_patch(plan["patch_size"], zero_outside_mask=any(plan["use_mask_for_norm"]),
                                          label_interpolation=label_mode)
    loader = PatchLoader(cache, plan["patch_size"], plan["batch_size"], augmentation=config,
                         num_workers=args.workers, seed=0, progress=False)
    return time_batches(loader, args.warmup, args.batches)


def run_dataset(name: str, args: argparse.Namespace) -> dict:
    """``--rounds`` alternating rounds (nnU-Net, medseg, medseg with nearest labels); medians of the rates."""
    batches = args.batches or (args.batches_3d if DATASETS[name][1].startswith("3d") else args.batches_2d)
    timing = argparse.Namespace(**{**vars(args), "batches": batches})
    base = Path(tempfile.mkdtemp(prefix=f"medseg_bench_loader_{name}_", dir=args.temp))
    rates: dict[str, list[float]] = {key: [] for key in ("nnunet", "medseg", "medseg_nearest", "nnunet_per_cpu_s",
                                                         "medseg_per_cpu_s")}
    try:
        preprocessed = prepare_nnunet(name, base, args.workers)
        cache = base / "medseg_cache"
        command = [sys.executable, __file__, "--child", str(preprocessed), "--cache", str(cache),
                   "--configuration", DATASETS[name][1], "--workers", str(args.workers),
                   "--warmup", str(args.warmup), "--batches", str(batches)]
        for _ in range(args.rounds):
            done = subprocess.run(command, env=nnunet_env(base, args.workers), capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"nnU-Net side failed on {name}:\n{done.stderr[-4000:]}")
            plan = json.loads(done.stdout.strip().splitlines()[-1])
            patches = batches * plan["batch_size"]
            seconds, cpu = time_medseg(cache, plan, timing, "linear")
            rates["nnunet"].append(patches / plan["seconds"])
            rates["nnunet_per_cpu_s"].append(patches / plan["cpu_seconds"])
            rates["medseg"].append(patches / seconds)
            rates["medseg_per_cpu_s"].append(patches / cpu)
            rates["medseg_nearest"].append(patches / time_medseg(cache, plan, timing, "nearest")[0])
    finally:
        shutil.rmtree(base, ignore_errors=True)
    median = {key: float(np.median(values)) for key, values in rates.items()}
    return {"dataset": name, "configuration": DATASETS[name][1], "batches": batches,
            **{k: v for k, v in plan.items() if k not in ("seconds", "cpu_seconds")},
            "nnunet_patches_per_s": round(median["nnunet"], 3), "medseg_patches_per_s": round(median["medseg"], 3),
            "ratio": round(median["medseg"] / median["nnunet"], 3),
            "nnunet_patches_per_cpu_s": round(median["nnunet_per_cpu_s"], 3),
            "medseg_patches_per_cpu_s": round(median["medseg_per_cpu_s"], 3),
            "ratio_per_cpu_s": round(median["medseg_per_cpu_s"] / median["nnunet_per_cpu_s"], 3),
            "medseg_nearest_labels_patches_per_s": round(median["medseg_nearest"], 3),
            "rounds": {key: [round(v, 3) for v in values] for key, values in rates.items()}}


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def write_section(report: dict) -> None:
    rows = "\n".join(
        f"| {r['dataset']} ({r['configuration']}) | {'x'.join(map(str, r['patch_size']))} | {r['batch_size']} | "
        f"{r['batches']} | {r['nnunet_patches_per_s']:.2f} | {r['medseg_patches_per_s']:.2f} | "
        f"**{r['ratio']:.2f}x** | {r['nnunet_patches_per_cpu_s']:.2f} | {r['medseg_patches_per_cpu_s']:.2f} | "
        f"**{r['ratio_per_cpu_s']:.2f}x** | {r['medseg_nearest_labels_patches_per_s']:.2f} |"
        for r in report["results"])
    text = f"""{SECTION}

Training patches per second, medseg `PatchLoader` vs nnU-Net v2 (`nnUNetDataLoader` + the trainer's default
training transforms in `NonDetMultiThreadedAugmenter`), same nnU-Net plan and preprocessed arrays, same patch
size, batch size, augmentation probabilities and ranges, {report['workers']} worker processes each, one loader at a
time, in {report['rounds']} alternating rounds (median shown); per round the batches in the table are timed
after {report['warmup']} warm-up batches. "nearest labels": medseg with nearest-neighbour label resampling instead of
nnU-Net's one-hot-linear (not the same augmentation; shown for what it costs). patches/CPU-s: patches per CPU
second of the loader's processes (main + workers, from /proc): on a machine shared with other jobs the wall-clock
rate depends on how much of the 2 cores each loader happened to get, the CPU-time rate much less.

| dataset | patch | batch | batches | nnU-Net patches/s | medseg patches/s | ratio | nnU-Net patches/CPU-s | medseg patches/CPU-s | ratio | medseg patches/s, nearest labels |
|---|---|---|---|---|---|---|---|---|---|---|
{rows}

Command: `{report['command']}` on {report['date']}; machine: {report['machine']['cpu']}, {report['machine']['cores']}
cores, load average before/after {report['load_before']} / {report['machine']['load_average_1_5_15']}
(other jobs share this machine; a high load lowers both figures). Results: `bench/results/loader.json`.
"""
    current = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    start = current.find(SECTION)
    if start < 0:
        current = current.rstrip("\n") + "\n\n" + text
    else:
        end = current.find("\n## ", start + len(SECTION))
        current = current[:start] + text + ("" if end < 0 else current[end:])
    BENCHMARKS.write_text(current)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batches", type=int, help="timed batches per round (default: --batches-3d / --batches-2d)")
    parser.add_argument("--batches-3d", type=int, default=30)
    parser.add_argument("--batches-2d", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median rate is reported")
    parser.add_argument("--temp", help="folder for the temporary nnU-Net and medseg data (default: system temp)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--configuration", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args)
    load_before = [round(x, 2) for x in os.getloadavg()]
    results = [run_dataset(name, args) for name in args.datasets]
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "load_before": load_before, "command": "python bench/loader.py " + " ".join(sys.argv[1:]),
              "workers": args.workers, "warmup": args.warmup, "rounds": args.rounds, "results": results}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    write_section(report)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
