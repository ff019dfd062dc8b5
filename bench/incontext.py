"""Benchmark: in-context segmentation, Dice against the support size k, beside training from scratch on the same
k slices, the best classical method fitted on them and the promptable model's clicks; and the inference time.

For each dataset D, the target slices are D's held-out block (the last 20 % of case ids, on the model grid, every
structure of every case; 3D volumes along each axis), and the support of each task is k slices of that task drawn
at random from D's training block (5 draws per k, the same support for every target of the task; mean and spread
over the draws). ``--model-for D=FOLDER`` scores D with a model meta-trained without D (``medseg train-incontext
... --exclude D``: the leave-one-dataset-out protocol of issue 27); without it D is scored with ``--model``
(default: the shipped model, which trained on D's training block, so that figure is in-distribution and says so
in the JSON). The in-context run also scores the shipped promptable model on the same targets after 1 and 3
simulated clicks, and times ``InContextSession.predict`` for one 128x128 target with k = 16 (median of 10).

``--scratch K`` instead trains ``medseg train`` (its 2D plan for ``--scratch-budget``, default 10 minutes) from
scratch on draw 0's K support slices of each compared task (``--scratch-max-tasks`` per dataset) and scores that
task's targets; ``--classical K`` fits every classical method on the same slices. The in-context run records
draw 0's Dice on those same targets (``dice_scratch_targets``), the like-for-like figure.

    python bench/incontext.py                                  # the shipped model on every shared dataset
    python bench/incontext.py --datasets drive --model-for drive=/tmp/loo_drive
    python bench/incontext.py --scratch 16 --threads 1         # from scratch, 10 minutes per task
    python bench/incontext.py --classical 16
    python bench/incontext.py --plot bench/results/incontext_k.png

Writes ``bench/results/incontext.json`` as ``{"results": {"<dataset>": {"k": {"<k>": {"dice", "dice_std",
"dice_scratch_targets", "scratch_dice", "classical_dice", ...}}, "protocol", "interactive"}}, ...}`` (merged field
by field with what is there) and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import zlib
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "incontext.json"
DATASETS = ["isbi2012_em", "drive", "cvc_clinicdb", "brats2013_mini", "monuseg", "hippocampus", "cxr_lungs"]


def support_choice(pool: np.ndarray, k: int, draw: int, seed: int, task: str) -> np.ndarray:
    """The ``draw``-th support of size ``k`` for ``task``: indices into the training bank, the same whichever run
    asks (the in-context figures and the from-scratch models of one draw see the same k slices)."""
    rng = np.random.default_rng([seed, k, draw, zlib.crc32(task.encode())])
    return rng.choice(pool, size=k, replace=len(pool) < k)


def scratch_tasks(targets: list[tuple[int, str]], max_tasks: int) -> list[str]:
    """The tasks of ``targets`` the from-scratch comparison trains (one model each): at most ``max_tasks``, evenly
    spread over the sorted names (a 2D dataset has one task; a 3D one has one per structure, axis and channel)."""
    names = sorted({task for _, task in targets})
    if len(names) <= max_tasks:
        return names
    return [names[i] for i in np.linspace(0, len(names) - 1, max_tasks).round().astype(int)]


def held_out_targets(root: Path, grid: tuple[int, int], max_targets: int):
    """``(holdout bank, train bank, {task: training-bank indices}, [(holdout index, task)])`` of ``root``."""
    from medseg.incontext.tasks import load_task_bank

    holdout = load_task_bank([root], part="holdout", grid=grid, slices_per_axis=2)
    train = load_task_bank([root], part="train", grid=grid, slices_per_axis=4)
    pools = {name: np.flatnonzero(train.task == t) for t, name in enumerate(train.task_names)}
    targets = [(i, holdout.task_names[holdout.task[i]]) for i in range(len(holdout))
               if holdout.task_names[holdout.task[i]] in pools]
    if len(targets) > max_targets:
        targets = [targets[i] for i in np.linspace(0, len(targets) - 1, max_targets).round().astype(int)]
    return holdout, train, pools, targets


def incontext_scores(network, holdout, train, pools, targets, k: int, draw: int, seed: int) -> dict[int, float]:
    """``{holdout index: Dice}`` of the in-context prediction of every target with the task's ``draw``-th support."""
    from medseg.metrics.overlap import confusion, dice

    scores = {}
    for name in sorted({task for _, task in targets}):
        chosen = support_choice(pools[name], k, draw, seed, name)
        indices = [i for i, task in targets if task == name]
        for start in range(0, len(indices), 8):
            chunk = indices[start:start + 8]
            target = holdout.images[chunk].float()[:, None]
            images = train.images[chosen].float()[None, :, None].expand(len(chunk), -1, -1, -1, -1)
            masks = (train.masks[chosen].float() / 255)[None, :, None].expand(len(chunk), -1, -1, -1, -1)
            with torch.inference_mode():
                probability = torch.sigmoid(network(target, images, masks).float())[:, 0].numpy()
            truth = holdout.masks[chunk].numpy() >= 128
            scores.update({i: dice(confusion(p >= 0.5, t)) for i, p, t in zip(chunk, probability, truth)})
    return scores


