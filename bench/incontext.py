"""Benchmark: in-context segmentation, Dice against the support size k, and the inference time.

For each dataset D, the target slices are D's held-out block (the last 20 % of case ids, on the model grid, every
structure of every case; 3D volumes along each axis), and the support of each target is k slices of the same task
drawn at random from D's training block (5 draws per k; mean and spread over the draws). ``--model-for D=FOLDER``
scores D with a model meta-trained without D (``medseg train-incontext ... --exclude D``: the leave-one-dataset-out
protocol of issue 27); without it D is scored with ``--model`` (default: the shipped model, which trained on D's
training block, so that figure is in-distribution and says so in the JSON). Also the time of
``InContextSession.predict`` for one 128x128 target with k = 16 (median of 10).

    python bench/incontext.py                                  # the shipped model on every shared dataset
    python bench/incontext.py --datasets drive --model-for drive=/tmp/loo_drive

Writes ``bench/results/incontext.json`` as ``{"results": {"<dataset>": {"k": {"<k>": {"dice", "dice_std",
"scratch_dice"}}, "protocol"}}, ...}`` (merged with what is there; ``scratch_dice`` is null until the from-scratch
comparison is run) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "incontext.json"
DATASETS = ["isbi2012_em", "drive", "cvc_clinicdb", "brats2013_mini", "monuseg", "hippocampus", "cxr_lungs"]


def dataset_dice(network, root: Path, ks: list[int], draws: int, max_targets: int, seed: int) -> dict:
    """``{k: (mean Dice over the draws, std over the draws)}`` of ``network`` on ``root``'s held-out block."""
    from medseg.incontext.tasks import load_task_bank
    from medseg.metrics.overlap import confusion, dice

    grid = tuple(network.config.grid)
    holdout = load_task_bank([root], part="holdout", grid=grid, slices_per_axis=2)
    train = load_task_bank([root], part="train", grid=grid, slices_per_axis=4)
    pools = {name: np.flatnonzero(train.task == t) for t, name in enumerate(train.task_names)}
    targets = [(i, holdout.task_names[holdout.task[i]]) for i in range(len(holdout))
               if holdout.task_names[holdout.task[i]] in pools]
    if len(targets) > max_targets:
        targets = [targets[i] for i in np.linspace(0, len(targets) - 1, max_targets).round().astype(int)]
    rng = np.random.default_rng(seed)
    figures = {}
    for k in ks:
        per_draw = []
        for _ in range(draws):
            scores = []
            for start in range(0, len(targets), 8):
                chunk = targets[start:start + 8]
                chosen = [rng.choice(pools[name], size=k, replace=len(pools[name]) < k) for _, name in chunk]
                target = holdout.images[[i for i, _ in chunk]].float()[:, None]
                images = torch.stack([train.images[c].float() for c in chosen])[:, :, None]
                masks = torch.stack([train.masks[c].float() / 255 for c in chosen])[:, :, None]
                with torch.inference_mode():
                    probability = torch.sigmoid(network(target, images, masks).float())[:, 0].numpy()
                truth = holdout.masks[[i for i, _ in chunk]].numpy() >= 128
                scores += [dice(confusion(p >= 0.5, t)) for p, t in zip(probability, truth)]
            per_draw.append(float(np.nanmean(scores)))
        figures[k] = (round(statistics.mean(per_draw), 4), round(statistics.pstdev(per_draw), 4))
        print(f"  {root.name} k={k}: Dice {figures[k][0]:.3f} ± {figures[k][1]:.3f} ({len(targets)} targets)",
              flush=True)
    return figures


def inference_seconds(model: Path | None) -> float:
    """Median time of ``InContextSession.predict`` for a 128x128 target with k = 16."""
    from medseg.incontext.session import InContextSession
    from medseg.incontext.support import SupportSet

    session = InContextSession(model)
    rng = np.random.default_rng(0)
    masks = [np.zeros((128, 128), bool) for _ in range(16)]
    for mask in masks:
        mask[30:90, 40:100] = True
    support = SupportSet.from_arrays([rng.random((128, 128)).astype(np.float32) for _ in range(16)], masks)
    target = rng.random((128, 128)).astype(np.float32)
    session.predict(target, support)  # warm-up
    times = []
    for _ in range(10):
        start = time.perf_counter()
        session.predict(target, support)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 4)


def main(argv: list[str] | None = None) -> int:
    from medseg.incontext.model import load_incontext_network

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="in-context model folder (default: shipped)")
    parser.add_argument("--model-for", action="append", default=[], help="DATASET=FOLDER: a model trained "
                        "without DATASET (leave-one-dataset-out)")
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--k", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--max-targets", type=int, default=48, help="held-out target slices per dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    excluded = dict(item.split("=", 1) for item in args.model_for)
    record = json.loads(args.output.read_text()) if args.output.is_file() else {}
    results = record.setdefault("results", {})
    for name in args.datasets:
        root = DATA / name if not Path(name).is_dir() else Path(name)
        folder = Path(excluded[root.name]) if root.name in excluded else args.model
        network, spec = load_incontext_network(folder)
        seen = [Path(d).name for d in spec.extra.get("datasets", [])]
        protocol = ("leave-one-dataset-out" if root.name not in seen else
                    "in-distribution: the model trained on this dataset's training block")
        figures = dataset_dice(network, root, args.k, args.draws, args.max_targets, args.seed)
        results[root.name] = {"protocol": protocol, "model": str(folder or "shipped"),
                              "k": {str(k): {"dice": d, "dice_std": s, "scratch_dice": None}
                                    for k, (d, s) in figures.items()}}
    record.update({"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                   "torch_threads": torch.get_num_threads(), "draws": args.draws,
                   "inference_seconds_128_k16": inference_seconds(args.model),
                   "command": "python bench/incontext.py " + " ".join(argv if argv is not None else sys.argv[1:])})
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"inference, 128x128 target, k = 16: {record['inference_seconds_128_k16']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
