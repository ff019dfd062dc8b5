"""Learning from few labels: self-supervised pretraining and semi-supervised training against the labelled-only
model, at equal budget (issue 19's acceptance for ``medseg pretrain`` and ``medseg train --unlabelled``).

Per dataset: the held-out block of bench/pipeline.py is kept out of everything; the training block's images
(labels ignored) pretrain the plan's network once (``medseg pretrain --budget P``); then for each draw a labelled
subset of ``--labelled-share`` of the training block (at least 2 cases, drawn by the draw's seed) trains, each
for the same ``--budget`` B with one plan (made once for B on the training block):

- ``random``: ``medseg train`` from random weights (the labelled-only model),
- ``pretrained``: ``medseg train --init PRETRAINED`` (the pretraining's time is not in B: it is made once for every
  later task, as an ImageNet or a SparK initialisation is),
- ``semi`` (``--semi DATASET``): ``medseg train --unlabelled REST --semi mean-teacher``, REST = the training block's
  other images.

Every model predicts the held-out block (no mirroring), scored by the mean over cases of the foreground Dice
(``medseg.metrics``; a label absent from both masks skipped). Resumable: each finished arm keeps its
``score.json``; results merge into ``bench/results/label_efficiency.json``.

    python bench/label_efficiency.py --datasets isbi2012_em --semi isbi2012_em --budget 4m --pretrain-budget 12m
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import DATA, DATASETS, _link_files, parse_budget  # noqa: E402
from trust import case_ids, subset, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "label_efficiency.json"
BIN = Path(sys.executable).parent


def run(cmd: list, log: Path, threads: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    started = time.time()
    with open(log, "a") as handle:
        handle.write(f"\n$ {' '.join(map(str, cmd))}\n")
        handle.flush()
        subprocess.run([str(c) for c in cmd], stdout=handle, stderr=subprocess.STDOUT, env=env, check=True)
    return time.time() - started


def labelled_draw(train: list[str], share: float, draw: int) -> list[str]:
    count = max(2, round(share * len(train)))
    return sorted(np.random.default_rng(1000 + draw).choice(train, size=count, replace=False).tolist())


def moved_plan(plans: Path, configuration: str, dataset: Path, output: Path) -> Path:
    """The training block's plan moved to ``dataset`` (a labelled subset): the same network and patch, recorded
    for the subset's cases; what ``medseg train --init`` does with the pretrained folder's plan, written out so
    that every arm of a draw trains with the same one."""
    from medseg.config import Plan, read_json, write_json_atomic
    from medseg.data.layout import open_dataset
    from medseg.data.validate import dataset_record
    from medseg.planning.transfer import target_plan

    if not output.is_file():
        data = open_dataset(dataset)
        plan, _ = target_plan(Plan.from_dict(read_json(plans)), configuration, data.spec, by="bench")
        plan.dataset = dataset_record(data, validated=False)
        write_json_atomic(plan.to_dict(), output)
    return output


def image_folder(name: str, cases: list[str], folder: Path) -> Path:
    """A flat folder of the cases' image files (symlinks), the way ``--unlabelled`` and ``predict -i`` take it."""
    if not folder.exists():
        ending = json.loads((DATA / name / "dataset.json").read_text())["file_ending"]
        _link_files(DATA / name / "imagesTr", folder, cases, ending, True)
    return folder


def score(name: str, prediction: Path, cases: list[str]) -> dict:
    from medseg.io import read_image
    from medseg.metrics import mean_label_dice

    spec = json.loads((DATA / name / "dataset.json").read_text())
    ending = spec["file_ending"]
    values = sorted(v for k, v in spec["labels"].items() if isinstance(v, int) and v > 0 and k != "ignore")
    per_case = []
    for case in cases:
        pred = read_image(prediction / f"{case}{ending}").array[0]
        ref = read_image(DATA / name / "labelsTr" / f"{case}{ending}").array[0]
        per_case.append(mean_label_dice(pred, ref, values, skip_absent=True))
    return {"dice": float(np.nanmean(per_case)), "per_case": [round(d, 4) for d in per_case]}


