"""The built-in main job, end to end on data that ships with medseg (no download):

synthetic dataset -> check -> fingerprint -> plan (fitted to this machine and a time budget) -> train ->
predict the held-out cases -> evaluate -> report (metrics JSON, overlay PNGs).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from medseg.errors import MedsegError

MARKER = ".medseg-demo"
CONFIGURATION = "2d"  # slice-wise: the fastest configuration to train on a CPU


@dataclass
class DemoResult:
    folder: Path
    dataset: Path
    check_summary: str
    dice: dict[str, float]  # held-out Dice per class
    steps: int
    seconds: dict[str, float]  # per stage
    report: Path


def run_demo(folder: str | Path, *, num_cases: int = 12, num_test: int = 4, budget_seconds: float = 90.0,
             seed: int = 0, progress: bool | None = None, log=lambda message: None) -> DemoResult:
    """Run the whole pipeline in ``folder`` (created; a previous demo there is replaced, anything else refused)."""
    from medseg.data.check import check_dataset
    from medseg.evaluation import evaluate
    from medseg.planning import compute_fingerprint, write_fingerprint
    from medseg.planning.service import make_plan
    from medseg.synth.shapes import write_shapes_dataset
    from medseg.training.service import train_fold

    folder = Path(folder)
    if folder.exists():
        if not (folder / MARKER).is_file():
            raise MedsegError("folder exists and was not made by medseg demo", path=folder,
                              fix="choose a new folder with --out")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("made by medseg demo; safe to delete\n")
    seconds: dict[str, float] = {}

    def stage(name: str, started: float) -> None:
        seconds[name] = round(time.perf_counter() - started, 1)
        log(f"{name:12s} {seconds[name]:6.1f} s")

    started = time.perf_counter()
    dataset = write_shapes_dataset(folder / "dataset", num_cases=num_cases, num_test=num_test, seed=seed)
    report = check_dataset(dataset, progress=progress)
    if not report.ok:
        raise MedsegError(f"the demo dataset failed its check: {report.problems[0]}", path=dataset)
    write_fingerprint(compute_fingerprint(dataset, progress=progress), folder / "fingerprint.json")
    stage("data", started)

    started = time.perf_counter()
    plan = make_plan(dataset, budget=budget_seconds, progress=progress)
    from medseg.config import write_json_atomic

    write_json_atomic(plan.to_dict(), folder / "plans.json")
    stage("plan", started)

    started = time.perf_counter()
    result = train_fold(dataset, CONFIGURATION, "all", model_dir=folder / "model", plans=folder / "plans.json",
                        budget_seconds=budget_seconds, progress=progress, train_config={"num_workers": 1})
    stage("train", started)

    started = time.perf_counter()
    predictions = folder / "predictions"
    _predict_folder(folder / "model", dataset / "imagesTs", predictions, progress)
    stage("predict", started)

    started = time.perf_counter()
    evaluation = evaluate(predictions, dataset / "labelsTs", folder / "evaluation",
                          dataset_json=dataset / "dataset.json", progress=progress, workers=1)
    dice = {name: round(float(values["dice"]["mean"]), 4)
            for name, values in evaluation.summary_data["metrics"].items()}
    _overlays(dataset, predictions, folder / "overlays")
    stage("evaluate", started)

    report_path = folder / "report.json"
    write_json_atomic({"held_out_dice": dice, "training_steps": result.state.iteration,
                       "budget_seconds": budget_seconds, "configuration": CONFIGURATION, "seconds": seconds,
                       "overlays": sorted(p.name for p in (folder / "overlays").iterdir())}, report_path)
    return DemoResult(folder, dataset, report.summary(), dice, result.state.iteration, seconds, report_path)


def _predict_folder(model: Path, images: Path, output: Path, progress: bool | None) -> None:
    from medseg.inference import Predictor
    from medseg.inference.run import collect_cases, predict_cases

    predict_cases(Predictor.from_folder(model), collect_cases(images), output, progress=progress)


def _overlays(dataset: Path, predictions: Path, output: Path) -> None:
    from medseg.io import read_image
    from medseg.visualize import save_overlay

    for path in sorted(predictions.iterdir()):
        case_id = path.name.removesuffix(".nii.gz")
        image = read_image(dataset / "imagesTs" / f"{case_id}_0000.nii.gz").array[0]
        reference = read_image(dataset / "labelsTs" / path.name).array[0]
        save_overlay(image, read_image(path).array[0], reference, output / f"{case_id}.png")
