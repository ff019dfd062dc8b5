"""Benchmark: test-time adaptation (``medseg predict --adapt``) against none, on a real two-site shift and two
synthetic shifts of chest X-rays (cxr_lungs).

Split (``cases.tsv`` names the hospital; folders of symlinks under ``--work``, the shared data never written):
  train      the first 118 Montgomery cases (cxr_000-cxr_117)
  shenzhen   all 31 Shenzhen cases: the real shift (another hospital, scanner and population)
  montgomery the other 20 Montgomery cases, unshifted (the in-domain reference, not adapted)
  intensity_contrast  those 20 with a gamma curve x -> 255 (x / 255) ** 2.5 (a contrast change that the plan's
             per-image z-score does not undo)
  blur_noise those 20 blurred (Gaussian, sigma 6 px of the 512 px image) plus Gaussian noise (0.25 of the image's
             standard deviation), seeded

Models: ``medseg plan --budget`` with the 2d configuration at 4 mm (``--set 2d.target_spacing=[4.0,4.0]``: the
planned patch then covers most of an image), then ``medseg train -f all --budget`` under ``nice -n 19``, twice:
the planned U-Net (instance norm, what medseg trains by default) and the same U-Net with batch norm
(``--network plan_unet --set net.norm=["batch",{}]``). Prediction: ``Predictor.from_folder`` without mirroring,
a fresh one per method, adapted with ``adapt_predictor`` (what ``medseg predict --adapt`` runs, default
``TestTimeOptions``) to the very images it then predicts (transductive, as the CLI does); Dice of the lung label by
``medseg.metrics``, mean over cases. For the instance-norm model ``bn`` is a no-op (its report says so; the
networks are untouched), so its Dice is the unadapted one.

    nice -n 19 python bench/tta.py --work /tmp/tta/bench          # 19 min on 2 cores at load 20-24 (3 min plan +
                                                                  # training, the rest prediction and adaptation)
    nice -n 19 python bench/tta.py --work /tmp/tta/bench --skip-training   # reuse the trained models

Writes ``bench/results/tta.json``: ``{"results": {shift: {"none", "bn", "tent": Dice}}}`` for the instance-norm
model, ``"batch_norm_model"`` the same for the batch-norm model, the adaptation reports, per-case Dice, timings,
the machine and its load.
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

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cxr_lungs"
RESULTS = ROOT / "bench" / "results" / "tta.json"
BIN = Path(sys.executable).parent
MODELS = {"instance_norm": [], "batch_norm": ["--network", "plan_unet", "--set", 'net.norm=["batch", {}]']}
SHIFTS = ("shenzhen", "intensity_contrast", "blur_noise")


def sites() -> dict[str, list[str]]:
    rows = [line.split("\t") for line in (DATA / "cases.tsv").read_text().splitlines() if line.strip()]
    found: dict[str, list[str]] = {}
    for case, _, site in rows:
        found.setdefault(site.strip(), []).append(case)
    return found


def train_folder(work: Path, cases: list[str]) -> Path:
    folder = work / "train"
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for case in cases:
        for sub, name in (("imagesTr", f"{case}_0000.png"), ("labelsTr", f"{case}.png")):
            if not (folder / sub / name).is_symlink():
                (folder / sub / name).symlink_to(DATA / sub / name)
    spec = json.loads((DATA / "dataset.json").read_text())
    (folder / "dataset.json").write_text(json.dumps({**spec, "numTraining": len(cases)}, indent=1))
    return folder


def run(command: list[str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "a") as stream:
        stream.write("$ " + " ".join(command) + "\n")
        stream.flush()
        subprocess.run(["nice", "-n", "19", *command], check=True, stdout=stream, stderr=subprocess.STDOUT)
    return round(time.perf_counter() - started, 1)


def shifted(image, shift: str, rng: np.random.Generator):
    """``image`` (1, Y, X) grey 0-255 under one synthetic shift (float32)."""
    from scipy.ndimage import gaussian_filter

    array = image.array.astype(np.float32)
    if shift == "intensity_contrast":
        return image.with_array(255.0 * (array / 255.0) ** 2.5)
    if shift == "blur_noise":
        blurred = gaussian_filter(array, sigma=(0, 6, 6))
        return image.with_array(blurred + rng.normal(0, 0.25 * array.std(), array.shape).astype(np.float32))
    return image


def targets(groups: dict[str, list[str]], seed: int = 0) -> dict[str, list[tuple[str, object, np.ndarray]]]:
    from medseg.data import read_channels
    from medseg.io import read_image

    def load(case: str):
        return read_channels([DATA / "imagesTr" / f"{case}_0000.png"]), read_image(DATA / "labelsTr" / f"{case}.png")

    rng = np.random.default_rng(seed)
    sets: dict[str, list] = {"montgomery": [], "shenzhen": [], "intensity_contrast": [], "blur_noise": []}
    for case in groups["Shenzhen"]:
        image, label = load(case)
        sets["shenzhen"].append((case, image, label.array[0]))
    for case in groups["held_out"]:
        image, label = load(case)
        for name in ("montgomery", "intensity_contrast", "blur_noise"):
            sets[name].append((case, shifted(image, name, rng), label.array[0]))
    return sets


def dice_scores(predictor, cases) -> list[float]:
    from medseg.metrics import confusion, dice

    return [round(dice(confusion(predictor.predict(image).array[0] == 1, label == 1)), 4)
            for _, image, label in cases]


def evaluate(model: Path, cases, method: str, unadapted: dict | None = None) -> dict:
    """Dice of ``model`` on ``cases`` after ``method``; when the adaptation left the networks unchanged (its
    report's outcome), ``unadapted``'s scores stand (the same networks predict the same labels)."""
    from medseg.adapt.test_time import adapt_predictor
    from medseg.inference import Predictor

    predictor = Predictor.from_folder(model, tta=False)
    started = time.perf_counter()
    report = adapt_predictor(predictor, [image for _, image, _ in cases], method) if method != "none" else None
    adapted = time.perf_counter() - started
    if report is not None and report.outcome == "unchanged" and unadapted is not None:
        scores = unadapted["per_case"]
    else:
        scores = dice_scores(predictor, cases)
    out = {"dice": round(float(np.mean(scores)), 4), "per_case": scores, "adapt_seconds": round(adapted, 1),
           "predict_seconds": round(time.perf_counter() - started - adapted, 1)}
    if report is not None:
        summary = {k: v for k, v in report.to_dict().items() if k not in ("history", "options")}
        out["report"] = {**summary, "history": report.history}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/tta/bench"))
    parser.add_argument("--budget", default="60s", help="medseg train budget per model")
    parser.add_argument("--skip-training", action="store_true", help="reuse the models already in --work")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # on a loaded 2-core machine one thread is the fastest (tests/conftest.py)
    started = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "commands.log"
    groups = sites()
    groups["held_out"] = groups["Montgomery"][118:]
    train = train_folder(args.work, groups["Montgomery"][:118])
    plans = args.work / "plans.json"
    timings: dict[str, float] = {}
    if not args.skip_training:
        timings["plan"] = run([str(BIN / "medseg"), "plan", str(train), "--budget", args.budget, "-o", str(plans),
                               "--overwrite", "--set", "2d.target_spacing=[4.0,4.0]"], log)
        for name, extra in MODELS.items():
            timings[f"train_{name}"] = run([str(BIN / "medseg"), "train", str(train), "-c", "2d", "-f", "all",
                                            "-o", str(args.work / name), "-p", str(plans), "--budget", args.budget,
                                            "--no-validation", *extra], log)
    sets = targets(groups)
    results: dict[str, dict] = {}
    for name in MODELS:
        model = args.work / name
        results[name] = {"montgomery_unshifted": evaluate(model, sets["montgomery"], "none")}
        for shift in SHIFTS:
            row = {}
            for method in ("none", "bn", "tent"):
                row[method] = evaluate(model, sets[shift], method, row.get("none"))
                print(f"{name} {shift} {method}: Dice {row[method]['dice']:.4f}", flush=True)
            results[name][shift] = row
    document = {
        "results": {s: {m: results["instance_norm"][s][m]["dice"] for m in ("none", "bn", "tent")} for s in SHIFTS},
        "batch_norm_model": {s: {m: results["batch_norm"][s][m]["dice"] for m in ("none", "bn", "tent")}
                             for s in SHIFTS},
        "in_domain_dice": {name: results[name]["montgomery_unshifted"]["dice"] for name in MODELS},
        "details": results,
        "split": {"train": "Montgomery cxr_000-cxr_117 (118)", "shenzhen": f"{len(groups['Shenzhen'])} Shenzhen",
                  "synthetic": f"Montgomery {groups['held_out'][0]}-{groups['held_out'][-1]} "
                               f"({len(groups['held_out'])})"},
        "settings": {"budget": args.budget, "configuration": "2d at 4 mm", "mirroring_tta": False,
                     "adaptation": "default TestTimeOptions, transductive on each shift's images"},
        "timings_seconds": {**timings, "total": round(time.perf_counter() - started, 1)},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread",
        "load_average_start": load_start, "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": " ".join(sys.argv),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=1) + "\n")
    for label, table in (("instance norm (default)", document["results"]),
                         ("batch norm", document["batch_norm_model"])):
        print(f"\n{label}: shift none bn tent")
        for shift, row in table.items():
            print(f"  {shift:20s} {row['none']:.4f} {row['bn']:.4f} {row['tent']:.4f}")
    print(f"wrote {RESULTS} in {document['timings_seconds']['total']} s")


if __name__ == "__main__":
    main()
