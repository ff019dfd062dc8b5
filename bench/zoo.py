"""Benchmark: every network of the zoo through the same pipeline, at the same wall-clock training budget on this CPU.

One plan (``medseg plan --budget``) of the training cases, then for each network ``medseg train -f all --network
NAME --budget`` on that plan (the network is fitted to the plan's patch; its activation memory and step time are
measured to refit batch size and steps), ``medseg predict`` on the held-out images and ``medseg evaluate``
against their labels. The split is ``bench/pipeline.py``'s (folders of symlinks under ``--work``):

  isbi2012_em      train on cases 0-17, test on 18-23 (2d), every 2D-capable registry network by default
  brats2013_mini   train on the first 3 cases, test on the 4th (3d_fullres), scored on the BraTS regions

    python bench/zoo.py --budget 10m                                      # all 2D networks, ~2.5 h on 2 cores
    python bench/zoo.py --budget 10m --networks unet swin_unetr           # some of them
    python bench/zoo.py --dataset brats2013_mini --budget 10m --networks umamba
    python bench/zoo.py --budget 30s --networks unet --work /tmp/zoo_smoke                 # smoke run

Writes ``bench/results/zoo.json`` (merged per network with what is there):
``{"results": {"<network>": {"dice", "hd95", "steps", "params", ...}}}`` for isbi2012_em and
``{"results_3d": {"brats2013_mini": {"<network>": {...}}}}``, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import BIN, DATASETS, ROOT, build_folders, evaluate, parse_budget, run  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "zoo.json"
NOT_IN_PIPELINE = {"unet_valid": "unpadded: its logits are smaller than its input",
                   "timm_unet": "needs the optional timm package"}


def default_networks(dims: int) -> list[str]:
    from medseg.nets import list_models

    return [n for n in list_models(spatial_dims=dims) if n not in NOT_IN_PIPELINE]


def parameters(model: Path) -> int:
    """Parameters of the trained network, counted from its weights file (buffers such as norm statistics
    included)."""
    from safetensors import safe_open

    with safe_open(str(model / "fold_all" / "weights.safetensors"), "pt") as handle:
        return sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())


def run_network(name: str, network: str, folders: dict, plans: Path, budget: str, out: Path,
                options: list[str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    configuration = DATASETS[name]["configuration"]
    medseg = BIN / "medseg"
    sets = [a for option in options for a in ("--set", option)]
    train_s = run([medseg, "train", folders["train"], "-c", configuration, "-f", "all", "-o", out / "model",
                   "--budget", budget, "-p", plans, "--network", network, *sets], out / "train.log")
    log = json.loads((out / "model" / "fold_all" / "training_log.json").read_text())
    last = log["history"][-1] if log["history"] else {}
    config = json.loads((out / "model" / "plans.json").read_text())["configurations"][configuration]
    predict_s = run([medseg, "predict", "-i", folders["test"] / "imagesTs", "-o", out / "pred", "-m", out / "model"],
                    out / "predict.log")
    metrics = evaluate(out / "pred", folders, DATASETS[name]["regions"], out / "evaluation", out / "evaluate.log")
    steps = int(last.get("iteration", 0))
    seconds = float(last.get("elapsed") or 0.0)
    foreground = [m for c, m in metrics.items() if c not in ("0", "background")]
    return {
        "dice": float(sum(m["dice"]["mean"] for m in foreground) / len(foreground)),
        "hd95": float(sum(m["hd95"]["mean"] for m in foreground) / len(foreground)),
        "steps": steps, "params": parameters(out / "model"),
        "seconds_per_step": round(seconds / steps, 3) if steps else None, "train_seconds": round(seconds, 1),
        "batch_size": config["batch_size"], "patch_size": config["patch_size"], "options": options,
        "train_command_minus_loop_seconds": round(train_s - seconds, 1),
        "predict_seconds_per_case": round(predict_s / len(folders["test_cases"]), 2), "metrics": metrics,
    }


def table(results: dict) -> str:
    lines = ["| network | Dice | HD95 | steps | parameters | s/step | batch |", "|---|---|---|---|---|---|---|"]
    for network, r in sorted(results.items(), key=lambda item: -item[1]["dice"]):
        lines.append(f"| {network} | {r['dice']:.3f} | {r['hd95']:.1f} | {r['steps']} | {r['params'] / 1e6:.2f} M | "
                     f"{r['seconds_per_step']} | {r['batch_size']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="isbi2012_em", choices=["isbi2012_em", "brats2013_mini"])
    parser.add_argument("--networks", nargs="*", help="default: every network the dataset's dimensionality allows")
    parser.add_argument("--budget", default="10m")
    parser.add_argument("--work", type=Path, default=Path("/tmp/medseg_zoo"))
    parser.add_argument("--set", dest="options", action="append", default=[],
                        help="NETWORK:net.KEY=JSON, an option for one network (repeatable)")
    args = parser.parse_args()
    dims = 3 if args.dataset == "brats2013_mini" else 2
    networks = args.networks or default_networks(dims)
    folders = build_folders(args.dataset, args.work)
    plans = args.work / args.dataset / "plans.json"
    if not plans.is_file():
        run([BIN / "medseg", "plan", folders["train"], "--budget", args.budget, "-o", plans],
            args.work / args.dataset / "plan.log")
    stored = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    section = stored.setdefault("results", {}) if dims == 2 else \
        stored.setdefault("results_3d", {}).setdefault(args.dataset, {})
    for network in networks:
        options = [o.split(":", 1)[1] for o in args.options if o.split(":", 1)[0] == network]
        print(f"{network}: training {args.budget} ...", flush=True)
        try:
            section[network] = run_network(args.dataset, network, folders, plans, args.budget,
                                           args.work / args.dataset / network, options)
        except RuntimeError as error:
            print(f"{network} failed: {error}", flush=True)
            continue
        section[network].update(budget=args.budget, budget_seconds=parse_budget(args.budget),
                                date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                machine=f"{platform.machine()}, {os.cpu_count()} cores",
                                load_average=[round(x, 2) for x in os.getloadavg()])
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(stored, indent=1) + "\n")
        print(table({network: section[network]}).splitlines()[-1], flush=True)
    print(table(section))


if __name__ == "__main__":
    main()