def arm(name: str, kind: str, labelled: Path, plans: Path, work: Path, test_images: Path, test: list[str],
        args, extra: list) -> dict:
    folder = work / kind
    result_file = folder / "score.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    model, log = folder / "model", folder / "log.txt"
    resume = ["--resume"] if (model / "fold_all" / "checkpoint.pt").is_file() else []
    seconds = run([BIN / "medseg", "train", labelled, "-c", DATASETS[name]["configuration"], "-f", "all", "-o",
                   model, "-p", plans, "--budget", args.budget, "--threads", args.threads, "--no-validation",
                   "--seed", args.seed, *resume, *extra], log, args.threads)
    history = json.loads((model / "fold_all" / "training_log.json").read_text())["history"]
    prediction = folder / "prediction"
    run([BIN / "medseg", "predict", "-m", model, "-i", test_images, "-o", prediction, "--no-tta"], log, args.threads)
    entry = {**score(name, prediction, test), "steps": history[-1]["iteration"],
             "train_seconds": history[-1]["elapsed"], "wall_seconds": round(seconds, 1)}
    result_file.write_text(json.dumps(entry, indent=1))
    return entry


def run_dataset(name: str, args) -> dict:
    work = Path(args.work) / name
    work.mkdir(parents=True, exist_ok=True)
    ids = case_ids(name)
    train, test = DATASETS[name]["split"](ids)
    configuration = DATASETS[name]["configuration"]
    block = subset(name, train, work / "train_block")
    test_images = image_folder(name, test, work / "test_images")
    plans = work / "plans.json"
    if not plans.is_file():
        run([BIN / "medseg", "plan", block, "--budget", args.budget, "-o", plans], work / "plan_log.txt", args.threads)
    pretrained = work / "pretrained"
    if "pretrained" in args.arms and not (pretrained / "fold_all" / "weights.safetensors").is_file():
        resume = ["--resume"] if (pretrained / "fold_all" / "checkpoint.pt").is_file() else []
        run([BIN / "medseg", "pretrain", block, "-c", configuration, "-p", plans, "-o", pretrained, "--budget",
             args.pretrain_budget, "--threads", args.threads, "--seed", args.seed, *resume],
            work / "pretrain_log.txt", args.threads)
    entry = {"train_block": len(train), "held_out": len(test), "configuration": configuration, "draws": {}}
    if "pretrained" in args.arms:
        card = json.loads((pretrained / "model.json").read_text())["card"]
        entry["pretraining"] = {"images": card["training_cases"], "steps": card["steps"],
                                "train_seconds": card["train_seconds"], **card["figures"]}
    for draw in range(args.draws):
        labelled_ids = labelled_draw(train, args.labelled_share, draw)
        rest = sorted(set(train) - set(labelled_ids))
        labelled = subset(name, labelled_ids, work / f"labelled_{draw}")
        draw_plans = moved_plan(plans, configuration, labelled, work / f"plans_{draw}.json")
        arms = {"labelled": labelled_ids}
        folder = work / f"draw_{draw}"
        arms["random"] = arm(name, "random", labelled, draw_plans, folder, test_images, test, args, [])
        if "pretrained" in args.arms:
            arms["pretrained"] = arm(name, "pretrained", labelled, draw_plans, folder, test_images, test, args,
                                     ["--init", pretrained])
        if name in args.semi and "semi" in args.arms:
            unlabelled = image_folder(name, rest, work / f"unlabelled_{draw}")
            arms["semi"] = arm(name, "semi", labelled, draw_plans, folder, test_images, test, args,
                               ["--unlabelled", unlabelled, "--semi", args.semi_method])
        entry["draws"][str(draw)] = arms
        write_partial(name, entry, args)
    return entry