def dataset_dice(network, root: Path, held_out: tuple, ks: list[int], draws: int, seed: int,
                 max_scratch_tasks: int) -> dict:
    """``{k: {"dice", "dice_std", "dice_scratch_targets"}}`` of ``network`` on ``root``'s held-out block
    (``held_out``: ``held_out_targets``' banks and targets): the mean over the draws of the mean Dice over the
    targets, its spread over the draws, and draw 0's mean over the targets of the tasks the from-scratch comparison
    trains (the same targets and support slices as those models)."""
    holdout, train, pools, targets = held_out
    compared = set(scratch_tasks(targets, max_scratch_tasks))
    figures = {}
    for k in ks:
        per_draw, first = [], {}
        for draw in range(draws):
            scores = incontext_scores(network, holdout, train, pools, targets, k, draw, seed)
            per_draw.append(float(np.nanmean(list(scores.values()))))
            first = first or scores
        same = [first[i] for i, task in targets if task in compared]
        figures[k] = {"dice": round(statistics.mean(per_draw), 4), "dice_std": round(statistics.pstdev(per_draw), 4),
                      "dice_scratch_targets": round(float(np.nanmean(same)), 4)}
        print(f"  {root.name} k={k}: Dice {figures[k]['dice']:.3f} ± {figures[k]['dice_std']:.3f} "
              f"({len(targets)} targets)", flush=True)
    return figures


def _grid_image(image: torch.Tensor):
    """A grid slice ``(G0, G1)`` in [0, 1] as the 8-bit one-channel ``Image`` its PNG holds (1-unit pixels)."""
    from medseg.io import Image

    return Image.from_array((image.float().numpy() * 255).round().astype(np.uint8))


def _task_folder(work: Path, root: Path, k: int, task: str) -> Path:
    """Where the comparisons on draw 0's ``k`` slices of ``task`` keep their dataset, plan, model and result."""
    return work / root.name / f"k{k}" / task.replace("/", "_")


def _support_dataset(task_folder: Path, k: int, task: str, pools: dict, train, seed: int) -> Path:
    """Draw 0's ``k`` support slices of ``task`` as a 2D PNG dataset in nnU-Net v2 layout, ``task_folder/data``
    (written once: ``dataset.json``, written last and atomically, marks it complete)."""
    from medseg.config import write_json_atomic
    from medseg.io import Image, write_image

    folder = task_folder / "data"
    if (folder / "dataset.json").is_file():
        return folder
    chosen = support_choice(pools[task], k, 0, seed, task)
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    for n, (image, mask) in enumerate(zip(train.images[chosen], train.masks[chosen])):
        write_image(_grid_image(image), folder / "imagesTr" / f"case_{n:03d}_0000.png")
        write_image(Image.from_array((mask.numpy() >= 128).astype(np.uint8)), folder / "labelsTr" / f"case_{n:03d}.png")
    write_json_atomic({"name": folder.name, "channel_names": {"0": "grey"}, "labels": {"background": 0, "object": 1},
                       "numTraining": k, "file_ending": ".png"}, folder / "dataset.json")
    return folder


