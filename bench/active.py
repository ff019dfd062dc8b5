"""Active learning on the shared datasets (issue 20, item 6): held-out Dice vs labelled cases for random queries and
the uncertainty (entropy) and diversity (coreset) strategies, several seeds, two datasets.

Per dataset, one ``medseg active`` run (``medseg.active.run_active_learning``): the held-out block is the last 25 %
of the sorted ids (``--test-cases`` of them, evenly spaced, are scored), the pool a seeded draw of ``--pool`` of the
other ids; per seed ``--initial`` random pool cases, then ``--rounds`` rounds of ``--query`` cases each. Every model
is a fold-``all`` ``medseg train`` run of ``--steps`` steps (the budget is set far above, so the load of the machine
does not change how long a model trains). Reported per strategy: the curve (mean and sd over seeds), the area under
it (mean Dice over the labelled counts) and the final Dice, and each strategy's final-Dice gain over random, paired
by seed.

Writes the ``active`` key of ``bench/results/trust.json`` (other keys are kept); the runs live under ``--work`` and
resume when the command is run again.

    nice -n 19 python bench/active.py       # about an hour on 2 quiet cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trust import DATA, RESULTS, write_results  # noqa: E402  (bench/trust.py's helpers)

# A small 2D U-Net (5 stages, 16-128 features, about 0.04 s a step at 128 x 128, batch 4): the plan's own network
# for the budget set below is the 7-stage 32-512 one (2.4 s a step), far too slow for the 60 models of a run.
SMALL_2D = ("2d.patch_size=[128,128]", "2d.batch_size=4", "2d.network.features_per_stage=[16,32,64,128,128]",
            "2d.network.strides=[[1,1],[2,2],[2,2],[2,2],[2,2]]",
            "2d.network.kernel_sizes=[[3,3],[3,3],[3,3],[3,3],[3,3]]")
PLAN_OVERRIDES = {"cvc_clinicdb": SMALL_2D, "cxr_lungs": SMALL_2D, "hippocampus": ("3d_fullres.batch_size=2",)}


def summarise(results: dict) -> dict:
    """Per strategy: the curve, its area (mean Dice over the labelled counts), the final Dice; and the final-Dice
    gain over random paired by seed."""
    summary = {}
    random_final = {seed: rounds[-1]["test_dice"] for seed, rounds in results["runs"].get("random", {}).items()}
    for strategy, line in results["curve"].items():
        finals = {seed: rounds[-1]["test_dice"] for seed, rounds in results["runs"][strategy].items()}
        gains = [finals[s] - random_final[s] for s in finals if s in random_final]
        summary[strategy] = {**line, "area_mean_dice": float(np.mean(line["mean_dice"])),
                             "final_dice": line["mean_dice"][-1], "final_sd": line["sd_dice"][-1],
                             "gain_over_random_final": float(np.mean(gains)) if gains else None,
                             "gain_over_random_per_seed": gains,
                             "query_seconds_mean": float(np.mean([r["query_seconds"] for rounds in
                                                                  results["runs"][strategy].values()
                                                                  for r in rounds[:-1]]))}
    return summary


def main() -> None:
    from medseg.active import ActiveSettings, run_active_learning

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/active_bench"))
    parser.add_argument("--datasets", nargs="*", default=["cvc_clinicdb", "cxr_lungs"])
    parser.add_argument("--strategies", default="random,entropy,coreset")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds FIRST .. FIRST + SEEDS - 1 (several "
                        "processes can share a dataset's seeds; merge their active.json runs)")
    parser.add_argument("--initial", type=int, default=4)
    parser.add_argument("--query", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300, help="training steps of every model")
    parser.add_argument("--pool", type=int, default=60)
    parser.add_argument("--test-cases", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training and prediction (several "
                        "benches side by side on 2 cores oversubscribe them otherwise: 4 s a step instead of 0.05)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    for name in args.datasets:
        start = time.time()
        settings = ActiveSettings(initial=args.initial, query=args.query, rounds=args.rounds,
                                  strategies=tuple(args.strategies.split(",")),
                                  seeds=tuple(range(args.first_seed, args.first_seed + args.seeds)),
                                  budget_seconds=3600.0, max_iterations=args.steps, test_cases=args.test_cases,
                                  pool_size=args.pool, plan_overrides=PLAN_OVERRIDES.get(name, ()),
                                  train_options={"num_workers": 0, "threads": args.threads})
        results = run_active_learning(DATA / name, args.work / name, settings, progress=False)
        measured = {"strategies": summarise(results), "split": results["split"]["rule"],
                    "configuration": results["configuration"],
                    "setup": {**results["settings"], "seconds": round(time.time() - start, 1),
                              "load_average": os.getloadavg(), "platform": platform.platform(),
                              "date": datetime.now(timezone.utc).isoformat(),
                              "command": f"nice -n 19 python bench/active.py --datasets {name} --steps {args.steps} "
                                         f"--seeds {args.seeds} --strategies {args.strategies}"}}
        stored = json.loads(args.output.read_text()) if args.output.is_file() else {}
        stored.setdefault("active", {})[name] = measured
        write_results(stored, args.output)
        for strategy, line in measured["strategies"].items():
            gain = line["gain_over_random_final"]
            print(f"{name} {strategy}: " + "  ".join(f"{n}: {d:.3f}" for n, d in zip(line["labelled"],
                                                                                  line["mean_dice"]))
                  + f"; area {line['area_mean_dice']:.3f}" + ("" if gain is None else f"; final vs random {gain:+.3f}"),
                  flush=True)


if __name__ == "__main__":
    main()
