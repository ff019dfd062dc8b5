"""Benchmark: few-shot efficient fine-tuning (FSEFT, the seed's protocol) of medseg models on this project's data.

For each source -> target pair: a base model trained on the source's training block (``medseg train -f all``
at ``--base-budget``), then for 1, 5 and 10 shots (labelled target cases drawn from the target's training block,
5 draws with seeds 0..4) every method of ``medseg adapt`` at ``--budget``, and ``scratch``: the same
architecture randomly initialised and trained in full on the same shots with the same plan and budget (``medseg
adapt --method full`` from a copy of the base folder whose weights are re-drawn, so nothing else differs).
Each adapted model predicts the target's held-out block (``Predictor.from_folder``, no mirroring TTA) and is
scored with ``medseg.metrics`` Dice per foreground label, averaged over labels and cases; the table gives the
mean over draws.

  pair                      source split                     target: shot pool / held-out block (sorted ids)
  isbi2012_em -> monuseg    cases 0-17 (2d)                  first 16 / last 5
  cvc_clinicdb -> drive     first 80 % (blocks) (2d)         first 15 / last 5
  brats2013_mini -> hippocampus  all 4 (3d_fullres)          first 80 % / last 20 %

Channel counts that differ (EM grey -> RGB, FLAIR + T1c -> T1) get a first convolution initialised from the
base's by channel means and trained with the head (``medseg.nets.adapted.channel_mean_stem``).

    python bench/adapt.py --work /tmp/medseg_adapt      # the protocol: per pair 3 x 5 x 9 = 135 runs of
                                                         # --budget (1m) + their held-out predictions: about
                                                         # 4-5 h a pair on 2 cores; each finished run is kept
                                                         # (work/<pair>/scores/), so a rerun resumes
    python bench/adapt.py --pairs "isbi2012_em->monuseg" --shots 1 --draws 1 --budget 5s --base-budget 40s \\
        --test-cases 2 --work /tmp/adapt_smoke --output /tmp/adapt_smoke/adapt.json        # smoke run

Writes ``bench/results/adapt.json`` (merged per pair with what is there):
``{"results": {"<source>-><target>": {"<method>": {"<shots>": {"dice": float, "trainable_params": int,
"dice_draws": [...]}}}}, "runs": {...}}`` and prints a table (methods x shots rows, pairs as columns).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "adapt.json"
METHODS = ("full", "decoder", "linear-probe", "bitfit", "affine-norm", "lora", "adapter", "spatial-adapter")


def _first(count):
    return lambda ids: (ids[:count], ids[count:])


def _fraction(share):
    return lambda ids: (ids[:int(share * len(ids))], ids[int(share * len(ids)):])


PAIRS = {
    "isbi2012_em->monuseg": {"configuration": "2d", "source": _first(18), "target": _first(16)},
    "cvc_clinicdb->drive": {"configuration": "2d", "source": _fraction(0.8), "target": _first(15)},
    "brats2013_mini->hippocampus": {"configuration": "3d_fullres", "source": _first(4), "target": _fraction(0.8)},
}


def parse_budget(text: str) -> float:
    from medseg.planning.budget import parse_duration

    return parse_duration(text)


def case_ids(name: str) -> list[str]:
    ending = json.loads((DATA / name / "dataset.json").read_text())["file_ending"]
    return sorted(p.name[: -len(ending)] for p in (DATA / name / "labelsTr").iterdir() if p.name.endswith(ending))


def link_dataset(name: str, cases: list[str], folder: Path) -> Path:
    """``folder``: a dataset of symlinks to ``cases`` of ``DATA/name`` (images, labels and the extra ``*Tr``
    folders), its ``dataset.json`` with their count; fresh each run, the shared data never written."""
    source = DATA / name
    spec = json.loads((source / "dataset.json").read_text())
    ending, wanted = spec["file_ending"], set(cases)
    shutil.rmtree(folder, ignore_errors=True)
    for sub in (p for p in source.iterdir() if p.is_dir() and p.name.endswith("Tr")):
        (folder / sub.name).mkdir(parents=True)
        for path in sub.iterdir():
            stem = path.name[: -len(ending)] if path.name.endswith(ending) else None
            case = stem.rsplit("_", 1)[0] if stem and sub.name == "imagesTr" else stem
            if case in wanted:
                (folder / sub.name / path.name).symlink_to(path)
    (folder / "dataset.json").write_text(json.dumps({**spec, "numTraining": len(cases)}, indent=1))
    return folder


def train_base(pair: str, source: Path, work: Path, budget: float, threads: int | None = None) -> Path:
    """The source model (fold all), reused when ``work`` already has it."""
    from medseg.training.service import train_fold

    model = work / pair.replace("->", "_to_") / "base"
    if not (model / "fold_all" / "weights.safetensors").is_file():
        shutil.rmtree(model, ignore_errors=True)
        train_fold(source, PAIRS[pair]["configuration"], "all", model_dir=model, budget_seconds=budget,
                   validate=False, progress=False, train_config={"threads": threads})
    return model


def random_copy(base: Path, folder: Path, seed: int) -> Path:
    """``base``'s folder with its weights re-drawn (``torch.manual_seed(seed)``): the scratch run's start."""
    import torch

    from medseg.config.model_folder import read_model_spec, write_fold_weights
    from medseg.nets.from_folder import build_network

    if not (folder / "fold_all" / "weights.safetensors").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for name in ("model.json", "plans.json", "dataset_spec.json"):
            shutil.copy2(base / name, folder / name)
        torch.manual_seed(seed)
        write_fold_weights(folder / "fold_all", build_network(read_model_spec(base)).state_dict())
    return folder


def score(model: Path, test: Path, cases: list[str]) -> float:
    """Mean over ``cases`` of ``medseg.metrics.mean_label_dice`` over the foreground labels (a label absent from
    both prediction and reference counts 1, medseg's convention)."""
    from medseg.data.layout import open_dataset
    from medseg.inference import Predictor
    from medseg.metrics import mean_label_dice

    predictor = Predictor.from_folder(model, tta=False)
    data = open_dataset(test)
    foreground = sorted(data.spec.foreground_labels.values())
    per_case = []
    for case_id in cases:
        case = data.case(case_id)
        labels = predictor.predict(data.read_image(case)).array[0]
        reference = data.read_label(case).array[0]
        per_case.append(mean_label_dice(labels, reference, foreground))
    return float(np.mean(per_case))


def run_pair(pair: str, args, work: Path) -> dict:
    from medseg.adapt.finetune import adapt_model

    source_name, target_name = pair.split("->")
    pair_dir = work / pair.replace("->", "_to_")
    source_train, _ = PAIRS[pair]["source"](case_ids(source_name))
    pool, held_out = PAIRS[pair]["target"](case_ids(target_name))
    held_out = held_out[: args.test_cases] if args.test_cases else held_out
    source = link_dataset(source_name, source_train, pair_dir / "source")
    target = link_dataset(target_name, pool, pair_dir / "target_pool")
    test = link_dataset(target_name, held_out, pair_dir / "target_test")
    started = time.perf_counter()
    base = train_base(pair, source, work, parse_budget(args.base_budget), args.threads)
    base_seconds = time.perf_counter() - started
    table: dict[str, dict[str, dict]] = {}
    train_options = {"max_iterations": args.max_iterations} if args.max_iterations else {}
    if args.threads:
        train_options["threads"] = args.threads
    for shots in args.shots:
        for method in [*args.methods, *(["scratch"] if args.scratch else [])]:
            draws, trainable = [], None
            for draw in range(args.draws):
                done = pair_dir / "scores" / f"{method}_{shots}_{draw}.json"
                if done.is_file():  # resumable: a finished run keeps its score
                    kept = json.loads(done.read_text())
                    draws.append(kept["dice"])
                    trainable = kept["trainable_params"]
                    continue
                out = pair_dir / "runs" / f"{method}_{shots}_{draw}"
                shutil.rmtree(out, ignore_errors=True)
                start = random_copy(base, pair_dir / f"random_{draw}", draw) if method == "scratch" else base
                result = adapt_model(start, target, method="full" if method == "scratch" else method, shots=shots,
                                     output=out, seed=draw, budget_seconds=parse_budget(args.budget),
                                     train_options=train_options, progress=False)
                scoring = time.perf_counter()
                draws.append(round(score(out, test, held_out), 4))
                trainable = result.counts.trainable
                print(f"{pair} {method} {shots} shot(s) draw {draw}: Dice {draws[-1]:.3f}, {trainable} trainable, "
                      f"{result.steps} steps in {result.seconds:.0f} s, scored in "
                      f"{time.perf_counter() - scoring:.0f} s", flush=True)
                done.parent.mkdir(parents=True, exist_ok=True)
                done.write_text(json.dumps({"dice": draws[-1], "trainable_params": int(trainable),
                                            "steps": result.steps, "seconds": round(result.seconds, 1)}))
                if not args.keep:
                    shutil.rmtree(out, ignore_errors=True)
            table.setdefault(method, {})[str(shots)] = {"dice": round(float(np.mean(draws)), 4),
                                                        "trainable_params": int(trainable), "dice_draws": draws}
    run = {"source_cases": len(source_train), "shot_pool": len(pool), "held_out": held_out,
           "configuration": PAIRS[pair]["configuration"], "base_budget": args.base_budget,
           "base_seconds": round(base_seconds, 1), "budget": args.budget, "draws": args.draws,
           "max_iterations": args.max_iterations, "threads": args.threads}
    return {"table": table, "run": run}


def print_table(results: dict) -> None:
    pairs = list(results)
    print("method / shots | " + " | ".join(f"{p} Dice (trainable)" for p in pairs))
    methods = sorted({m for p in pairs for m in results[p]}, key=lambda m: (m == "scratch", m))
    for method in methods:
        for shots in sorted({s for p in pairs for s in results[p].get(method, {})}, key=int):
            cells = []
            for p in pairs:
                cell = results[p].get(method, {}).get(shots)
                cells.append(f"{cell['dice']:.3f} ({cell['trainable_params']:,})" if cell else "-")
            print(f"{method} / {shots} | " + " | ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 5, 10])
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--no-scratch", dest="scratch", action="store_false", help="leave out training from scratch")
    parser.add_argument("--budget", default="1m", help="training budget of each adaptation (and scratch run)")
    parser.add_argument("--base-budget", default="20m", help="training budget of each source model")
    parser.add_argument("--max-iterations", type=int, help="cap the steps of each adaptation (smoke runs only)")
    parser.add_argument("--test-cases", type=int, help="score only the first N held-out cases (smoke runs only)")
    parser.add_argument("--threads", type=int, help="torch threads of every adaptation (default: measured)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/medseg_adapt"))
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep every adapted folder under --work")
    args = parser.parse_args()
    existing = json.loads(args.output.read_text()) if args.output.is_file() else {"results": {}, "runs": {}}
    for pair in args.pairs:
        done = run_pair(pair, args, args.work)
        existing["results"][pair] = done["table"]
        machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
        existing.setdefault("runs", {})[pair] = {**done["run"], "date": datetime.now(timezone.utc).isoformat(
            timespec="seconds"), "machine": machine,
            "load": os.getloadavg()[0], "command": " ".join(sys.argv)}
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(existing, indent=1))
    print_table(existing["results"])


if __name__ == "__main__":
    main()
