"""``medseg benchmark``: networks x datasets at one wall-clock budget, through the same plan, loss and schedule,
scored on the same held-out block; then the paired statistics and ranks of ``medseg.evaluation.compare``.

Layout of the output folder (every cell resumable: a cell with ``result.json`` is done and skipped, a cell with
a model folder but no result continues its training with the trainer's resume)::

    BENCH/benchmark.json                  the grid's results, comparisons, ranks, quality per compute
    BENCH/critical_difference.png         average ranks over the datasets (with at least two datasets)
    BENCH/<dataset>/split.json            the training and test cases and the rule that chose them
    BENCH/<dataset>/train/ test/          the split as folders of symlinks to the dataset's files
    BENCH/<dataset>/plans.json            one plan for every network (the planner's U-Net fitted to the budget)
    BENCH/<dataset>/preprocessed/         one preprocessed cache for every network
    BENCH/<dataset>/<network>/model/      the trained model folder (fold "all")
    BENCH/<dataset>/<network>/result.json the cell: Dice and HD95 (mean over foreground classes), per case too

Each network is trained by ``train_fold(..., network=NAME)``, which fits the network to the plan's patch and
refits batch size and steps to the budget; prediction is ``Predictor`` with the default sliding window and
mirroring; scores are ``medseg.evaluation.evaluate``'s.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from medseg.benchmark.split import BenchmarkSplit, make_split
from medseg.config import read_json, write_json_atomic
from medseg.errors import MedsegError

RESULT_SCHEMA = 1


@dataclass(frozen=True)
class BenchmarkRequest:
    """What to run: dataset folders, registry network names, the training budget per cell in seconds."""

    datasets: list[Path]
    networks: list[str]
    budget_seconds: float
    output: Path
    test_fraction: float = 0.25
    configuration: str | None = None  # default: 2d for 2D data, else 3d_fullres
    roi_folder: str | None = None  # per-case masks to score inside, where a dataset has them (e.g. fovTr)
    network_options: dict[str, dict] = field(default_factory=dict)
    jobs: int = 1  # cells trained side by side, each on cores // jobs torch threads (one loader worker each)


def check_request(request: BenchmarkRequest) -> None:
    """Every problem that would stop the grid midway, before anything is trained."""
    from medseg.nets import list_models

    known = set(list_models())
    unknown = [n for n in request.networks if n not in known]
    if unknown:
        raise MedsegError(f"unknown network(s) {', '.join(unknown)}", fix="see medseg models for the names")
    if len(set(request.networks)) != len(request.networks) or not request.networks:
        raise MedsegError(f"networks {request.networks} are empty or repeat one", fix="name each network once")
    names = [Path(d).name for d in request.datasets]
    if len(set(names)) != len(names) or not names:
        raise MedsegError(f"datasets {names} are empty or repeat a folder name", fix="name each dataset once")
    if request.budget_seconds <= 0:
        raise MedsegError(f"budget {request.budget_seconds} s is not positive", fix="e.g. --budget 10m")
    if request.jobs < 1 or request.jobs > cell_cores():
        raise MedsegError(f"--jobs {request.jobs} is not between 1 and this machine's {cell_cores()} cores",
                          fix="give each side-by-side cell at least one core")
    for dataset in request.datasets:
        if not (Path(dataset) / "dataset.json").is_file():
            raise MedsegError("not a dataset folder (no dataset.json)", path=dataset,
                              fix="pass dataset folders in the nnU-Net v2 layout")


def check_datasets(request: BenchmarkRequest, *, progress: bool | None = None) -> None:
    """Every case of every dataset, with the checks of ``medseg check``, before the grid writes anything."""
    from medseg.data import open_dataset
    from medseg.data.validate import validate_cases

    for dataset in request.datasets:
        validate_cases(open_dataset(dataset), progress=progress)


def _configuration(plan, requested: str | None, path: Path) -> str:
    """The requested configuration, else 3d_fullres where the plan has it (3D data), else 2d."""
    if requested is None:
        requested = "3d_fullres" if "3d_fullres" in plan.configurations else "2d"
    if requested not in plan.configurations:
        raise MedsegError(f"no configuration {requested!r} in the plan", path=path,
                          fix=f"use one of {', '.join(plan.configurations)}")
    return requested


def prepare_dataset(dataset: Path, folder: Path, request: BenchmarkRequest, *,
                    progress: bool | None = None) -> tuple[BenchmarkSplit, Path, str]:
    """The split, the shared plan and the configuration every network of ``dataset`` trains."""
    from medseg.config.plan import Plan
    from medseg.planning.service import make_plan

    split = make_split(dataset, folder, test_fraction=request.test_fraction)
    split_record = {"rule": split.rule, "train": split.train_cases, "test": split.test_cases}
    recorded = folder / "split.json"
    if recorded.is_file() and read_json(recorded) != split_record:
        raise MedsegError("the dataset's cases changed since this benchmark began", path=recorded,
                          fix="use a new output folder for the changed dataset")
    write_json_atomic(split_record, recorded)
    plans = folder / "plans.json"
    if not plans.is_file():
        write_json_atomic(make_plan(split.train, budget=request.budget_seconds, progress=progress).to_dict(), plans)
    plan = Plan.from_dict(read_json(plans), path=plans)
    return split, plans, _configuration(plan, request.configuration, plans)


def _parameters(model: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(model / "fold_all" / "weights.safetensors"), "pt") as handle:
        return sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())


def _per_case(rows: list[dict], metric: str) -> dict[str, float]:
    """Mean over the foreground classes of each case (NaN classes left out; a case with none is NaN)."""
    by_case: dict[str, list[float]] = {}
    for row in rows:
        if str(row["class"]) in ("0", "background"):
            continue
        by_case.setdefault(row["case"], []).append(float(row[metric]))
    return {case: float(np.mean([v for v in values if math.isfinite(v)]))
            if any(math.isfinite(v) for v in values) else math.nan for case, values in by_case.items()}


def cell_cores() -> int:
    """The cores the grid's cells share: those this process may run on."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cell_threads(jobs: int) -> int | None:
    """Torch threads of each of ``jobs`` side-by-side cells (None for one cell: the trainer's own choice)."""
    return None if jobs == 1 else max(1, cell_cores() // jobs - 1)  # a core of each share for its loader worker


def run_cell(split: BenchmarkSplit, plans: Path, configuration: str, network: str, folder: Path,
             request: BenchmarkRequest, *, progress: bool | None = None) -> dict:
    """Train, predict and score one network on one dataset; the result is written to ``folder/result.json``.
    With ``request.jobs`` > 1 the cell trains and predicts on ``cell_threads(jobs)`` torch threads."""
    import torch

    from medseg.evaluation import evaluate
    from medseg.inference import Predictor
    from medseg.inference.run import collect_cases, predict_cases
    from medseg.training.service import train_fold

    model = folder / "model"
    resume = (model / "fold_all").is_dir()
    threads = cell_threads(request.jobs)
    if threads is not None:
        torch.set_num_threads(threads)
    trained = train_fold(split.train, configuration, "all", model_dir=model, plans=plans,
                         preprocessed=folder.parent / "preprocessed", budget_seconds=request.budget_seconds,
                         resume=resume, network=network, network_options=request.network_options.get(network),
                         train_config={"threads": threads}, validate=False, progress=progress)
    started = time.perf_counter()
    cases = collect_cases(split.test_images)
    predict_cases(Predictor.from_folder(model), cases, folder / "predictions", overwrite=True, progress=progress)
    predict_seconds = time.perf_counter() - started
    roi = split.test_extras.get(request.roi_folder) if request.roi_folder else None
    scores = evaluate(folder / "predictions", split.test_labels, folder / "evaluation", roi_dir=roi,
                      dataset_json=split.train / "dataset.json", plots=False, progress=progress)
    dice, hd95 = _per_case(scores.rows, "dice"), _per_case(scores.rows, "hd95")
    steps = trained.state.iteration
    result = {
        "schema_version": RESULT_SCHEMA, "dataset": split.name, "network": network, "configuration": configuration,
        "dice": float(np.nanmean(list(dice.values()))), "hd95": float(np.nanmean(list(hd95.values()))),
        "steps": steps, "params": _parameters(model), "train_seconds": round(trained.state.elapsed, 1),
        "seconds_per_step": round(trained.state.elapsed / steps, 4) if steps else None,
        "predict_seconds_per_case": round(predict_seconds / max(len(cases), 1), 3),
        "budget_seconds": request.budget_seconds, "roi": request.roi_folder if roi else None,
        "threads": threads, "jobs": request.jobs,
        "per_case": {"dice": dice, "hd95": hd95},
    }
    write_json_atomic(result, folder / "result.json")
    return result


def summarise_grid(cells: dict[str, dict[str, dict]], output: Path) -> dict:
    """Comparisons per dataset (Wilcoxon + paired bootstrap, Holm), ranks over datasets (Friedman, Nemenyi CD)
    for Dice and HD95, quality per compute; writes ``benchmark.json`` and the CD diagram."""
    from medseg.evaluation.compare import compare_all, plot_critical_difference, quality_per_compute, rank_networks

    results = {d: {n: {k: c[k] for k in ("dice", "hd95", "steps", "params", "seconds_per_step")}
                   for n, c in row.items()} for d, row in cells.items()}
    comparisons = {d: [p.to_dict() for p in compare_all({n: c["per_case"]["dice"] for n, c in row.items()})]
                   for d, row in cells.items() if len(row) >= 2}
    summary: dict = {"results": results, "comparisons_dice": comparisons}
    complete = {d: {n: c["dice"] for n, c in row.items()} for d, row in cells.items()}
    networks = set.intersection(*(set(row) for row in complete.values())) if complete else set()
    if len(networks) >= 2:
        ranks = rank_networks(complete)
        hd95 = rank_networks({d: {n: c["hd95"] for n, c in row.items()} for d, row in cells.items()},
                             higher_is_better=False)
        summary["ranks"] = ranks.average_rank
        summary["rank_table"] = ranks.to_dict()
        summary["ranks_hd95"] = hd95.average_rank
        mean = {n: float(np.mean([complete[d][n] for d in complete])) for n in networks}
        per_step = {n: float(np.mean([cells[d][n]["seconds_per_step"] or math.nan for d in cells])) for n in networks}
        params = {n: int(np.mean([cells[d][n]["params"] for d in cells])) for n in networks}
        summary["quality_per_compute"] = quality_per_compute(mean, per_step, params)
        if len(complete) >= 2:
            plot_critical_difference(ranks, output / "critical_difference.png")
    write_json_atomic(summary, output / "benchmark.json")
    return summary


def run_benchmark(request: BenchmarkRequest, *, progress: bool | None = None,
                  on_cell: Callable[[str, str, dict | None], None] | None = None) -> dict:
    """Run every cell not done yet (datasets in order, networks in order) and summarise the grid.

    With ``request.jobs`` > 1, every dataset's split, plan and preprocessed cache are made first, then that many
    cells train side by side in their own processes, each on an equal share of the cores, so every cell of the
    grid has the same compute for its budget. ``on_cell(dataset, network, result)`` is called when a cell starts
    (``result`` None) and when it ends, for a progress view."""
    check_request(request)
    check_datasets(request, progress=progress)
    output = Path(request.output)
    output.mkdir(parents=True, exist_ok=True)
    cells: dict[str, dict[str, dict]] = {}
    pending: list[tuple] = []
    for dataset in request.datasets:
        dataset = Path(dataset)
        folder = output / dataset.name
        split, plans, configuration = prepare_dataset(dataset, folder, request, progress=progress)
        cells[dataset.name] = {}
        for network in request.networks:
            done = folder / network / "result.json"
            if done.is_file():
                cells[dataset.name][network] = read_json(done)
                if on_cell:
                    on_cell(dataset.name, network, cells[dataset.name][network])
            else:
                pending.append((dataset.name, split, plans, configuration, network, folder / network))
        if request.jobs > 1 and any(cell[1] is split for cell in pending):
            _preprocess_once(split, plans, configuration, folder, progress=progress)
    if request.jobs == 1:
        for name, split, plans, configuration, network, cell in pending:
            if on_cell:
                on_cell(name, network, None)
            cells[name][network] = run_cell(split, plans, configuration, network, cell, request, progress=progress)
            if on_cell:
                on_cell(name, network, cells[name][network])
    else:
        _run_side_by_side(pending, request, cells, on_cell)
    ordered = {d: {n: cells[d][n] for n in request.networks if n in cells[d]} for d in cells}
    return summarise_grid(ordered, output)


def _preprocess_once(split: BenchmarkSplit, plans: Path, configuration: str, folder: Path, *,
                     progress: bool | None) -> None:
    """The dataset's cache, made before side-by-side cells read it (each cell's trainer then skips every case)."""
    from medseg.config.plan import Plan
    from medseg.preprocess.pipeline import preprocess_dataset

    preprocess_dataset(split.train, Plan.from_dict(read_json(plans), path=plans), configuration,
                       folder / "preprocessed", progress=progress, plans_path=plans)


def _run_side_by_side(pending: list[tuple], request: BenchmarkRequest, cells: dict[str, dict[str, dict]],
                      on_cell: Callable[[str, str, dict | None], None] | None) -> None:
    """``request.jobs`` cells at a time, each in a fresh (spawned) process; the first failure stops the grid
    after the running cells end (finished cells keep their results)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    queue = list(pending)
    running: dict = {}
    with ProcessPoolExecutor(max_workers=request.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        failure = None
        while queue or running:
            while queue and len(running) < request.jobs and failure is None:
                name, split, plans, configuration, network, cell = queue.pop(0)
                future = pool.submit(run_cell, split, plans, configuration, network, cell, request, progress=False)
                running[future] = (name, network)
                if on_cell:
                    on_cell(name, network, None)
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                dataset, network = running.pop(future)
                try:
                    cells[dataset][network] = future.result()
                except Exception as error:  # noqa: BLE001 - reported after the running cells end
                    failure = failure or error
                    continue
                if on_cell:
                    on_cell(dataset, network, cells[dataset][network])
        if failure is not None:
            raise failure


def grid_table(request: BenchmarkRequest) -> list[list[str]]:
    """Rows of the progress view: for each dataset, each network's Dice or its state (done / running / to do)."""
    rows = []
    for dataset in request.datasets:
        row = [Path(dataset).name]
        for network in request.networks:
            cell = Path(request.output) / Path(dataset).name / network
            if (cell / "result.json").is_file():
                row.append(f"{json.loads((cell / 'result.json').read_text())['dice']:.3f}")
            elif (cell / "model").is_dir():
                row.append("started")
            else:
                row.append("-")
        rows.append(row)
    return rows


def parse_networks(text: Sequence[str]) -> list[str]:
    """``["unet,resunet", "umamba"]`` -> ``["unet", "resunet", "umamba"]``."""
    return [name.strip() for part in text for name in part.split(",") if name.strip()]