def _task_scores(predict, holdout, targets: list[tuple[int, str]], task: str) -> list[float]:
    """Dice of ``predict`` (an ``Image`` -> label ``Image`` (1, G0, G1), label 1 the object) on ``task``'s
    held-out targets."""
    from medseg.metrics.overlap import confusion, dice

    return [dice(confusion(predict(_grid_image(holdout.images[i])).array[0] == 1, holdout.masks[i].numpy() >= 128))
            for i, name in targets if name == task]


def scratch_dice(root: Path, ks: list[int], grid: tuple[int, int], max_targets: int, seed: int,
                 max_tasks: int, budget: float, threads: int, work: Path) -> dict:
    """``{k: {"scratch_dice", "scratch_tasks", "scratch_train_seconds"}}``: for each compared task, ``medseg
    train`` (the planner's 2D plan for ``budget`` seconds) from scratch on draw 0's k support slices, then the mean
    Dice of its predictions of that task's held-out targets, all on the model grid. Resumes from ``work``."""
    from medseg.benchmark.grid import _configuration
    from medseg.config import Plan, read_json, write_json_atomic
    from medseg.inference import Predictor
    from medseg.planning.service import make_plan
    from medseg.training.service import train_fold

    holdout, train, pools, targets = held_out_targets(root, grid, max_targets)
    figures = {}
    for k in ks:
        scores, seconds = [], []
        tasks = scratch_tasks(targets, max_tasks)
        for name in tasks:
            folder = _task_folder(work, root, k, name)
            result_file = folder / "result.json"
            if not result_file.is_file():
                data = _support_dataset(folder, k, name, pools, train, seed)
                plans = folder / "plans.json"
                if not plans.is_file():
                    write_json_atomic(make_plan(data, budget=budget, progress=False).to_dict(), plans)
                configuration = _configuration(Plan.from_dict(read_json(plans)), "2d", plans)
                model = folder / "model"
                trained = train_fold(data, configuration, "all", model_dir=model, plans=plans, budget_seconds=budget,
                                     resume=(model / "fold_all").is_dir(), train_config={"threads": threads},
                                     validate=False, progress=False)
                task_scores = _task_scores(Predictor.from_folder(model).predict, holdout, targets, name)
                write_json_atomic({"task": name, "k": k, "dice": task_scores, "steps": trained.state.iteration,
                                   "train_seconds": round(trained.state.elapsed, 1)}, result_file)
            result = read_json(result_file)
            scores += result["dice"]
            seconds.append(result["train_seconds"])
            print(f"  {root.name} k={k} {name}: from scratch Dice {np.nanmean(result['dice']):.3f} "
                  f"({result['steps']} steps, {result['train_seconds']:.0f} s)", flush=True)
        figures[k] = {"scratch_dice": round(float(np.nanmean(scores)), 4), "scratch_tasks": tasks,
                      "scratch_train_seconds": round(float(np.mean(seconds)), 1)}
    return figures


def classical_dice(root: Path, ks: list[int], grid: tuple[int, int], max_targets: int, seed: int,
                   max_tasks: int, methods: list[str], work: Path) -> dict:
    """``{k: {"classical_dice", "classical_method", "classical_by_method"}}``: every classical method fitted
    (``medseg.classical.fit_classical``: its parameter search and rank-to-label map) on the same k support slices
    the from-scratch model trains on, scored on the same held-out targets; the best method's mean Dice."""
    from medseg.classical.model import fit_classical

    holdout, train, pools, targets = held_out_targets(root, grid, max_targets)
    figures = {}
    for k in ks:
        by_method: dict[str, list[float]] = {method: [] for method in methods}
        for name in scratch_tasks(targets, max_tasks):
            data = _support_dataset(_task_folder(work, root, k, name), k, name, pools, train, seed)
            for method in methods:
                by_method[method] += _task_scores(fit_classical(data, method, cases=k).predict, holdout, targets, name)
        means = {method: round(float(np.nanmean(scores)), 4) for method, scores in by_method.items()}
        best = max(means, key=means.get)
        print(f"  {root.name} k={k}: best classical {best} Dice {means[best]:.3f} ({means})", flush=True)
        figures[k] = {"classical_dice": means[best], "classical_method": best, "classical_by_method": means}
    return figures