def summary(entry: dict) -> dict:
    out = {}
    for kind in ("random", "pretrained", "semi"):
        values = [d[kind]["dice"] for d in entry["draws"].values() if kind in d]
        if values:
            out[kind] = {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4),
                         "draws": [round(v, 4) for v in values]}
    for kind in ("pretrained", "semi"):
        pairs = [(d[kind]["dice"], d["random"]["dice"]) for d in entry["draws"].values() if kind in d]
        if pairs:
            out[f"{kind}_minus_random"] = {"mean": round(float(np.mean([a - b for a, b in pairs])), 4),
                                           "wins": sum(a > b for a, b in pairs), "draws": len(pairs)}
    return out


def write_partial(name: str, entry: dict, args) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    key = name + args.entry_suffix
    results.setdefault("results", {})[key] = {**entry, "summary": summary(entry)}
    results.setdefault("setup", {})[key] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "budget": args.budget,
        "pretrain_budget": args.pretrain_budget if "pretrained" in args.arms else None,
        "labelled_share": args.labelled_share, "threads": args.threads,
        "semi_method": args.semi_method if name in args.semi and "semi" in args.arms else None,
        "machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "load_at_write": round(os.getloadavg()[0], 2),
        "command": " ".join(sys.argv)}
    write_results(results, RESULTS)


def markdown(results: dict) -> str:
    """The BENCHMARKS.md table: per dataset, the mean (std) held-out Dice of each arm over the draws, the paired
    difference to the labelled-only model and the steps each arm took."""
    rows = ["| dataset (labelled / training block, held out) | labelled only | pretrained init | semi-supervised "
            "| pretrained - labelled only (wins) | semi - labelled only (wins) | steps: only / init / semi |",
            "|---|---|---|---|---|---|---|"]
    for name, entry in results.get("results", {}).items():
        table = entry["summary"]
        draws = list(entry["draws"].values())
        cells = [f"{table[k]['mean']:.3f} ({table[k]['std']:.3f})" if k in table else "-"
                 for k in ("random", "pretrained", "semi")]
        deltas = [f"{table[k]['mean']:+.3f} ({table[k]['wins']}/{table[k]['draws']})" if k in table else "-"
                  for k in ("pretrained_minus_random", "semi_minus_random")]
        steps = [str(round(float(np.mean([d[k]["steps"] for d in draws if k in d])))) if any(k in d for d in draws)
                 else "-" for k in ("random", "pretrained", "semi")]
        rows.append(f"| {name} ({len(draws[0]['labelled'])} / {entry['train_block']}, {entry['held_out']}) | "
                    + " | ".join(cells + deltas) + f" | {' / '.join(steps)} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["isbi2012_em", "cxr_lungs"])
    parser.add_argument("--semi", nargs="*", default=["isbi2012_em"], help="datasets that also get the semi arm")
    parser.add_argument("--semi-method", default="mean-teacher")
    parser.add_argument("--budget", default="4m", help="every labelled run's budget (and the plan's)")
    parser.add_argument("--pretrain-budget", default="12m")
    parser.add_argument("--labelled-share", type=float, default=0.1)
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arms", nargs="+", default=["random", "pretrained", "semi"],
                        choices=["random", "pretrained", "semi"], help="random always runs (the reference)")
    parser.add_argument("--entry-suffix", default="", help="results key = dataset + this (e.g. _12m)")
    parser.add_argument("--work", default="/tmp/medseg_label_efficiency")
    parser.add_argument("--table", action="store_true", help="print the markdown table of the results and stop")
    args = parser.parse_args()
    if args.table:
        print(markdown(json.loads(RESULTS.read_text())))
        return
    parse_budget(args.budget)
    for name in args.datasets:
        print(name, json.dumps(summary(run_dataset(name, args)), indent=1), flush=True)


if __name__ == "__main__":
    main()
