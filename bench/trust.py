"""Calibration and uncertainty on the shared datasets (issue 20, items 1 and 2).

Per dataset: a subset in the raw layout (symlinks, under ``--work``): ``train`` case ids (sorted ids, a contiguous
block) for cross-validation and ``held_out`` ids (a later contiguous block: CVC-ClinicDB's neighbouring frames
are near-duplicates). Folds 0 and 1 of the 5-fold split of the training ids are trained by ``train_fold`` (the
``medseg train`` service) with dropout 0.1 in every stage (``--set net.dropout=0.1``) for ``--steps`` steps, each
predicting its validation cases into ``fold_K/validation/`` as ``medseg train`` does; then:

  calibration   ``calibrate_model`` (temperature scaling) on those cross-validation probabilities; the held-out
                cases predicted by both folds (mirroring TTA) without and with ``calibration.json``; top-label
                ECE and Brier over all voxels of the held-out cases (``medseg evaluate --probabilities``'s
                ``probability_calibration``)
  uncertainty   the held-out cases predicted with each method of ``medseg.trust.uncertainty``: ``ensemble`` (the
                two folds, no TTA), ``tta`` (fold 0, mirroring), ``mcdropout`` (fold 0, no TTA, ``--samples``);
                per case, the voxels ranked by uncertainty (entropy, and mutual information), the most uncertain
                fraction f removed (f in 0, 0.05, ..., 0.5), the mean foreground Dice (``medseg.metrics``) of
                the rest; the area under Dice(f) divided by 0.5 (a mean Dice over the curve: higher = the
                uncertainty sits where the errors are), with random removal as the baseline

Writes the ``calibration`` and ``uncertainty`` keys of ``bench/results/trust.json`` (other keys are kept).

    nice -n 19 python bench/trust.py            # tiny models: a few minutes on 2 cores (more under load)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "trust.json"
# name: configuration, training ids and held-out ids (slices of the sorted ids), plan overrides
DATASETS = {
    "hippocampus": ("3d_fullres", slice(0, 12), slice(-5, None), ["3d_fullres.batch_size=2"]),
    "cvc_clinicdb": ("2d", slice(0, 12), slice(300, 305), ["2d.patch_size=[128,128]", "2d.batch_size=4"]),
    "isbi2012_em": ("2d", slice(0, 12), slice(19, 24), ["2d.patch_size=[128,128]", "2d.batch_size=4"]),
    "cxr_lungs": ("2d", slice(0, 12), slice(-5, None), ["2d.patch_size=[128,128]", "2d.batch_size=4"]),
}
FRACTIONS = np.linspace(0.0, 0.5, 11)
FOLDS = ("0", "1")


def case_ids(name: str) -> list[str]:
    ending = json.loads((DATA / name / "dataset.json").read_text())["file_ending"]
    return sorted(p.name[: -len(ending)] for p in (DATA / name / "labelsTr").iterdir() if p.name.endswith(ending))


def subset(name: str, ids: list[str], folder: Path) -> Path:
    """A raw dataset of ``ids`` of ``name`` (symlinks to the shared files)."""
    spec = json.loads((DATA / name / "dataset.json").read_text())
    ending = spec["file_ending"]
    if folder.exists():
        return folder
    partial = folder.with_name(folder.name + ".partial")
    for sub in ("imagesTr", "labelsTr"):
        (partial / sub).mkdir(parents=True, exist_ok=True)
    for case in ids:
        for channel in sorted((DATA / name / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9]{ending}")):
            (partial / "imagesTr" / channel.name).symlink_to(channel)
        (partial / "labelsTr" / f"{case}{ending}").symlink_to(DATA / name / "labelsTr" / f"{case}{ending}")
    spec["numTraining"] = len(ids)
    (partial / "dataset.json").write_text(json.dumps(spec, indent=2))
    partial.rename(folder)
    return folder


def train_model(name: str, dataset: Path, model: Path, configuration: str, overrides: list[str], steps: int,
                budget: float, folds: tuple[str, ...] = FOLDS) -> float:
    from medseg.config import write_json_atomic
    from medseg.planning.service import make_plan
    from medseg.training.service import train_fold

    start = time.time()
    plans = model.parent / f"{name}_plans.json"
    if not plans.is_file():
        write_json_atomic(make_plan(dataset, budget=budget, flops_per_second=1e10, min_iterations=steps,
                                    overrides=overrides, progress=False).to_dict(), plans)
    for fold in folds:
        if (model / f"fold_{fold}" / "validation.json").is_file():
            continue
        train_fold(dataset, configuration, fold, model_dir=model, plans=plans, budget_seconds=budget,
                   train_config={"max_iterations": steps, "iterations_per_epoch": max(1, steps // 2),
                                 "num_workers": 0},
                   network_options={"dropout": 0.1}, progress=False)
    return time.time() - start


def train_on_block(name: str, setup: tuple, work: Path, steps: int, budget: float,
                   folds: tuple[str, ...] = FOLDS) -> tuple[list[str], Path, Path, float]:
    """The dataset's sorted ids, its training block as a raw subset under ``work/data``, and ``folds`` of it
    trained into ``work/models/<name>`` (``setup``: configuration, training slice, held-out slice, plan
    overrides); returns ``(ids, subset, model folder, training seconds)``."""
    configuration, train, _, overrides = setup
    ids = case_ids(name)
    dataset = subset(name, ids[train], work / "data" / name)
    model = work / "models" / name
    return ids, dataset, model, train_model(name, dataset, model, configuration, overrides, steps, budget, folds)


def retention_auc(pred: np.ndarray, ref: np.ndarray, uncertainty: np.ndarray | None, values: list[int],
                  rng: np.random.Generator) -> tuple[float, list[float]]:
    """Dice of the voxels left after removing the most uncertain fraction f (random order when
    ``uncertainty`` is None); ``(area under Dice(f) / 0.5, curve)``."""
    from medseg.metrics import mean_label_dice

    flat = pred.size
    order = rng.permutation(flat) if uncertainty is None else np.argsort(-uncertainty.ravel(), kind="stable")
    curve = []
    for fraction in FRACTIONS:
        keep = np.ones(flat, dtype=bool)
        keep[order[: int(round(fraction * flat))]] = False
        curve.append(mean_label_dice(pred.ravel(), ref.ravel(), values, keep, skip_absent=True))
    return float(np.trapezoid(curve, FRACTIONS) / FRACTIONS[-1]), curve


def evaluate_dataset(name: str, dataset: Path, model: Path, held_out: list[str], work: Path, samples: int) -> dict:
    from medseg.data import open_dataset
    from medseg.evaluation.calibration_report import probability_calibration
    from medseg.inference import Predictor
    from medseg.inference.ensemble import save_probabilities
    from medseg.trust.calibration import calibrate_model
    from medseg.trust.uncertainty import UncertaintyPredictor

    data = open_dataset(DATA / name)
    spec = calibrate_model(model, dataset, max_voxels=500_000)
    refs = work / f"{name}_refs"
    refs.mkdir(parents=True, exist_ok=True)
    for case in held_out:
        link = refs / data.case(case).label_file.name
        if not link.exists():
            link.symlink_to(data.case(case).label_file)
    predictors = {"before": Predictor.from_folder(model, folds=FOLDS, calibration=None),
                  "after": Predictor.from_folder(model, folds=FOLDS)}
    calibration = {"temperature": spec.temperature, "cv_voxels": spec.fitted_on["voxels"],
                   "cv_cases": spec.fitted_on["cases"], "cv_nll_before": spec.figures["before"]["nll"],
                   "cv_nll_after": spec.figures["after"]["nll"], "cv_ece_before": spec.figures["before"]["ece"],
                   "cv_ece_after": spec.figures["after"]["ece"], "held_out_cases": held_out}
    for when, predictor in predictors.items():
        folder = work / f"{name}_probabilities_{when}"
        for case in held_out:
            _, probabilities = predictor.predict_with_probabilities(data.read_image(data.case(case)))
            save_probabilities(folder / f"{case}.npz", probabilities.array, predictor.label_values)
        report = probability_calibration(folder, refs, work / f"{name}_calibration_{when}", plots=False)
        calibration[f"ece_{when}"] = report["top_label"]["ece"]
        calibration[f"brier_{when}"] = report["top_label"]["brier"]
        calibration[f"classwise_ece_{when}"] = {k: v["ece"] for k, v in report["classes"].items()}
    members = {"ensemble": Predictor.from_folder(model, folds=FOLDS, tta=False),
               "tta": Predictor.from_folder(model, folds=["0"]),
               "mcdropout": Predictor.from_folder(model, folds=["0"], tta=False)}
    values = [v for v in predictors["after"].label_values if v != 0]
    rng = np.random.default_rng(0)
    uncertainty: dict = {}
    for method, predictor in members.items():
        uncertain = UncertaintyPredictor(predictor, method, samples=samples)
        rows = {"entropy": [], "mutual_information": [], "random": []}
        seconds = time.time()
        for case in held_out:
            result = uncertain.predict_with_uncertainty(data.read_image(data.case(case)))
            pred, ref = result.labels.array[0], data.read_label(data.case(case)).array[0]
            for measure in ("entropy", "mutual_information"):
                rows[measure].append(retention_auc(pred, ref, result.maps[measure].array[0], values, rng))
            rows["random"].append(retention_auc(pred, ref, None, values, rng))
        uncertainty[method] = {
            "members": uncertain.num_members, "seconds_per_case": (time.time() - seconds) / len(held_out),
            **{f"auc_{measure}": float(np.nanmean([auc for auc, _ in r])) for measure, r in rows.items()},
            "dice_at_0": float(np.nanmean([curve[0] for _, curve in rows["entropy"]])),
            "curve_entropy": np.nanmean([curve for _, curve in rows["entropy"]], axis=0).tolist()}
    return {"calibration": calibration, "uncertainty": uncertainty}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/trust_bench"))
    parser.add_argument("--steps", type=int, default=60, help="training steps per fold")
    parser.add_argument("--budget", type=float, default=40.0, help="training seconds per fold at most")
    parser.add_argument("--samples", type=int, default=6, help="MC dropout samples")
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    results = json.loads(args.output.read_text()) if args.output.is_file() else {}
    results.setdefault("calibration", {})
    results.setdefault("uncertainty", {})
    results.setdefault("setup", {})
    for name in args.datasets:
        configuration, train, held, _ = DATASETS[name]
        start = time.time()
        ids, dataset, model, train_seconds = train_on_block(name, DATASETS[name], args.work, args.steps, args.budget)
        measured = evaluate_dataset(name, dataset, model, ids[held], args.work, args.samples)
        results["calibration"][name] = measured["calibration"]
        results["uncertainty"][name] = measured["uncertainty"]
        results["setup"][name] = {"configuration": configuration, "train_ids": ids[train], "held_out_ids": ids[held],
                                  "folds": list(FOLDS), "steps_per_fold": args.steps, "budget_per_fold": args.budget,
                                  "dropout": 0.1, "train_seconds": round(train_seconds, 1),
                                  "total_seconds": round(time.time() - start, 1)}
        c = measured["calibration"]
        print(f"{name}: T {c['temperature']:.3f}; held-out ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f}, "
              f"Brier {c['brier_before']:.4f} -> {c['brier_after']:.4f}", flush=True)
        for method, u in measured["uncertainty"].items():
            print(f"  {method}: AUC entropy {u['auc_entropy']:.4f}, MI {u['auc_mutual_information']:.4f}, "
                  f"random {u['auc_random']:.4f} (Dice at 0: {u['dice_at_0']:.4f})", flush=True)
    results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "load_average": os.getloadavg(), "date": datetime.now(timezone.utc).isoformat()}
    results["command"] = "nice -n 19 python bench/trust.py " + " ".join(
        f"--{k} {v}" for k, v in (("steps", args.steps), ("budget", args.budget), ("samples", args.samples)))
    write_results(results, args.output)


def write_results(results: dict, output: Path) -> None:
    """``output`` replaced atomically by ``results`` as indented JSON."""
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_suffix(".json.part")
    temporary.write_text(json.dumps(results, indent=2) + "\n")
    temporary.replace(output)


if __name__ == "__main__":
    main()
