"""medseg's plan beside nnU-Net v2's own plan, for every dataset in ../shared/data.

Runs nnU-Net's fingerprint extraction and default ExperimentPlanner (nnunetv2, the bench extra) in a subprocess on a
temporary nnUNet_raw copy made of symlinks, and medseg's planner on the same dataset twice: without a time budget
and 8 GB of memory (nnU-Net's setting: an 8 GB GPU, a fixed 1000-epoch schedule) and fitted to this CPU with a
20-minute budget. Writes bench/results/plans.json and prints a markdown table for BENCHMARKS.md.

    python bench/plans.py            # about 2-4 minutes on 2 cores
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DATASETS = {"isbi2012_em": 501, "drive": 502, "cvc_clinicdb": 503, "brats2013_mini": 504}


def nnunet_plan(name: str, dataset_id: int, work: Path) -> dict:
    raw = work / "raw" / f"Dataset{dataset_id:03d}_{name}"
    raw.mkdir(parents=True)
    for sub in ("imagesTr", "labelsTr"):
        (raw / sub).symlink_to(DATA / name / sub)
    (raw / "dataset.json").write_text((DATA / name / "dataset.json").read_text())
    env = {**os.environ, "nnUNet_raw": str(work / "raw"), "nnUNet_preprocessed": str(work / "pre"),
           "nnUNet_results": str(work / "results"), "nnUNet_n_proc_DA": "2"}
    subprocess.run([sys.executable, "-c", "from nnunetv2.experiment_planning.plan_and_preprocess_entrypoints "
                    "import plan_and_preprocess_entry; plan_and_preprocess_entry()",
                    "-d", str(dataset_id), "--no_pp", "-np", "2"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return json.loads((work / "pre" / raw.name / "nnUNetPlans.json").read_text())


def summarise_nnunet(plans: dict) -> dict:
    out = {}
    for name, config in plans["configurations"].items():
        if "patch_size" not in config:
            continue
        arch = config["architecture"]["arch_kwargs"]
        out[name] = {"patch_size": config["patch_size"], "batch_size": config["batch_size"],
                     "spacing": [round(s, 4) for s in config["spacing"]],
                     "stages": arch["n_stages"], "features": arch["features_per_stage"],
                     "normalization": config["normalization_schemes"], "use_mask": config["use_mask_for_norm"],
                     "batch_dice": config.get("batch_dice")}
    return out


def summarise_medseg(plan) -> dict:
    return {name: {"patch_size": c.patch_size, "batch_size": c.batch_size,
                   "spacing": [round(s, 4) for s in c.target_spacing], "stages": len(c.network["strides"]),
                   "features": c.network["features_per_stage"], "normalization": [n.scheme for n in c.normalization],
                   "use_mask": [n.use_mask for n in c.normalization], "steps": c.num_iterations}
            for name, c in plan.configurations.items()}


def main() -> None:
    from medseg.planning import compute_fingerprint
    from medseg.planning.budget import calibrate
    from medseg.planning.planner import Budget, plan_dataset

    results = {"date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "datasets": {}}
    flops = {d: calibrate("cpu", d)["flops_per_second"] for d in (2, 3)}
    results["calibrated_flops_per_second"] = flops
    with tempfile.TemporaryDirectory() as tmp:
        for name, dataset_id in DATASETS.items():
            if not (DATA / name).is_dir():
                continue
            fingerprint = compute_fingerprint(DATA / name)
            dims = len(fingerprint.median_spacing)
            unlimited = plan_dataset(fingerprint, Budget("cpu", 8 * 10**9, None, flops[dims]))
            budgeted = plan_dataset(fingerprint, Budget("cpu", 8 * 10**9, 1200.0, flops[dims]))
            results["datasets"][name] = {
                "nnunet": summarise_nnunet(nnunet_plan(name, dataset_id, Path(tmp))),
                "medseg_8GB_no_budget": summarise_medseg(unlimited),
                "medseg_cpu_20min": summarise_medseg(budgeted),
            }
            print(f"planned {name}", file=sys.stderr)
    out = ROOT / "bench" / "results" / "plans.json"
    out.write_text(json.dumps(results, indent=1))
    print(markdown(results))


def markdown(results: dict) -> str:
    lines = ["| dataset | configuration | planner | patch | batch | spacing (mm) | stages | features | "
             "normalisation |", "|---|---|---|---|---|---|---|---|---|"]
    for name, plans in results["datasets"].items():
        configurations = sorted(set(plans["nnunet"]) | set(plans["medseg_8GB_no_budget"]))
        for config in configurations:
            for planner in ("nnunet", "medseg_8GB_no_budget", "medseg_cpu_20min"):
                row = plans[planner].get(config)
                if row is None:
                    lines.append(f"| {name} | {config} | {planner} | (not planned) | | | | | |")
                    continue
                features = f"{row['features'][0]}..{row['features'][-1]}"
                norm = ",".join(sorted(set(row["normalization"]))) + (" (mask)" if any(row["use_mask"]) else "")
                lines.append(f"| {name} | {config} | {planner} | {row['patch_size']} | {row['batch_size']} | "
                             f"{row['spacing']} | {row['stages']} | {features} | {norm} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
