"""Beyond one mask per class (issue 24): the classical baselines on every shared dataset, beside the 20-minute
pipeline model.

``classical``: per dataset, the training block and the held-out block of ``bench/pipeline.py`` (isbi2012_em: cases
0-17 / 18-23; cvc_clinicdb: the first 80 % of the sorted ids / the rest; brats2013_mini: 3 / 1; every other shared
dataset: the first 80 % / the rest, as blocks), at most ``--test-cases`` held-out cases scored (evenly spaced over
the block). Each method of ``medseg classical`` is fitted on ``--tune-cases`` training cases (its small parameter
search and the map from its intensity ranks to the labels) and segments the held-out images; ``medseg evaluate``
scores them (Dice, HD95; brats2013_mini on its regions). The 20-minute pipeline model's figures on the same
held-out cases come from ``bench/results/pipeline.json`` where that bench ran the dataset (all its held-out cases:
on cvc_clinicdb that is more cases than scored here).

Writes the ``classical`` key of ``bench/results/beyond.json`` (other keys are kept) after every method, and skips
what is already there, so an interrupted run resumes.

    nice -n 19 python bench/beyond.py classical
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import DATASETS as PIPELINE_DATASETS, _split_blocks  # noqa: E402  (bench/pipeline.py's splits)
from trust import write_results  # noqa: E402  (bench/trust.py's atomic JSON write)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "beyond.json"
PIPELINE = ROOT / "bench" / "results" / "pipeline.json"
SHARED = ("isbi2012_em", "drive", "cvc_clinicdb", "monuseg", "hippocampus", "cxr_lungs", "brats2013_mini")
REGIONS = {"brats2013_mini"}


def split(name: str, ids: list[str]) -> tuple[list[str], list[str]]:
    return PIPELINE_DATASETS[name]["split"](ids) if name in PIPELINE_DATASETS else _split_blocks(ids)


def evenly(ids: list[str], count: int | None) -> list[str]:
    if not count or count >= len(ids):
        return ids
    return [ids[int(i)] for i in np.linspace(0, len(ids) - 1, count).round()]


def pipeline_figures(name: str) -> dict | None:
    if not PIPELINE.is_file():
        return None
    entry = json.loads(PIPELINE.read_text())["results"].get(name, {}).get("medseg")
    if not entry:
        return None
    return {"held_out_cases": len(entry["test_cases"]), "budget": entry["budget"],
            "metrics": {cls: {m: entry["metrics"][cls][m]["mean"] for m in ("dice", "hd95")}
                        for cls in entry["metrics"]}}


def run_classical(args) -> None:
    from medseg.classical import METHODS, segment_with_classical
    from medseg.data import open_dataset
    from medseg.data.subset import subset_dataset
    from medseg.evaluation.evaluate import evaluate

    results = json.loads(args.output.read_text()) if args.output.is_file() else {}
    section = results.setdefault("classical", {})
    methods = args.methods.split(",") if args.methods else list(METHODS)
    for name in args.datasets:
        dataset = open_dataset(DATA / name)
        ids = sorted(c.case_id for c in dataset.cases)
        train, held_out = split(name, ids)
        test = evenly(held_out, args.test_cases)
        work = args.work / name
        train_view = work / "train" if (work / "train").is_dir() else subset_dataset(dataset, train, work / "train")
        test_view = work / "test" if (work / "test").is_dir() else subset_dataset(dataset, test, work / "test")
        entry = section.setdefault(name, {"train_cases": len(train), "held_out_cases": test,
                                          "pipeline_model": pipeline_figures(name), "methods": {}})
        for method in methods:
            if method in entry["methods"]:
                continue
            out = work / method
            shutil.rmtree(out, ignore_errors=True)
            start = time.time()
            model, _ = segment_with_classical(train_view, method, out / "pred", images=test_view / "imagesTr",
                                              tune_cases=args.tune_cases)
            seconds = time.time() - start
            evaluate(out / "pred", test_view / "labelsTr", out / "evaluation", plots=False, workers=1,
                     regions="dataset" if name in REGIONS else None, dataset_json=test_view / "dataset.json")
            summary = json.loads((out / "evaluation" / "summary.json").read_text())
            entry["methods"][method] = {
                "params": model.params, "rank_labels": model.rank_labels, "train_dice": model.train_dice,
                "tune_cases": len(model.train_cases), "seconds": round(seconds, 1),
                "metrics": {cls: {m: summary["metrics"][cls][m]["mean"] for m in ("dice", "hd95")}
                            for cls in summary["metrics"]},
                "load_average": os.getloadavg(), "date": datetime.now(timezone.utc).isoformat()}
            dice = {cls: round(v["dice"], 3) for cls, v in entry["methods"][method]["metrics"].items()}
            print(f"{name} {method}: {dice} ({seconds:.0f} s; {model.params})", flush=True)
            results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count()}
            results.setdefault("commands", {})["classical"] = " ".join(["python", "bench/beyond.py", *sys.argv[1:]])
            write_results(results, args.output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["classical"])
    parser.add_argument("--datasets", nargs="*", default=list(SHARED))
    parser.add_argument("--methods", default="", help="comma-separated (default: every method)")
    parser.add_argument("--tune-cases", type=int, default=6)
    parser.add_argument("--test-cases", type=int, default=30)
    parser.add_argument("--work", type=Path, default=Path("/tmp/beyond_bench"))
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.part == "classical":
        run_classical(args)


if __name__ == "__main__":
    main()
