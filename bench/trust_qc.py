"""Label-free quality control on the shared datasets (issue 20, item 3): does the predicted Dice rank the cases
as their true Dice does?

Per dataset: ``train`` ids (a contiguous block of the sorted ids) trained as all five cross-validation folds by
``train_fold`` (the ``medseg train`` service) for ``--steps`` steps each (small models: their Dice spreads, which
is what a quality score must rank), each fold predicting its validation cases into ``fold_K/validation/``; then
``fit_quality_model`` (``medseg qc MODEL --fit``) on those cross-validation cases; the ``held_out`` ids (a later
contiguous block) predicted by the five folds (mirroring TTA) and scored by the fitted quality model, as ``medseg
predict`` does; per case the true Dice (``medseg.trust.qc.case_dice``: ``medseg.metrics``' Dice over the
foreground labels). Reported: the Spearman correlation (scipy.stats) of predicted and true Dice on the held-out
cases, the leave-one-out Spearman of the fit on the cross-validation cases, and the mean Dice gained by replacing
the worst 10 % of the cases by their reference, chosen by the quality score vs at random (the expectation over
random draws: 10 % of the mean of 1 - Dice).

Writes the ``qc`` key of ``bench/results/trust.json`` (other keys are kept).

    nice -n 19 python bench/trust_qc.py           # a few minutes per dataset on 2 quiet cores
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trust import DATA, RESULTS, train_on_block, write_results  # noqa: E402  (bench/trust.py's helpers)

FOLDS = ("0", "1", "2", "3", "4")
# name: configuration, training ids and held-out ids (slices of the sorted ids), plan overrides
DATASETS = {
    "hippocampus": ("3d_fullres", slice(0, 40), slice(-30, None), ["3d_fullres.batch_size=2"]),
    "cvc_clinicdb": ("2d", slice(0, 40), slice(400, 430), ["2d.patch_size=[128,128]", "2d.batch_size=4"]),
    "cxr_lungs": ("2d", slice(0, 40), slice(-30, None), ["2d.patch_size=[128,128]", "2d.batch_size=4"]),
}
REVIEW_FRACTION = 0.1


def review_gain(true_dice: np.ndarray, order: np.ndarray, fraction: float = REVIEW_FRACTION) -> float:
    """Mean Dice gained when the first ``fraction`` of the cases in ``order`` are replaced by their reference."""
    count = max(1, int(round(fraction * len(true_dice))))
    return float((1.0 - true_dice[order[:count]]).sum() / len(true_dice))


def qc_dataset(name: str, dataset: Path, model: Path, held_out: list[str]) -> dict:
    from scipy.stats import spearmanr

    from medseg.data import open_dataset
    from medseg.inference import Predictor
    from medseg.trust.qc import case_dice, fit_quality_model

    quality, cv_cases = fit_quality_model(model, dataset)
    data = open_dataset(DATA / name)
    predictor = Predictor.from_folder(model, folds=FOLDS)
    predicted, true = [], []
    for case in held_out:
        labels, probabilities = predictor.predict_with_probabilities(data.read_image(data.case(case)))
        predicted.append(quality.score(probabilities.array, predictor.label_values)["predicted_dice"])
        true.append(case_dice(labels.array[0], data.read_label(data.case(case)).array[0], predictor.label_values))
    keep = [i for i, d in enumerate(true) if math.isfinite(d)]
    predicted_arr, true_arr = np.array(predicted)[keep], np.array(true)[keep]
    flagged = np.argsort(predicted_arr, kind="stable")  # lowest predicted Dice first
    return {"spearman": float(spearmanr(predicted_arr, true_arr).statistic), "held_out_cases": len(keep),
            "cv_cases": quality.cases, "cv_loo_spearman": quality.loo_spearman, "cv_loo_mae": quality.loo_mae,
            "mean_dice": float(true_arr.mean()), "dice_min": float(true_arr.min()), "dice_max": float(true_arr.max()),
            "mae": float(np.abs(predicted_arr - true_arr).mean()),
            "gain_worst_10pct_flagged": review_gain(true_arr, flagged),
            "gain_worst_10pct_random": float(REVIEW_FRACTION * (1.0 - true_arr).mean()),
            "gain_worst_10pct_oracle": review_gain(true_arr, np.argsort(true_arr, kind="stable")),
            "per_case": {held_out[i]: {"predicted_dice": predicted[i], "dice": true[i]} for i in keep},
            "cv_per_case": cv_cases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/trust_qc_bench"))
    parser.add_argument("--steps", type=int, default=80, help="training steps per fold")
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds per fold at most")
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = json.loads(args.output.read_text()) if args.output.is_file() else {}
    results.setdefault("qc", {})
    for name in args.datasets:
        configuration, train, held, _ = DATASETS[name]
        start = time.time()
        ids, dataset, model, train_seconds = train_on_block(name, DATASETS[name], args.work, args.steps,
                                                            args.budget, folds=FOLDS)
        measured = qc_dataset(name, dataset, model, ids[held])
        measured["setup"] = {"configuration": configuration, "train_ids": [ids[train][0], ids[train][-1]],
                             "held_out_ids": [ids[held][0], ids[held][-1]], "folds": list(FOLDS),
                             "steps_per_fold": args.steps, "train_seconds": round(train_seconds, 1),
                             "total_seconds": round(time.time() - start, 1),
                             "load_average": os.getloadavg(), "platform": platform.platform(),
                             "date": datetime.now(timezone.utc).isoformat(),
                             "command": f"nice -n 19 python bench/trust_qc.py --datasets {name} --steps {args.steps}"}
        results["qc"][name] = measured
        print(f"{name}: held-out Spearman {measured['spearman']:.3f} ({measured['held_out_cases']} cases, Dice "
              f"{measured['dice_min']:.2f}-{measured['dice_max']:.2f}); CV leave-one-out "
              f"{measured['cv_loo_spearman']}; worst 10% replaced: flagged +{measured['gain_worst_10pct_flagged']:.4f}"
              f", random +{measured['gain_worst_10pct_random']:.4f}, oracle +{measured['gain_worst_10pct_oracle']:.4f}",
              flush=True)
        write_results(results, args.output)


if __name__ == "__main__":
    main()
