"""``evaluate(pred_dir, ref_dir, out_dir)``: per-case, per-class metrics over folders of label files, in parallel,
with a CSV, a JSON summary (mean, sd, median, 95 % bootstrap CI) and a box plot per metric."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError
from medseg.evaluation.cases import classes_from_dataset_json, pair_cases
from medseg.evaluation.report import write_box_plots, write_csv, write_json
from medseg.metrics.compute import MetricOptions, case_metrics, classes_from_labels, instance_map_metrics
from medseg.metrics.summary import summarise
from medseg.progress import track
from medseg.workers import die_with_parent

SCHEMA_VERSION = 1
INSTANCES = "instances"  # the one class of an evaluation of instance maps


@dataclass(frozen=True)
class EvaluationResult:
    csv: Path
    summary: Path
    plots: list[Path]
    rows: list[dict]
    summary_data: dict


def _read_label_map(path: Path, role: str):
    """Read a label file: one channel of integer labels (floats allowed when they hold whole numbers)."""
    from medseg.data.validate import nonfinite_voxels
    from medseg.io import read_image

    image = read_image(path)
    if image.num_channels != 1:
        raise MedsegError(f"{role} has {image.num_channels} channels, a label map has one", path=path,
                          fix="save labels as a single-channel integer image")
    bad = nonfinite_voxels(image)  # counted in the file too: ITK reads a NIfTI's NaN as 0
    if bad:
        raise MedsegError(f"{role} holds {bad} NaN/Inf voxel(s), it is not a label map", path=path,
                          fix="write integer labels (argmax or threshold the prediction; NaN is no class)")
    array = image.array
    if not np.issubdtype(array.dtype, np.integer) and array.dtype != bool:
        if np.any(array != np.round(array)):
            raise MedsegError(f"{role} holds non-integer values, it is not a label map", path=path,
                              fix="threshold or argmax the prediction into integer labels first")
        image = image.with_array(array.astype(np.int64))
    return image


def _check_grid(image, reference, path: Path, ref_path: Path, role: str) -> None:
    from medseg.io import grid_differences

    problems = grid_differences(reference, image)
    if problems:
        raise MedsegError(f"{role} does not match the grid of reference {ref_path.name}: {'; '.join(problems)}",
                          path=path, fix=f"resample the {role} onto the reference grid")


def _labels_in(ref_path: Path) -> list[int]:
    values = np.unique(_read_label_map(ref_path, "reference").array)
    return [int(v) for v in values if v != 0]


def _score_case(case: str, pred_path: Path, ref_path: Path, roi_path: Path | None,
                classes: dict[str, tuple[int, ...]], options: MetricOptions, instances: bool = False) -> list[dict]:
    """Read one case, check its geometry and compute its metrics; one row per class (instance maps: one row)."""
    ref = _read_label_map(ref_path, "reference")
    pred = _read_label_map(pred_path, "prediction")
    _check_grid(pred, ref, pred_path, ref_path, "prediction")
    if instances:
        for image, path, role in ((pred, pred_path, "prediction"), (ref, ref_path, "reference")):
            if image.array.min() < 0:
                raise MedsegError(f"{role} holds negative values, it is not an instance map", path=path,
                                  fix="write 0 for background and 1, 2, ... for the objects")
        if roi_path is not None:
            raise MedsegError("--roi is not used with --instances", path=roi_path, fix="crop the instance maps")
        values = instance_map_metrics(pred.array[0], ref.array[0], ref.spacing, options)
        return [{"case": case, "class": INSTANCES, **values}]
    roi = None
    if roi_path is not None:
        from medseg.io import read_image

        from medseg.data.validate import nonfinite_voxels

        roi_image = read_image(roi_path)
        if nonfinite_voxels(roi_image):
            raise MedsegError("ROI mask holds NaN/Inf voxels", path=roi_path, fix="write the ROI as a 0/1 mask")
        _check_grid(roi_image, ref, roi_path, ref_path, "ROI")
        roi = np.any(roi_image.array != 0, axis=0)
    values = case_metrics(pred.array[0], ref.array[0], ref.spacing, classes, options, roi)
    return [{"case": case, "class": name, **metrics} for name, metrics in values.items()]


def _run(function, jobs: list[tuple], workers: int, description: str, progress: bool | None) -> list:
    """``function(*job)`` for every job, in a process pool when ``workers > 1``; results in job order."""
    if workers <= 1 or len(jobs) <= 1:
        return [function(*job) for job in track(jobs, description, enabled=progress)]
    results: list = [None] * len(jobs)
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=die_with_parent,
                             initargs=(os.getpid(),)) as pool:  # the workers die with us, even by SIGKILL
        futures = {pool.submit(function, *job): i for i, job in enumerate(jobs)}
        try:
            for future in track(as_completed(futures), description, total=len(jobs), enabled=progress):
                results[futures[future]] = future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return results


def resolve_classes(ref_files: list[Path], labels: str | None, regions: str | None, dataset_json: Path | None,
                    ref_dir: Path, workers: int, progress: bool | None) -> dict[str, tuple[int, ...]]:
    """Classes to score: ``regions`` if given, else ``labels``, else dataset.json labels, else every non-zero
    value found in the references."""
    from medseg.evaluation.cases import parse_labels, parse_regions

    if regions:
        return parse_regions(regions, ref_dir)
    if labels:
        return parse_labels(labels)
    if dataset_json is not None:
        return classes_from_dataset_json(dataset_json)
    found = sorted(set().union(*_run(_labels_in, [(p,) for p in ref_files], workers, "finding labels", progress)))
    if not found:
        raise MedsegError("the references contain no foreground label", path=ref_dir, fix="pass --labels")
    return classes_from_labels(found)


def evaluate(pred_dir: str | Path, ref_dir: str | Path, out_dir: str | Path, *, labels: str | None = None,
             regions: str | None = None, roi_dir: str | Path | None = None, dataset_json: str | Path | None = None,
             options: MetricOptions = MetricOptions(), workers: int | None = None, plots: bool = True,
             progress: bool | None = None, instances: bool = False) -> EvaluationResult:
    """Score every case of ``pred_dir`` against the file of the same case id in ``ref_dir``.

    ``instances``: both folders hold instance maps (0 background, every other value one object, e.g. a dataset's
    ``instancesTr/``): one class ``"instances"``, the instance metrics (PQ, F1, AJI, ...) on the objects as they
    are, every other metric on the foreground.

    Writes ``out_dir/metrics.csv`` (one row per case and class), ``out_dir/summary.json`` (per class and metric:
    mean, sd, median, 95 % bootstrap CI over finite values, counts of NaN/inf) and ``out_dir/plots/<metric>.png``.
    Mismatched case sets, grids or unreadable files raise ``MedsegError`` naming the file.
    """
    pred_dir, ref_dir, out_dir = Path(pred_dir), Path(ref_dir), Path(out_dir)
    cases = pair_cases(pred_dir, ref_dir, Path(roi_dir) if roi_dir is not None else None)
    cores = os.cpu_count() or 1
    workers = max(1, min(workers or cores, len(cases)))
    if options.threads == 1 and cores > workers:  # spare cores go to the distance transforms of each case
        options = replace(options, threads=cores // workers)
    if instances:
        if labels or regions:
            raise MedsegError("instance maps have no labels or regions to choose", fix="drop --labels / --regions")
        classes: dict[str, tuple[int, ...]] = {INSTANCES: ()}
    else:
        classes = resolve_classes([c[2] for c in cases], labels, regions,
                                  Path(dataset_json) if dataset_json is not None else None, ref_dir, workers,
                                  progress)
    jobs = [(case, pred, ref, roi, classes, options, instances) for case, pred, ref, roi in cases]
    rows = [row for case_rows in _run(_score_case, jobs, workers, "evaluating", progress) for row in case_rows]
    summary = {
        "schema_version": SCHEMA_VERSION,
        "prediction": str(pred_dir), "reference": str(ref_dir), "roi": None if roi_dir is None else str(roi_dir),
        "cases": len(cases),
        "classes": {name: list(values) for name, values in classes.items()},
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(options).items()},
        "statistics": "mean, sd, median and 95% percentile-bootstrap CI of the mean over finite values (2000 "
                      "resamples, seed 0); n_nan / n_inf count undefined and infinite values",
        "metrics": {name: {m: summarise([r[m] for r in rows if r["class"] == name]) for m in options.metrics}
                    for name in classes},
    }
    csv_path = write_csv(rows, options.metrics, out_dir / "metrics.csv")
    json_path = write_json(summary, out_dir / "summary.json")
    plot_paths = write_box_plots(rows, list(classes), options.metrics, out_dir / "plots") if plots else []
    return EvaluationResult(csv_path, json_path, plot_paths, rows, summary)

