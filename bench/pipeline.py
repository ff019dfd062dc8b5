"""Benchmark: the whole pipeline, medseg vs nnU-Net v2, at the same wall-clock training budget on this CPU.

For each dataset the same training cases and the same held-out cases (folders of symlinks under ``--work``; the
shared data are never written):

  isbi2012_em      train on cases 0-17, test on 18-23 (2d)
  cvc_clinicdb     train on the first 80 % of the sorted case ids, test on the rest (blocks, not random:
                   neighbouring frames are near-duplicates) (2d)
  brats2013_mini   train on the first 3 cases, test on the 4th, scored on the BraTS regions (3d_fullres)
  cxr_lungs, drive, monuseg (2d), hippocampus (3d_fullres)
                   first 80 % of the sorted case ids / the rest, as blocks (not in the default run: they give the
                   classical baselines of ``bench/beyond.py`` their learned model to stand beside)

medseg: ``medseg plan --budget`` and ``medseg train -f all --budget`` on the train folder, ``medseg predict`` on
the test images (defaults: mirroring TTA, step 0.5). ``medseg_cascade`` (3D datasets whose plan has
``3d_cascade_fullres``): the same plan, every cross-validation fold of ``3d_lowres`` at ``budget / (2 * folds)``
each, then ``3d_cascade_fullres`` fold ``all`` on their validation predictions at ``budget / 2`` (so the two
stages together spend the one budget; the folds' validation predictions are outside it, as nnU-Net's are), and
``medseg predict`` runs both stages (the first as the ensemble of its folds). nnU-Net v2 (the ``bench`` extra): a ``DatasetNNN_Name`` raw
folder of the same train cases, ``nnUNetv2_plan_and_preprocess`` of the one configuration trained, then
``nnUNetTrainerBudget`` (``bench/nnunet_budget_trainer.py``: ``nnUNetTrainer`` with default settings that stops
when the budget is spent), fold ``all``, on the CPU; its predictor with the ``nnUNetv2_predict`` defaults (TTA
on, step 0.5). Both predictions are scored by ``medseg evaluate`` against the same test labels.

What each budget covers: the training loop only, per-epoch validation included, for both tools. Outside it (and
reported): medseg's planning and preprocessing (``medseg train`` preprocesses before its clock starts) and
nnU-Net's ``nnUNetv2_plan_and_preprocess`` and trainer set-up (network, data-loader processes). nnU-Net's
learning rate follows its per-epoch poly schedule over its planned 1000 epochs, so at a budget it stops with an
almost undecayed learning rate; that is its default behaviour (the comparison is "default settings otherwise"),
whereas medseg's schedule is a function of the fraction of the budget spent. ``--nnunet-schedule budget`` gives
nnU-Net that too (its poly rule driven by the fraction of the budget spent, set before every step; entry
``nnunet_budget_schedule``), a stronger anchor than its default.

    python bench/pipeline.py --budget 20m --work /tmp/medseg_pipeline      # all three, about 2 h on 2 cores
    python bench/pipeline.py --datasets isbi2012_em --budget 2m --work /tmp/smoke               # smoke run
    python bench/pipeline.py --datasets cvc_clinicdb --budget 1m --test-cases 4 --only medseg   # smoke, 4 test cases
    python bench/pipeline.py --datasets drive monuseg --only medseg --threads 1   # two such runs side by side
    python bench/pipeline.py --datasets isbi2012_em --only nnunet --nnunet-schedule budget --budget 2h \
        --entry-suffix _2h --work /tmp/nnunet_2h                                  # nnU-Net at 6x the budget

``--threads N`` limits every child process to N torch threads (``OMP_NUM_THREADS``), so that two runs can share a
2-core machine without oversubscribing it; the entry records it. Entries are merged into the results file when
each is written, so runs side by side keep each other's.

Writes ``bench/results/pipeline.json`` (merged per dataset and tool with what is there) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "pipeline.json"
TRAINER = ROOT / "bench" / "nnunet_budget_trainer.py"
BIN = Path(sys.executable).parent
TOOLS = ("medseg", "medseg_cascade", "nnunet")


def _split_isbi(ids: list[str]) -> tuple[list[str], list[str]]:
    return ids[:18], ids[18:24]


def _split_blocks(ids: list[str]) -> tuple[list[str], list[str]]:
    cut = int(0.8 * len(ids))
    return ids[:cut], ids[cut:]


def _split_brats(ids: list[str]) -> tuple[list[str], list[str]]:
    return ids[:3], ids[3:4]


DATASETS = {
    "isbi2012_em": {"configuration": "2d", "task_id": 901, "split": _split_isbi, "regions": False},
    "cvc_clinicdb": {"configuration": "2d", "task_id": 902, "split": _split_blocks, "regions": False},
    "brats2013_mini": {"configuration": "3d_fullres", "task_id": 903, "split": _split_brats, "regions": True},
    "cxr_lungs": {"configuration": "2d", "task_id": 904, "split": _split_blocks, "regions": False},
    "drive": {"configuration": "2d", "task_id": 905, "split": _split_blocks, "regions": False},
    "monuseg": {"configuration": "2d", "task_id": 906, "split": _split_blocks, "regions": False},
    "hippocampus": {"configuration": "3d_fullres", "task_id": 907, "split": _split_blocks, "regions": False},
}
MAIN_DATASETS = ("isbi2012_em", "cvc_clinicdb", "brats2013_mini")  # the default run: medseg vs nnU-Net


def parse_budget(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


def _link_files(source: Path, target: Path, cases: list[str], ending: str, channels: bool) -> None:
    """Symlink the files of ``cases`` (``<case>_CCCC<ending>`` when ``channels``, else ``<case><ending>``)."""
    target.mkdir(parents=True)
    wanted = set(cases)
    for path in sorted(source.iterdir()):
        stem = path.name[: -len(ending)] if path.name.endswith(ending) else None
        case = stem.rsplit("_", 1)[0] if stem and channels else stem
        if case in wanted:
            (target / path.name).symlink_to(path)


def build_folders(name: str, work: Path, max_test: int | None = None) -> dict:
    """Train and test folders (medseg), the nnU-Net raw dataset: symlinks to ``DATA/name``, fresh each run.
    ``max_test`` keeps the first held-out cases only (smoke runs; the real run scores them all)."""
    source = DATA / name
    spec = json.loads((source / "dataset.json").read_text())
    ending = spec["file_ending"]
    ids = sorted(p.name[: -len(ending)] for p in (source / "labelsTr").iterdir() if p.name.endswith(ending))
    train, test = DATASETS[name]["split"](ids)
    test = test[:max_test] if max_test else test
    base = work / name
    nn_name = f"Dataset{DATASETS[name]['task_id']}_{name.replace('_', '')}"
    folders = {"train": base / "train", "test": base / "test", "nn_raw": work / "nnunet" / "raw" / nn_name}
    for folder in folders.values():
        shutil.rmtree(folder, ignore_errors=True)
    extras = [p.name for p in source.iterdir() if p.is_dir() and p.name.endswith("Tr")
              and p.name not in ("imagesTr", "labelsTr")]
    for root, extra_folders in ((folders["train"], extras), (folders["nn_raw"], [])):
        _link_files(source / "imagesTr", root / "imagesTr", train, ending, True)
        _link_files(source / "labelsTr", root / "labelsTr", train, ending, False)
        for extra in extra_folders:  # BraTS' brainmaskTr: medseg's layout reads it, nnU-Net's does not
            _link_files(source / extra, root / extra, train, ending, False)
        (root / "dataset.json").write_text(json.dumps({**spec, "numTraining": len(train)}, indent=1))
    _link_files(source / "imagesTr", folders["test"] / "imagesTs", test, ending, True)
    _link_files(source / "labelsTr", folders["test"] / "labelsTs", test, ending, False)
    (folders["test"] / "dataset.json").write_text(json.dumps({**spec, "numTraining": 0}, indent=1))
    return {"train_cases": train, "test_cases": test, "nn_name": nn_name, **folders}


def run(cmd: list[str], log: Path, env: dict | None = None) -> float:
    """Run ``cmd`` with output to ``log``; seconds of wall time. A failure raises with the log's tail."""
    started = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run([str(c) for c in cmd], stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({done.returncode}); {log}:\n{tail}")
    return seconds


def evaluate(pred: Path, folders: dict, regions: bool, out: Path, log: Path) -> dict:
    """``medseg evaluate`` of ``pred`` against the test labels; per class: Dice and HD95 mean, CI, n."""
    test = folders["test"]
    cmd = [BIN / "medseg", "evaluate", pred, test / "labelsTs", "-o", out, "--no-plots"]
    cmd += ["--regions", "dataset"] if regions else ["--dataset-json", test / "dataset.json"]
    run(cmd, log)
    summary = json.loads((out / "summary.json").read_text())
    return {cls: {metric: summary["metrics"][cls][metric] for metric in ("dice", "hd95")}
            for cls in summary["metrics"]}


def run_medseg(name: str, folders: dict, budget: str, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    configuration = DATASETS[name]["configuration"]
    medseg = BIN / "medseg"
    plan_s = run([medseg, "plan", folders["train"], "--budget", budget, "-o", out / "plans.json"], out / "plan.log")
    train_s = run([medseg, "train", folders["train"], "-c", configuration, "-f", "all", "-o", out / "model",
                   "--budget", budget, "-p", out / "plans.json"], out / "train.log")
    log = json.loads((out / "model" / "fold_all" / "training_log.json").read_text())
    last = log["history"][-1] if log["history"] else {}
    plan = json.loads((out / "plans.json").read_text())
    config = plan["configurations"][configuration]
    predict_s = run([medseg, "predict", "-i", folders["test"] / "imagesTs", "-o", out / "pred", "-m", out / "model"],
                    out / "predict.log")
    return {
        "configuration": configuration, "patch_size": config.get("patch_size"), "batch_size": config.get("batch_size"),
        "iterations": last.get("iteration", 0), "epochs": last.get("epoch", 0),
        "train_seconds": last.get("elapsed"), "final_lr": last.get("lr"),
        "outside_budget_seconds": {"plan": round(plan_s, 1),
                                   "train_command_minus_loop": round(train_s - (last.get("elapsed") or 0), 1)},
        "predict_seconds_per_case": round(predict_s / len(folders["test_cases"]), 2),
        "metrics": evaluate(out / "pred", folders, DATASETS[name]["regions"], out / "evaluation", out / "evaluate.log"),
    }


def _training_log(model: Path, fold: str) -> dict:
    log = json.loads((model / f"fold_{fold}" / "training_log.json").read_text())
    return log["history"][-1] if log["history"] else {}


def run_medseg_cascade(name: str, folders: dict, budget: str, out: Path) -> dict:
    """The cascade at one budget: the 3d_lowres folds share half of it, 3d_cascade_fullres fold all the rest."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    medseg = BIN / "medseg"
    plan_s = run([medseg, "plan", folders["train"], "--budget", budget, "-o", out / "plans.json"], out / "plan.log")
    plan = json.loads((out / "plans.json").read_text())
    if "3d_cascade_fullres" not in plan["configurations"]:
        fullres = plan["configurations"].get("3d_fullres", {})
        reasons = [d["reason"] for d in fullres.get("decisions", []) if d["field"] == "3d_lowres"]
        return {"not_planned": reasons[0] if reasons else "no 3d configuration"}
    folds = min(5, len(folders["train_cases"]))
    seconds = parse_budget(budget)
    lowres_budget, cascade_budget = seconds / (2 * folds), seconds / 2
    lowres, cascade = out / "lowres", out / "cascade"
    common = ["-p", out / "plans.json", "--preprocessed", out / "preprocessed"]
    lowres_s = 0.0
    for fold in range(folds):
        lowres_s += run([medseg, "train", folders["train"], "-c", "3d_lowres", "-f", fold, "-o", lowres,
                         "--budget", f"{lowres_budget:.0f}s", *common], out / f"train_lowres_{fold}.log")
    cascade_s = run([medseg, "train", folders["train"], "-c", "3d_cascade_fullres", "-f", "all", "-o", cascade,
                     "--budget", f"{cascade_budget:.0f}s", "--previous-stage", lowres, *common],
                    out / "train_cascade.log")
    stages = {f"lowres_fold_{fold}": _training_log(lowres, str(fold)) for fold in range(folds)}
    stages["cascade_all"] = _training_log(cascade, "all")
    loops = sum(entry.get("elapsed") or 0 for entry in stages.values())
    predict_s = run([medseg, "predict", "-i", folders["test"] / "imagesTs", "-o", out / "pred", "-m", cascade],
                    out / "predict.log")
    configs = plan["configurations"]
    return {
        "configuration": "3d_lowres folds + 3d_cascade_fullres", "folds": folds,
        "patch_size": {c: configs[c]["patch_size"] for c in ("3d_lowres", "3d_cascade_fullres")},
        "batch_size": {c: configs[c]["batch_size"] for c in ("3d_lowres", "3d_cascade_fullres")},
        "target_spacing": {c: configs[c]["target_spacing"] for c in ("3d_lowres", "3d_cascade_fullres")},
        "stage_budget_seconds": {"lowres_fold": round(lowres_budget, 1), "cascade": round(cascade_budget, 1)},
        "iterations": sum(entry.get("iteration", 0) for entry in stages.values()),
        "stages": {k: {"iterations": v.get("iteration", 0), "train_seconds": v.get("elapsed")}
                   for k, v in stages.items()},
        "train_seconds": round(loops, 1),
        "outside_budget_seconds": {"plan": round(plan_s, 1),
                                   "train_commands_minus_loops": round(lowres_s + cascade_s - loops, 1)},
        "predict_seconds_per_case": round(predict_s / len(folders["test_cases"]), 2),
        "metrics": evaluate(out / "pred", folders, DATASETS[name]["regions"], out / "evaluation", out / "evaluate.log"),
    }


def run_nnunet(name: str, folders: dict, budget_seconds: float, work: Path, out: Path,
               schedule: str = "epochs") -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    configuration, nn_name = DATASETS[name]["configuration"], folders["nn_name"]
    roots = {key: work / "nnunet" / key for key in ("raw", "preprocessed", "results")}
    shutil.rmtree(roots["preprocessed"] / nn_name, ignore_errors=True)
    shutil.rmtree(roots["results"] / nn_name, ignore_errors=True)
    env = {**os.environ, "nnUNet_raw": str(roots["raw"]), "nnUNet_preprocessed": str(roots["preprocessed"]),
           "nnUNet_results": str(roots["results"])}
    prep_s = run([BIN / "nnUNetv2_plan_and_preprocess", "-d", DATASETS[name]["task_id"], "-c", configuration,
                  "-np", "2", "--verify_dataset_integrity"], out / "plan_and_preprocess.log", env)
    train_s = run([sys.executable, TRAINER, "train", nn_name, configuration, budget_seconds, schedule],
                  out / "train.log", env)
    model = roots["results"] / nn_name / f"nnUNetTrainerBudget__nnUNetPlans__{configuration}"
    record = json.loads((model / "fold_all" / "budget_run.json").read_text())
    pred = out / "pred"
    predict_s = run([sys.executable, TRAINER, "predict", model, folders["test"] / "imagesTs", pred],
                    out / "predict.log", env)
    meta = out / "predict_meta"  # nnU-Net writes its plans and arguments beside the labels
    meta.mkdir()
    for path in pred.glob("*.json"):
        path.rename(meta / path.name)
    return {
        "configuration": configuration, "patch_size": record["patch_size"], "batch_size": record["batch_size"],
        "iterations": record["steps"], "epochs": record["epochs_completed"], "cut_mid_epoch": record["cut_mid_epoch"],
        "train_seconds": record["train_seconds"], "final_lr": record["final_lr"], "initial_lr": record["initial_lr"],
        "schedule": schedule,
        "outside_budget_seconds": {"plan_and_preprocess": round(prep_s, 1),
                                   "trainer_setup": record["setup_seconds"],
                                   "train_command_minus_loop": round(train_s - record["train_seconds"], 1)},
        "predict_seconds_per_case": round(predict_s / len(folders["test_cases"]), 2),
        "metrics": evaluate(pred, folders, DATASETS[name]["regions"], out / "evaluation", out / "evaluate.log"),
    }


def _cell(stats: dict, digits: int) -> str:
    """``mean [ci_low, ci_high]`` over the finite values, with the count of infinite ones (empty masks)."""
    mean, low, high = stats.get("mean"), stats.get("ci_low"), stats.get("ci_high")
    if mean is None or mean != mean:
        text = "n/a"
    else:
        text = f"{mean:.{digits}f}"
        if low is not None and high is not None and low == low and high == high:
            text += f" [{low:.{digits}f}, {high:.{digits}f}]"
    return text + (f" ({stats['n_inf']} inf)" if stats.get("n_inf") else "")


def table(results: dict) -> str:
    lines = ["| dataset | tool | class | Dice [95% CI] | HD95 px/mm [95% CI] | steps | train s | predict s/case |",
             "|---|---|---|---|---|---|---|---|"]
    for name, tools in results.items():
        for tool, entry in tools.items():
            if "error" in entry:
                lines.append(f"| {name} | {tool} | failed: {entry['error'][:80]} | | | | | |")
                continue
            if "not_planned" in entry:
                lines.append(f"| {name} | {tool} | not planned: {entry['not_planned'][:100]} | | | | | |")
                continue
            for cls, stats in entry["metrics"].items():
                lines.append(f"| {name} | {tool} | {cls} | {_cell(stats['dice'], 3)} | {_cell(stats['hd95'], 1)} | "
                             f"{entry['iterations']} | {entry['train_seconds']} | "
                             f"{entry['predict_seconds_per_case']} |")
    return "\n".join(lines)


def entry_name(tool: str, args: argparse.Namespace) -> str:
    """The results entry of ``tool``: ``nnunet_budget_schedule`` for nnU-Net under ``--nnunet-schedule budget``,
    then ``--entry-suffix``."""
    schedule = "_budget_schedule" if tool == "nnunet" and args.nnunet_schedule == "budget" else ""
    return f"{tool}{schedule}{args.entry_suffix}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(MAIN_DATASETS), choices=list(DATASETS))
    parser.add_argument("--budget", default="20m", help="training wall-clock budget per tool and dataset, e.g. 20m")
    parser.add_argument("--work", type=Path, default=Path("/tmp/medseg_pipeline"), help="work folder (symlinks, "
                        "caches, models, predictions)")
    parser.add_argument("--only", choices=TOOLS, help="run one tool only")
    parser.add_argument("--test-cases", type=int, help="score only the first N held-out cases (smoke runs only)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, help="torch threads per child process (default: torch's own)")
    parser.add_argument("--nnunet-schedule", choices=("epochs", "budget"), default="epochs",
                        help="nnU-Net's learning rate: its per-epoch poly schedule (default), or the poly rule "
                             "driven by the fraction of the budget spent (entry nnunet_budget_schedule)")
    parser.add_argument("--entry-suffix", default="", help="appended to each tool's entry name, e.g. _2h for a "
                        "run at another budget beside the 20-minute ones")
    args = parser.parse_args()
    if args.threads:
        os.environ.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))  # the children's
    work = args.work.resolve()
    budget_seconds = parse_budget(args.budget)
    results = json.loads(args.output.read_text()).get("results", {}) if args.output.is_file() else {}
    for name in args.datasets:
        folders = build_folders(name, work, args.test_cases)
        for tool in (args.only,) if args.only else TOOLS:
            if tool == "medseg_cascade" and DATASETS[name]["configuration"] == "2d":
                continue  # a cascade is a 3D pair of configurations
            load_start = os.getloadavg()
            started = datetime.now(timezone.utc)
            print(f"[{started:%H:%M:%S}] {name} {tool} (budget {args.budget}, load {load_start[0]:.1f})", flush=True)
            out = work / name / entry_name(tool, args)
            try:
                if tool == "medseg":
                    entry = run_medseg(name, folders, args.budget, out)
                elif tool == "medseg_cascade":
                    entry = run_medseg_cascade(name, folders, args.budget, out)
                else:
                    entry = run_nnunet(name, folders, budget_seconds, work, out, args.nnunet_schedule)
            except RuntimeError as error:
                entry = {"error": str(error)}
                print(error, file=sys.stderr)
            entry.update(budget=args.budget, budget_seconds=budget_seconds,
                         train_cases=len(folders["train_cases"]), test_cases=folders["test_cases"],
                         all_test_cases=not args.test_cases,
                         date=f"{started:%Y-%m-%d %H:%M} UTC",
                         machine=f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                         load_average_start=[round(x, 2) for x in load_start],
                         load_average_end=[round(x, 2) for x in os.getloadavg()],
                         threads=args.threads or "default", work=str(out))
            if args.output.is_file():  # another run may have written its entries meanwhile
                results = json.loads(args.output.read_text()).get("results", {})
            results.setdefault(name, {})[entry_name(tool, args)] = entry
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps({"benchmark": "pipeline: medseg vs nnU-Net v2 at equal CPU budget",
                                               "results": results}, indent=1) + "\n")
    print(table({name: results[name] for name in args.datasets if name in results}))


if __name__ == "__main__":
    main()