def interactive_dice(root: Path, held_out: tuple, clicks: list[int], seed: int, max_tasks: int) -> dict:
    """The shipped promptable model on the same held-out targets with ``medseg eval-interactive``'s simulated
    user (clicks mode): ``{"clicks_N": mean Dice after N clicks over every target, "clicks_N_scratch_targets":
    the same over the from-scratch comparison's targets}`` (it needs no support: one figure for every k)."""
    from medseg.interactive.evaluate import interaction_curve
    from medseg.interactive.predictor import load_segmenter

    segmenter = load_segmenter(None)
    holdout, _, _, targets = held_out
    compared = set(scratch_tasks(targets, max_tasks))
    rng = np.random.default_rng(seed)
    curves = {i: interaction_curve(segmenter, holdout.images[i].float().numpy()[None],
                                   holdout.masks[i].numpy() >= 128, "clicks", max_interactions=max(clicks),
                                   rng=rng).dice for i, _ in targets}
    figures = {}
    for n in clicks:
        figures[f"clicks_{n}"] = round(float(np.mean([curves[i][n - 1] for i, _ in targets])), 4)
        figures[f"clicks_{n}_scratch_targets"] = round(float(np.mean(
            [curves[i][n - 1] for i, task in targets if task in compared])), 4)
    print(f"  {root.name}: interactive {figures}", flush=True)
    return figures


def _merge(output: Path, dataset: str, fields: dict, entries: dict) -> None:
    """Fold one dataset's ``fields`` and per-k ``entries`` into ``output`` (re-read first: another run of this
    script may have written other keys of the same file meanwhile)."""
    record = json.loads(output.read_text()) if output.is_file() else {}
    slot = record.setdefault("results", {}).setdefault(dataset, {})
    slot.update(fields)
    for k, entry in entries.items():
        slot.setdefault("k", {}).setdefault(str(k), {}).update(entry)
    output.write_text(json.dumps(record, indent=2) + "\n")


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


