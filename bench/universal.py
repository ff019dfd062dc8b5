"""Benchmark: one universal model (``medseg train-universal``) against one ``medseg train`` model per dataset.

Every shared dataset is split by ``medseg.benchmark.split.make_split`` (the last 25 % of case ids held out).
``per-dataset`` trains ``train_fold(..., "all")`` on each training block at ``--budget`` seconds (the
configuration the benchmark grid picks: 3d_fullres for 3D data, else 2d); ``universal`` trains one model over all
training blocks at the sum of those budgets; each side predicts the held-out blocks (the universal model asked
for every class by its vocabulary name) and scores them with ``medseg.evaluation.evaluate`` (Dice per class,
mean over cases; DRIVE inside its field of view). ``speed`` times ``UniversalModel.segment`` on one 2D image with
three prompts (median of 10, after one warm-up call). The two training sides can run side by side (one torch
thread each); each is resumable (a finished dataset is skipped, a stopped training resumes).

    python bench/universal.py per-dataset --budget 300 --work /tmp/universal_bench &
    python bench/universal.py universal --budget 300 --work /tmp/universal_bench
    python bench/universal.py speed --model /tmp/universal_bench/universal/model
    python bench/universal.py merge --work /tmp/universal_bench

Writes ``bench/results/universal.json``: ``{"results": {"<dataset>": {"<class>": {"universal": float,
"per_dataset": float}}}, "speed": {...}, "setup": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "universal.json"
DATASETS = ["isbi2012_em", "drive", "cvc_clinicdb", "brats2013_mini", "monuseg", "hippocampus", "cxr_lungs"]
ROI = {"drive": "fovTr"}


def _splits(work: Path, datasets: list[str]):
    """Each dataset's split, made once (``split.json`` marks it done: the side that starts second, or a resumed
    run, reads the same links and never rewrites them under the other side's feet)."""
    from medseg.benchmark.split import BenchmarkSplit, make_split

    splits = {}
    for d in datasets:
        folder, marker = work / "splits" / d, work / "splits" / d / "split.json"
        if marker.is_file():
            record = json.loads(marker.read_text())
            record.update({k: Path(v) for k, v in record.items() if k in ("train", "test_images", "test_labels")})
            record["test_extras"] = {k: Path(v) for k, v in record["test_extras"].items()}
            splits[d] = BenchmarkSplit(**record)
            continue
        split = make_split(DATA / d, folder)
        marker.write_text(json.dumps({**split.__dict__, "train": str(split.train),
                                      "test_images": str(split.test_images), "test_labels": str(split.test_labels),
                                      "test_extras": {k: str(v) for k, v in split.test_extras.items()}}))
        splits[d] = split
    return splits


def _per_class(rows: list[dict], names: dict[str, str]) -> dict[str, float]:
    """Mean Dice over cases per foreground class (a case where the class is absent from both maps is left out,
    as ``evaluate`` marks it NaN)."""
    values: dict[str, list[float]] = {}
    for row in rows:
        key = str(row["class"])
        if key in ("0", "background"):
            continue
        values.setdefault(names.get(key, key), []).append(float(row["dice"]))
    return {k: float(np.mean([x for x in v if math.isfinite(x)])) if any(math.isfinite(x) for x in v) else math.nan
            for k, v in values.items()}


def _score(split, predictions: Path, folder: Path, dataset: str) -> dict[str, float]:
    from medseg.data import open_dataset
    from medseg.evaluation import evaluate

    roi = split.test_extras.get(ROI.get(dataset, ""))
    scores = evaluate(predictions, split.test_labels, folder / "evaluation", roi_dir=roi,
                      dataset_json=split.train / "dataset.json", plots=False, progress=False)
    labels = open_dataset(split.train).spec.foreground_labels
    return _per_class(scores.rows, {str(v): k for k, v in labels.items()})


def per_dataset(args) -> None:
    import torch

    from medseg.benchmark.grid import _configuration
    from medseg.config import Plan, read_json, write_json_atomic
    from medseg.inference import Predictor
    from medseg.inference.run import collect_cases, predict_cases
    from medseg.planning.service import make_plan
    from medseg.training.service import train_fold

    torch.set_num_threads(args.threads)
    for dataset, split in _splits(args.work, args.datasets).items():
        folder = args.work / "per_dataset" / dataset
        if (folder / "result.json").is_file():
            continue
        plans = folder / "plans.json"
        if not plans.is_file():
            write_json_atomic(make_plan(split.train, budget=args.budget, progress=False).to_dict(), plans)
        configuration = _configuration(Plan.from_dict(read_json(plans)), None, plans)
        model = folder / "model"
        started = time.perf_counter()
        trained = train_fold(split.train, configuration, "all", model_dir=model, plans=plans,
                             budget_seconds=args.budget, resume=(model / "fold_all").is_dir(),
                             train_config={"threads": args.threads}, validate=False, progress=False)
        train_wall = time.perf_counter() - started
        started = time.perf_counter()
        cases = collect_cases(split.test_images)
        predict_cases(Predictor.from_folder(model), cases, folder / "predictions", overwrite=True, progress=False)
        result = {"dataset": dataset, "configuration": configuration, "steps": trained.state.iteration,
                  "train_seconds": round(trained.state.elapsed, 1), "train_wall_seconds": round(train_wall, 1),
                  "predict_seconds": round(time.perf_counter() - started, 1),
                  "dice": _score(split, folder / "predictions", folder, dataset)}
        write_json_atomic(result, folder / "result.json")
        print(json.dumps(result), flush=True)


