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

``2.5d``: brats2013_mini in 4 folds (each case held out once, the other 3 train); per fold one plan
(``make_plan`` at ``--budget``) and, from it, ``2d``, ``2.5d`` and ``3d_fullres`` each trained (fold ``all``) for
the same wall-clock budget with ``--threads`` torch threads, then predicting the held-out case (mirroring TTA,
step 0.5), scored on the BraTS regions by ``medseg evaluate``. ``--folds`` lets two processes share the folds
(each at one thread on a 2-core machine: every configuration meets the same conditions).

``synth``: brats2013_mini, training cases 0-2, held-out case 3 (``bench/pipeline.py``'s split). A 2d model trained
only on ``--synth-cases`` images that ``medseg synth`` draws from the training cases' label maps (generation
labels: the tumour labels plus the brain mask as label 5, written back as background: ``--segment 5=0``; the
outside blanked, ``--blank 0``, as the real volumes are skull-stripped), against a 2d model trained on the real
FLAIR of the same cases; both at ``--budget`` and tested on the held-out case's real FLAIR and real T1c separately
(single-channel views), scored on the BraTS regions.

``instances``: monuseg (the expert's ``instancesTr/``; the blocks of ``bench/pipeline.py``, first 80 % / rest) and
the cells of isbi2012_em (the regions the membranes enclose: a derived dataset in the work folder whose label is
cell vs membrane and whose objects are the 4-connected components of the cells; cases 0-17 / 18-23). Three ways
to instances, scored by ``medseg evaluate --instances`` (PQ, F1 at IoU 0.5, AJI, Dice) on the held-out cases:
the ``instance`` configuration (distance head + marker watershed) and the ``2d`` configuration's connected
components, both from one plan and each trained ``--budget`` seconds; and classical: ``medseg classical --method
watershed`` for the foreground, split by a marker watershed of its distance transform (markers: the maxima at
least ``r`` pixels apart, ``r`` chosen on the training cases by AJI).

``raters``: cvc_clinicdb (the blocks of ``bench/pipeline.py``: first 80 % / rest, ``--test-cases`` held-out cases
evenly spaced) with ``--raters`` simulated raters per case (``medseg raters simulate --bias 4 --noise 2
--smoothness 8``, the documented rater model of ``medseg.data.raters``: boundary offsets from -4 to +4 pixels and
a smooth 2-pixel jitter, on polyps of about 30-80 pixels across; the shared data has no real multi-rater set) and
their majority vote as the label. From one plan, the ``probabilistic`` configuration (a probabilistic U-Net
trained on one random rater per patch) and the deterministic ``2d`` configuration (trained on the consensus),
each ``--budget`` seconds. Per held-out case and N = 1, 4, 16: the generalised energy distance of N samples to the
raters, best-of-N Dice, and the calibration of the samples' vote share against the raters' (the deterministic
model's N samples are its one prediction N times); no test-time mirroring for either.

Writes the ``classical``, ``2.5d``, ``synth``, ``instances`` and ``raters`` keys of ``bench/results/beyond.json``
(other keys are kept; a lock file lets two processes write) after every method or run, and skips what is already
there, so an interrupted run resumes.

    nice -n 19 python bench/beyond.py classical
    python bench/beyond.py 2.5d --budget 480 --threads 1 --folds 0 1 & python bench/beyond.py 2.5d --budget 480 \
        --threads 1 --folds 2 3
    python bench/beyond.py synth --models synth & python bench/beyond.py synth --models flair
    python bench/beyond.py instances --datasets monuseg & python bench/beyond.py instances --datasets isbi2012_em
    python bench/beyond.py raters --models probabilistic & python bench/beyond.py raters --models deterministic
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
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
        entry = section.setdefault(name, {"train_cases": len(train), "held_out_cases": test, "methods": {}})
        entry["pipeline_model"] = pipeline_figures(name)
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
            _store_classical(args, section)
        _store_classical(args, section)  # the pipeline model's figures, even when every method was there


def _store_classical(args, section: dict) -> None:
    with locked_results(args.output) as stored:
        stored["classical"] = section
        stored["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count()}
        stored.setdefault("commands", {})["classical"] = " ".join(["python", "bench/beyond.py", *sys.argv[1:]])


@contextlib.contextmanager
def locked_results(output: Path):
    """``beyond.json``'s content, written back on leaving, with no other process reading or writing meanwhile."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(output.read_text()) if output.is_file() else {}
        yield results
        write_results(results, output)


SLICE_CONFIGURATIONS = ("2d", "2.5d", "3d_fullres")


def run_slices(args) -> None:
    import torch

    from medseg.config import Plan, read_json, write_json_atomic
    from medseg.data import open_dataset
    from medseg.data.subset import subset_dataset
    from medseg.evaluation.evaluate import evaluate
    from medseg.inference import Predictor
    from medseg.io import write_image
    from medseg.planning.service import make_plan
    from medseg.training.service import train_fold

    torch.set_num_threads(args.threads)
    name = "brats2013_mini"
    dataset = open_dataset(DATA / name)
    ids = sorted(c.case_id for c in dataset.cases)
    for fold in args.folds:
        test = [ids[fold]]
        train = [i for i in ids if i not in test]
        work = args.work / f"fold_{fold}"
        train_view = subset_dataset(dataset, train, work / "train")
        test_view = subset_dataset(dataset, test, work / "test")
        plans = work / "plans.json"
        if not plans.is_file():
            write_json_atomic(make_plan(train_view, budget=args.budget, progress=False).to_dict(), plans)
        plan = Plan.from_dict(read_json(plans), path=plans)
        for configuration in args.configurations:
            with locked_results(args.output) as results:
                done = configuration in results.get("2.5d", {}).get("folds", {}).get(str(fold), {})
            if done:
                continue
            out = work / configuration
            shutil.rmtree(out, ignore_errors=True)
            result = train_fold(train_view, configuration, "all", model_dir=out / "model", plans=plans,
                                budget_seconds=args.budget, train_config={"num_workers": args.workers},
                                progress=False)
            start = time.time()
            predictor = Predictor.from_folder(out / "model")
            test_data = open_dataset(test_view)
            for case in test_data.cases:
                write_image(predictor.predict(test_data.read_image(case)),
                            out / "pred" / f"{case.case_id}{dataset.spec.file_ending}")
            predict_seconds = time.time() - start
            evaluate(out / "pred", test_view / "labelsTr", out / "evaluation", plots=False, workers=1,
                     regions="dataset", dataset_json=test_view / "dataset.json")
            summary = json.loads((out / "evaluation" / "summary.json").read_text())
            config = plan.configurations[configuration]
            entry = {"test_case": test[0], "train_cases": train, "patch_size": config.patch_size,
                     "batch_size": config.batch_size, "in_channels": config.network["in_channels"],
                     "slice_context": config.slice_context, "features": config.network["features_per_stage"],
                     "steps": result.state.iteration, "train_seconds": round(result.state.elapsed, 1),
                     "predict_seconds": round(predict_seconds, 1),
                     "metrics": {cls: {m: summary["metrics"][cls][m]["mean"] for m in ("dice", "hd95")}
                                 for cls in summary["metrics"]},
                     "threads": args.threads, "load_average": os.getloadavg(),
                     "date": datetime.now(timezone.utc).isoformat()}
            dice = {cls: round(v["dice"], 3) for cls, v in entry["metrics"].items()}
            print(f"fold {fold} {configuration}: {dice} ({entry['steps']} steps, predict {predict_seconds:.0f} s)",
                  flush=True)
            with locked_results(args.output) as results:
                section = results.setdefault("2.5d", {"dataset": name, "budget_seconds": args.budget, "folds": {}})
                section["folds"].setdefault(str(fold), {})[configuration] = entry
                section["summary"] = slice_summary(section["folds"])
                results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count()}
                results.setdefault("commands", {})["2.5d"] = " ".join(["python", "bench/beyond.py", *sys.argv[1:]])


SYNTH_MODELS = ("synth", "flair")
BRAIN_LABEL = 5  # the generation label of the brain outside the tumour


def channel_view(source: Path, channel: int, cases: list[str], folder: Path) -> Path:
    """A one-channel dataset of ``cases``: their image file of ``channel`` as ``_0000``, their labels."""
    spec = json.loads((source / "dataset.json").read_text())
    ending = spec["file_ending"]
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for case in cases:
        (folder / "imagesTr" / f"{case}_0000{ending}").symlink_to(source / "imagesTr" / f"{case}_{channel:04d}{ending}")
        (folder / "labelsTr" / f"{case}{ending}").symlink_to(source / "labelsTr" / f"{case}{ending}")
    name = spec["channel_names"][str(channel)]
    (folder / "dataset.json").write_text(json.dumps({**spec, "channel_names": {"0": name},
                                                     "numTraining": len(cases)}, indent=1))
    return folder


def generation_maps(source: Path, cases: list[str], folder: Path) -> Path:
    """The training cases' label maps with the brain outside the tumour as label ``BRAIN_LABEL``."""
    from medseg.io import read_image, write_image

    if (folder / "dataset.json").is_file():
        return folder
    spec = json.loads((source / "dataset.json").read_text())
    ending = spec["file_ending"]
    for case in cases:
        label = read_image(source / "labelsTr" / f"{case}{ending}")
        brain = read_image(source / "brainmaskTr" / f"{case}{ending}").array[0] > 0
        array = label.array.copy()
        array[0][brain & (array[0] == 0)] = BRAIN_LABEL
        write_image(label.with_array(array), folder / "labelsTr" / f"{case}{ending}")
    (folder / "dataset.json").write_text(json.dumps(spec, indent=1))
    return folder


def run_synth(args) -> None:
    import torch

    from medseg.config import write_json_atomic
    from medseg.data import open_dataset
    from medseg.evaluation.evaluate import evaluate
    from medseg.inference import Predictor
    from medseg.io import write_image
    from medseg.planning.service import make_plan
    from medseg.synth.synthseg import synth_dataset
    from medseg.training.service import train_fold

    torch.set_num_threads(args.threads)
    name, source = "brats2013_mini", DATA / "brats2013_mini"
    ids = sorted(c.case_id for c in open_dataset(source).cases)
    train, test = split(name, ids)
    work = args.work
    for model_name in args.models:
        with locked_results(args.output) as results:
            if model_name in results.get("synth", {}).get("models", {}):
                continue
        out = work / model_name
        if model_name == "synth":
            data = work / "synth_data"
            if not data.is_dir():
                synth_dataset(generation_maps(source, train, work / "generation"), data, count=args.synth_cases,
                              seed=0, segment={BRAIN_LABEL: 0}, blank=[0])
        else:
            data = channel_view(source, 0, train, work / "train_flair")
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        tests = {"flair": channel_view(source, 0, test, out / "test_flair"),  # per model: processes run side by side
                 "t1c": channel_view(source, 1, test, out / "test_t1c")}
        write_json_atomic(make_plan(data, budget=args.budget, progress=False).to_dict(), out / "plans.json")
        result = train_fold(data, "2d", "all", model_dir=out / "model", plans=out / "plans.json",
                            budget_seconds=args.budget, train_config={"num_workers": args.workers}, progress=False)
        predictor = Predictor.from_folder(out / "model")
        scores = {}
        for test_name, view in tests.items():
            test_data = open_dataset(view)
            for case in test_data.cases:
                write_image(predictor.predict(test_data.read_image(case)),
                            out / f"pred_{test_name}" / f"{case.case_id}{test_data.spec.file_ending}")
            evaluate(out / f"pred_{test_name}", view / "labelsTr", out / f"evaluation_{test_name}", plots=False,
                     workers=1, regions="dataset", dataset_json=view / "dataset.json")
            summary = json.loads((out / f"evaluation_{test_name}" / "summary.json").read_text())
            scores[test_name] = {cls: {m: summary["metrics"][cls][m]["mean"] for m in ("dice", "hd95")}
                                 for cls in summary["metrics"]}
            dice = {cls: round(v["dice"], 3) for cls, v in scores[test_name].items()}
            print(f"{model_name} -> {test_name}: {dice}", flush=True)
        entry = {"trained_on": "synthetic images from the training label maps" if model_name == "synth"
                 else "real FLAIR", "training_cases": args.synth_cases if model_name == "synth" else len(train),
                 "steps": result.state.iteration, "train_seconds": round(result.state.elapsed, 1),
                 "tested_on": scores, "threads": args.threads, "load_average": os.getloadavg(),
                 "date": datetime.now(timezone.utc).isoformat()}
        with locked_results(args.output) as results:
            section = results.setdefault("synth", {"dataset": name, "configuration": "2d", "train_cases": train,
                                                   "held_out_cases": test, "budget_seconds": args.budget,
                                                   "models": {}})
            section["models"][model_name] = entry
            results.setdefault("commands", {})["synth"] = " ".join(["python", "bench/beyond.py", *sys.argv[1:]])


INSTANCE_DATASETS = ("monuseg", "isbi2012_em")
INSTANCE_METHODS = ("instance", "components", "classical")
MARKER_SPACINGS = (2, 4, 6, 8, 12)  # classical: minimum pixels between two markers, chosen on the training cases


def isbi_cells(folder: Path) -> Path:
    """isbi2012_em as cells: label 1 = cell (the source's background), objects = 4-connected cells."""
    from medseg.io import read_image, write_image
    from medseg.metrics import label_instances

    if (folder / "dataset.json").is_file():
        return folder
    source = DATA / "isbi2012_em"
    spec = json.loads((source / "dataset.json").read_text())
    for path in sorted((source / "labelsTr").glob("*.png")):
        label = read_image(path)
        cells = label.array[0] == 0
        write_image(label.with_array(cells[None].astype(np.uint8)), folder / "labelsTr" / path.name)
        objects = label_instances(cells, 1).astype(np.uint16)
        write_image(label.with_array(objects[None]), folder / "instancesTr" / path.name)
        image = path.name.replace(".png", "_0000.png")
        (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
        (folder / "imagesTr" / image).symlink_to(source / "imagesTr" / image)
    (folder / "dataset.json").write_text(json.dumps({**spec, "labels": {"membrane": 0, "cell": 1},
                                                     "description": "isbi2012_em cells (derived by bench/beyond.py)"}))
    return folder


def split_by_distance(foreground: np.ndarray, spacing: int) -> np.ndarray:
    """Classical instances: a marker watershed of the foreground's distance transform, markers at its maxima at
    least ``spacing`` pixels apart."""
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    distance = ndimage.distance_transform_edt(foreground)
    components, _ = ndimage.label(foreground)
    peaks = peak_local_max(distance, min_distance=spacing, labels=components, exclude_border=False)
    markers = np.zeros(foreground.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=foreground).astype(np.uint16)


def instance_scores(folder: Path, reference: Path, out: Path) -> dict:
    from medseg.evaluation.evaluate import evaluate
    from medseg.metrics.compute import INSTANCE_MAP_METRICS, MetricOptions

    evaluate(folder, reference, out, plots=False, workers=1, instances=True,
             options=MetricOptions(metrics=INSTANCE_MAP_METRICS))
    summary = json.loads((out / "summary.json").read_text())["metrics"]["instances"]
    return {m: summary[m]["mean"] for m in INSTANCE_MAP_METRICS}


def run_instances(args) -> None:
    import torch

    from medseg.classical import segment_with_classical
    from medseg.config import write_json_atomic
    from medseg.data import open_dataset
    from medseg.data.subset import link_files, subset_dataset
    from medseg.inference import Predictor
    from medseg.io import read_image, write_image
    from medseg.metrics import aggregated_jaccard, instance_overlap, label_instances
    from medseg.planning.service import make_plan
    from medseg.training.service import train_fold

    torch.set_num_threads(args.threads)
    for name in args.datasets:
        root = DATA / name if name != "isbi2012_em" else isbi_cells(args.work / "isbi_cells")
        dataset = open_dataset(root)
        ids = sorted(c.case_id for c in dataset.cases)
        train, test = split(name, ids)
        work = args.work / name
        train_view = subset_dataset(dataset, train, work / "train")
        test_view = subset_dataset(dataset, test, work / "test")
        reference = test_view / "instancesTr"
        plans = work / "plans.json"
        if not plans.is_file():
            write_json_atomic(make_plan(train_view, budget=args.budget, progress=False).to_dict(), plans)
        for method in INSTANCE_METHODS:
            with locked_results(args.output) as results:
                if method in results.get("instances", {}).get(name, {}).get("methods", {}):
                    continue
            out = work / method
            shutil.rmtree(out, ignore_errors=True)
            start, detail = time.time(), {}
            test_data = open_dataset(test_view)
            if method in ("instance", "components"):
                configuration = "instance" if method == "instance" else "2d"
                result = train_fold(train_view, configuration, "all", model_dir=out / "model", plans=plans,
                                    budget_seconds=args.budget, train_config={"num_workers": args.workers},
                                    progress=False)
                predictor = Predictor.from_folder(out / "model")
                for case in test_data.cases:
                    image = test_data.read_image(case)
                    if method == "instance":
                        objects = predictor.predict_instances(image)[1]
                    else:
                        labels = predictor.predict(image)
                        objects = labels.with_array(label_instances(labels.array[0] > 0, 1)[None].astype(np.uint16))
                    write_image(objects, out / "objects" / f"{case.case_id}{test_data.spec.file_ending}")
                detail = {"configuration": configuration, "steps": result.state.iteration,
                          "train_seconds": round(result.state.elapsed, 1)}
            else:
                train_data = open_dataset(train_view)
                tune = [train_data.case(c) for c in evenly(train, args.tune_cases)]
                link_files([f for c in tune + test_data.cases for f in c.image_files], out / "images")
                model, _ = segment_with_classical(train_view, "watershed", out / "foreground", images=out / "images",
                                                  tune_cases=args.tune_cases)
                tuned = {}
                for spacing in MARKER_SPACINGS:
                    scores = []
                    for case in tune:
                        foreground = read_image(out / "foreground" / f"{case.case_id}{dataset.spec.file_ending}")
                        expert = read_image(case.extra_files["instancesTr"]).array[0]
                        objects = split_by_distance(foreground.array[0] > 0, spacing)
                        scores.append(aggregated_jaccard(instance_overlap(objects, expert)))
                    tuned[spacing] = float(np.mean(scores))
                best = max(tuned, key=tuned.get)
                for case in test_data.cases:
                    labels = read_image(out / "foreground" / f"{case.case_id}{dataset.spec.file_ending}")
                    objects = split_by_distance(labels.array[0] > 0, best)
                    write_image(labels.with_array(objects[None]),
                                out / "objects" / f"{case.case_id}{dataset.spec.file_ending}")
                detail = {"foreground": {"method": "watershed", "params": model.params},
                          "marker_spacing": best, "training_aji_by_spacing": tuned}
            seconds = time.time() - start
            entry = {**detail, "seconds": round(seconds, 1),
                     "metrics": instance_scores(out / "objects", reference, out / "evaluation"),
                     "threads": args.threads, "load_average": os.getloadavg(),
                     "date": datetime.now(timezone.utc).isoformat()}
            print(f"{name} {method}: " + ", ".join(f"{k} {v:.3f}" for k, v in entry["metrics"].items()), flush=True)
            with locked_results(args.output) as results:
                section = results.setdefault("instances", {})
                section.setdefault(name, {"train_cases": len(train), "held_out_cases": test,
                                          "budget_seconds": args.budget, "methods": {}})["methods"][method] = entry
                results.setdefault("commands", {})["instances"] = " ".join(["python", "bench/beyond.py",
                                                                            *sys.argv[1:]])


RATER_MODELS = {"probabilistic": "probabilistic", "deterministic": "2d"}  # model -> plan configuration
SAMPLE_COUNTS = (1, 4, 16)
RATER_MODEL_OPTIONS = {"bias": 4.0, "noise": 2.0, "smoothness": 8.0}  # pixels (cvc_clinicdb's spacing is 1)


def rater_dataset(work: Path, raters: int) -> Path:
    """cvc_clinicdb with simulated raters (made once; the two model processes wait on a lock for it)."""
    from medseg.data.raters import RaterModel, simulate_rater_dataset

    folder = work / f"cvc_clinicdb_{raters}raters"
    work.mkdir(parents=True, exist_ok=True)
    with open(work / "raters.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        model = RaterModel(**RATER_MODEL_OPTIONS)
        if not folder.is_dir():
            simulate_rater_dataset(DATA / "cvc_clinicdb", folder, num_raters=raters, model=model, seed=0,
                                   progress=False)
    return folder


def run_raters(args) -> None:
    import torch

    from medseg.config import write_json_atomic
    from medseg.data import open_dataset
    from medseg.data.subset import subset_dataset
    from medseg.data.validate import RATERS, validated_case
    from medseg.data.validate import read_case
    from medseg.inference import Predictor
    from medseg.metrics import confusion, dice
    from medseg.metrics.raters import rater_metrics
    from medseg.planning.service import make_plan
    from medseg.training.service import train_fold

    torch.set_num_threads(args.threads)
    name = "cvc_clinicdb"
    dataset = open_dataset(rater_dataset(args.work, args.raters))
    ids = sorted(c.case_id for c in dataset.cases)
    train, test = split(name, ids)
    test = evenly(test, args.test_cases)
    work = args.work
    train_view, plans = work / "train", work / "plans.json"
    with open(work / "plans.lock", "w") as lock:  # the view and plan once: the other process reads them
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not plans.is_file():
            subset_dataset(dataset, train, train_view)
            write_json_atomic(make_plan(train_view, budget=args.budget, progress=False).to_dict(), plans)
    labels = dataset.spec.predicted_label_values[1:]
    for model_name in args.models:
        with locked_results(args.output) as results:
            if model_name in results.get("raters", {}).get("models", {}):
                continue
        out = work / model_name
        shutil.rmtree(out, ignore_errors=True)
        configuration = RATER_MODELS[model_name]
        result = train_fold(train_view, configuration, "all", model_dir=out / "model", plans=plans,
                            budget_seconds=args.budget, train_config={"num_workers": args.workers}, progress=False)
        predictor = Predictor.from_folder(out / "model", tta=False)
        start = time.time()
        per_count: dict[int, list[dict]] = {n: [] for n in SAMPLE_COUNTS}
        consensus_dice = []
        for case_id in test:
            case = dataset.case(case_id)
            image, consensus, _ = validated_case(dataset, case)
            raters = read_case(dataset, case).extras[RATERS].array
            mean = predictor.predict(image).array[0]
            consensus_dice.append(dice(confusion(mean == labels[0], consensus.array[0] == labels[0])))
            if model_name == "probabilistic":
                samples = np.stack([s.array[0] for s in predictor.predict_samples(image, max(SAMPLE_COUNTS))])
            else:
                samples = np.repeat(mean[None], max(SAMPLE_COUNTS), axis=0)
            for n in SAMPLE_COUNTS:
                per_count[n].append(rater_metrics(samples[:n], raters, labels))
        figures = {str(n): {key: float(np.mean([m[key] for m in entries])) for key in entries[0]}
                   for n, entries in per_count.items()}
        for n, values in figures.items():
            print(f"{model_name} N={n}: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()), flush=True)
        entry = {"configuration": configuration, "steps": result.state.iteration,
                 "train_seconds": round(result.state.elapsed, 1), "predict_seconds": round(time.time() - start, 1),
                 "consensus_dice": float(np.mean(consensus_dice)), "samples": figures, "threads": args.threads,
                 "load_average": os.getloadavg(), "date": datetime.now(timezone.utc).isoformat()}
        with locked_results(args.output) as results:
            section = results.setdefault("raters", {
                "dataset": name, "raters": args.raters,
                "rater_model": {**RATER_MODEL_OPTIONS, "note": "simulated by medseg raters simulate: the shared "
                                "data has no multi-rater set"},
                "train_cases": len(train), "held_out_cases": test, "budget_seconds": args.budget, "models": {}})
            section["models"][model_name] = entry
            results.setdefault("commands", {})["raters"] = " ".join(["python", "bench/beyond.py", *sys.argv[1:]])


def slice_summary(folds: dict) -> dict:
    """Per configuration: the mean over the folds that ran it of each region's Dice and HD95, and how many."""
    summary = {}
    for configuration in SLICE_CONFIGURATIONS:
        entries = [f[configuration] for f in folds.values() if configuration in f]
        if not entries:
            continue
        regions = entries[0]["metrics"]
        summary[configuration] = {"folds": len(entries), "metrics": {
            cls: {m: float(np.nanmean([e["metrics"][cls][m] for e in entries])) for m in ("dice", "hd95")}
            for cls in regions}}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["classical", "2.5d", "synth", "instances", "raters"])
    parser.add_argument("--datasets", nargs="*", default=list(SHARED))
    parser.add_argument("--methods", default="", help="comma-separated (default: every method)")
    parser.add_argument("--tune-cases", type=int, default=6)
    parser.add_argument("--test-cases", type=int, default=30)
    parser.add_argument("--work", type=Path, default=Path("/tmp/beyond_bench"))
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--budget", type=float, default=480.0, help="2.5d: training seconds per configuration")
    parser.add_argument("--threads", type=int, default=1, help="2.5d: torch threads of this process")
    parser.add_argument("--workers", type=int, default=1, help="2.5d: loader workers")
    parser.add_argument("--folds", type=int, nargs="*", default=[0, 1, 2, 3], help="2.5d: held-out case indices")
    parser.add_argument("--configurations", nargs="*", default=list(SLICE_CONFIGURATIONS))
    parser.add_argument("--models", nargs="*", default=None, help="synth / raters: which models to train")
    parser.add_argument("--raters", type=int, default=4, help="raters: simulated raters per case")
    parser.add_argument("--synth-cases", type=int, default=30, help="synth: synthetic training cases")
    args = parser.parse_args()
    if args.part == "classical":
        run_classical(args)
    elif args.part == "instances":
        args.datasets = [d for d in args.datasets if d in INSTANCE_DATASETS] or list(INSTANCE_DATASETS)
        args.work = args.work if args.work != Path("/tmp/beyond_bench") else Path("/tmp/beyond_instances")
        run_instances(args)
    elif args.part == "raters":
        args.models = args.models or list(RATER_MODELS)
        args.work = args.work if args.work != Path("/tmp/beyond_bench") else Path("/tmp/beyond_raters")
        run_raters(args)
    elif args.part == "2.5d":
        args.work = args.work if args.work != Path("/tmp/beyond_bench") else Path("/tmp/beyond_slices")
        run_slices(args)
    else:
        args.models = args.models or list(SYNTH_MODELS)
        args.work = args.work if args.work != Path("/tmp/beyond_bench") else Path("/tmp/beyond_synth")
        run_synth(args)


if __name__ == "__main__":
    main()