def plot_dice_vs_k(record: dict, path: Path) -> Path:
    """One panel per dataset: in-context Dice against k (mean ± spread over the draws; the in-distribution
    model dashed where the record has it), from-scratch training and the best classical method at the k they were
    run, the promptable model's 1 and 3 clicks as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(record["results"])
    columns = min(4, len(datasets))
    rows = -(-len(datasets) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.9 * rows + 0.6), sharey=True, squeeze=False)
    for axis in axes.flat[len(datasets):]:
        axis.axis("off")
    for axis, name in zip(axes.flat, datasets):
        entry = record["results"][name]
        ks = sorted(int(k) for k, v in entry["k"].items() if "dice" in v)
        mean = np.array([entry["k"][str(k)]["dice"] for k in ks])
        spread = np.array([entry["k"][str(k)].get("dice_std", 0.0) for k in ks])
        axis.plot(ks, mean, "o-", color="C0", label=f"in-context ({entry.get('protocol', '?').split(':')[0]})")
        axis.fill_between(ks, mean - spread, mean + spread, color="C0", alpha=0.2)
        inside = entry.get("in_distribution", {}).get("k", {})
        if inside:
            ks_in = sorted(int(k) for k in inside)
            axis.plot(ks_in, [inside[str(k)]["dice"] for k in ks_in], "--", color="C0", alpha=0.6,
                      label="in-context, in-distribution")
        for key, style, label in (("scratch_dice", "s", "medseg train, 10 min"), ("classical_dice", "x",
                                                                                   "best classical")):
            points = [(int(k), v[key]) for k, v in entry["k"].items() if v.get(key) is not None]
            if points:
                axis.plot(*zip(*sorted(points)), style, markersize=8, label=label)
        for clicks, colour in (("clicks_1", "C3"), ("clicks_3", "C4")):
            if clicks in entry.get("interactive", {}):
                axis.axhline(entry["interactive"][clicks], color=colour, linestyle=":", linewidth=1,
                             label=f"promptable, {clicks.split('_')[1]} click(s)")
        axis.set_xscale("log", base=2)
        axis.set_xticks([1, 2, 4, 8, 16, 32], ["1", "2", "4", "8", "16", "32"])
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("k (support slices)")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("held-out Dice")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.6 / (2.9 * rows + 0.6) + 0.04, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    from medseg.incontext.model import load_incontext_network
    from medseg.planning.budget import parse_duration

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="in-context model folder (default: shipped)")
    parser.add_argument("--model-for", action="append", default=[], help="DATASET=FOLDER: a model trained "
                        "without DATASET (leave-one-dataset-out)")
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--k", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--max-targets", type=int, default=48, help="held-out target slices per dataset")
    parser.add_argument("--scratch", nargs="+", type=int, default=None, metavar="K",
                        help="instead of the in-context model: train from scratch on draw 0's K support slices")
    parser.add_argument("--scratch-budget", default="10m", help="budget of each from-scratch training")
    parser.add_argument("--scratch-max-tasks", type=int, default=2, help="tasks per dataset trained from scratch")
    parser.add_argument("--scratch-work", type=Path, default=Path("/tmp/medseg_incontext_scratch"))
    parser.add_argument("--classical", nargs="+", type=int, default=None, metavar="K",
                        help="instead of the in-context model: fit the classical methods on draw 0's K slices")
    parser.add_argument("--classical-methods", nargs="+", default=["otsu", "multi-otsu", "region-growing",
                        "watershed", "kmeans", "chan-vese"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--grid", type=int, default=128, help="--scratch, --classical: the in-context "
                        "model's grid side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=None, help="only draw the Dice-vs-k plot of --output here")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.plot:
        print(plot_dice_vs_k(json.loads(args.output.read_text()), args.plot))
        return 0
    excluded = dict(item.split("=", 1) for item in args.model_for)
    command = "python bench/incontext.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for name in args.datasets:
        root = DATA / name if not Path(name).is_dir() else Path(name)
        if args.classical:
            figures = classical_dice(root, args.classical, (args.grid, args.grid), args.max_targets, args.seed,
                                     args.scratch_max_tasks, args.classical_methods, args.scratch_work)
            _merge(args.output, root.name, {"classical_command": command}, figures)
            continue
        if args.scratch:
            figures = scratch_dice(root, args.scratch, (args.grid, args.grid), args.max_targets, args.seed,
                                   args.scratch_max_tasks, parse_duration(args.scratch_budget),
                                   torch.get_num_threads(), args.scratch_work)
            _merge(args.output, root.name, {"scratch_command": command, "scratch_budget": args.scratch_budget,
                                            "scratch_threads": torch.get_num_threads()}, figures)
            continue
        folder = Path(excluded[root.name]) if root.name in excluded else args.model
        network, spec = load_incontext_network(folder)
        seen = [Path(d).name for d in spec.extra.get("datasets", [])]
        protocol = ("leave-one-dataset-out" if root.name not in seen else
                    "in-distribution: the model trained on this dataset's training block")
        held_out = held_out_targets(root, tuple(network.config.grid), args.max_targets)
        figures = dataset_dice(network, root, held_out, args.k, args.draws, args.seed, args.scratch_max_tasks)
        interactive = interactive_dice(root, held_out, [1, 3], args.seed, args.scratch_max_tasks)
        _merge(args.output, root.name, {"protocol": protocol, "model": str(folder or "shipped"),
                                        "trained_on": seen, "command": command, "interactive": interactive}, figures)
    if args.scratch or args.classical:
        return 0
    record = json.loads(args.output.read_text())
    record.update({"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                   "torch_threads": torch.get_num_threads(), "draws": args.draws,
                   "inference_seconds_128_k16": inference_seconds(args.model), "command": command})
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"inference, 128x128 target, k = 16: {record['inference_seconds_128_k16']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