def universal(args) -> None:
    import torch

    from medseg.config import write_json_atomic
    from medseg.data import open_dataset
    from medseg.data.layout import read_channels
    from medseg.inference.run import collect_cases
    from medseg.io import write_image
    from medseg.universal.model import UniversalModel
    from medseg.universal.training import train_universal

    torch.set_num_threads(args.threads)
    splits = _splits(args.work, args.datasets)
    model = args.work / "universal" / "model"
    if not (model / "fold_all" / "weights.safetensors").is_file():
        train_universal([s.train for s in splits.values()], model, budget_seconds=args.budget * len(splits),
                        resume=(model / "fold_all").is_dir(), train_config={"threads": args.threads},
                        progress=False)
    loaded = UniversalModel.from_folder(model)
    for dataset, split in splits.items():
        folder = args.work / "universal" / dataset
        if (folder / "result.json").is_file():
            continue
        data = open_dataset(split.train)
        name = data.spec.name or data.root.name
        prompts = {value: next(e.name for e in loaded.vocabulary.entries
                               if any(o.dataset == name and o.label_values == [value] for o in e.origins))
                   for value in sorted(data.spec.foreground_labels.values())}
        started = time.perf_counter()
        for case in collect_cases(split.test_images):
            image = read_channels(case.files)
            masks = loaded.segment(image, list(prompts.values()))
            labels = np.zeros(image.spatial_shape, np.uint8)
            for value, answer in zip(prompts, masks):
                labels[answer.mask.array[0] > 0] = value
            write_image(image.with_array(labels[None]), folder / "predictions" / f"{case.case_id}{case.suffix}")
        result = {"dataset": dataset, "prompts": {str(k): v for k, v in prompts.items()},
                  "predict_seconds": round(time.perf_counter() - started, 1),
                  "dice": _score(split, folder / "predictions", folder, dataset)}
        write_json_atomic(result, folder / "result.json")
        print(json.dumps(result), flush=True)


def _timed(loaded, image, prompts: list[str]) -> dict:
    loaded.segment(image, prompts)  # warm-up: the predictor's chunk size is tuned on the first windows
    times = []
    for _ in range(10):
        started = time.perf_counter()
        answers = loaded.segment(image, prompts)
        times.append(time.perf_counter() - started)
    return {"shape": list(image.spatial_shape), "prompts": prompts,
            "structures": [a.match.entry.name for a in answers],
            "median_seconds": round(statistics.median(times), 3), "max_seconds": round(max(times), 3)}


def speed(args) -> None:
    """``UniversalModel.segment`` on one 2D image with three prompts, without mirroring: a 512 x 512 chest X-ray
    (three phrasings of one structure: one prediction) and a 240 x 240 axial BraTS slice (FLAIR + T1c; three
    structures of one dataset: one prediction); the matching of the prompts is inside the timing."""
    import torch

    from medseg.io import Image, read_image
    from medseg.universal.model import UniversalModel

    torch.set_num_threads(args.threads)
    loaded = UniversalModel.from_folder(args.model, tta=False)
    xray = read_image(sorted((DATA / "cxr_lungs" / "imagesTr").iterdir())[-1])
    from medseg.data.layout import read_channels

    volume = read_channels(sorted((DATA / "brats2013_mini" / "imagesTr").glob("brats_pat0003_*")))
    z = volume.spatial_shape[0] // 2
    brain = Image.from_array(volume.array[:, z], volume.spacing[1:], channel_axis=True)
    figure = {"threads": args.threads, "tta": False, "date": date.today().isoformat(),
              "machine": f"{platform.machine()} {os.cpu_count()} cores",
              "cxr_512": _timed(loaded, xray, ["lungs", "left and right lung fields", "poumons"]),
              "brats_slice_240": _timed(loaded, brain, ["oedema", "enhancing tumour", "necrotic core"])}
    print(json.dumps(figure))
    _merge({"speed": figure})


def _merge(update: dict) -> None:
    current = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    current.update(update)
    RESULTS.write_text(json.dumps(current, indent=1) + "\n")


def merge(args) -> None:
    results, rows = {}, []
    for dataset in args.datasets:
        sides = {}
        for side in ("universal", "per_dataset"):
            path = args.work / side / dataset / "result.json"
            sides[side] = json.loads(path.read_text()) if path.is_file() else None
        if not all(sides.values()):
            continue
        results[dataset] = {cls: {"universal": round(sides["universal"]["dice"][cls], 4),
                                  "per_dataset": round(value, 4)}
                            for cls, value in sides["per_dataset"]["dice"].items()}
        for cls, pair in results[dataset].items():
            rows.append((dataset, cls, pair["universal"], pair["per_dataset"]))
    differences = [u - p for _, _, u, p in rows if math.isfinite(u) and math.isfinite(p)]
    setup = {"budget_per_dataset_seconds": args.budget, "universal_budget_seconds": args.budget * len(results),
             "split": "medseg.benchmark.split.make_split: last 25 % of sorted case ids held out",
             "threads": 1, "machine": f"{platform.machine()} {os.cpu_count()} cores", "date": date.today().isoformat(),
             "mean_dice_universal": round(float(np.mean([r[2] for r in rows])), 4) if rows else None,
             "mean_dice_per_dataset": round(float(np.mean([r[3] for r in rows])), 4) if rows else None,
             "mean_difference": round(float(np.mean(differences)), 4) if differences else None}
    _merge({"results": results, "setup": setup})
    print(f"{'dataset':16} {'class':12} {'universal':>9} {'per-dataset':>11}")
    for dataset, cls, u, p in rows:
        print(f"{dataset:16} {cls:12} {u:9.3f} {p:11.3f}")
    print(json.dumps(setup))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("side", choices=["per-dataset", "universal", "speed", "merge"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/universal_bench"))
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per dataset")
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", type=Path)
    args = parser.parse_args()
    {"per-dataset": per_dataset, "universal": universal, "speed": speed, "merge": merge}[args.side](args)


if __name__ == "__main__":
    main()
