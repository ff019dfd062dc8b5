"""Benchmark: promptable segmentation on a CPU — latency per interaction, and quality against classical methods.

Latency (``--latency``): a 256x256 CVC-ClinicDB image, the embedding computed once (timed, median of 5), then
100 interactions (simulated corrective clicks), each timed end to end through ``Segmenter.predict``: prompt
maps, mapping to the model grid, the light decode, the way back to 256x256. Run for the trained model and for
untrained networks of the candidate designs (the cost of a network does not depend on its weights), so the
choice of fusion and width is made on measured numbers.

Quality (``--quality``): the trained model (``medseg train-interactive``), the classical methods (random walker,
marker watershed, GrabCut) driven by the same interaction simulator, and the automatic pipeline model as a
prompt-free reference, on evenly spaced cases of CVC-ClinicDB's held-out block (the last 20 % of case ids, the
block the model did not train on). Dice after 1..N interactions and NoC@80/85/90.

    python bench/interactive.py --model interactive_model --latency
    python bench/interactive.py --model interactive_model --quality --cases 24 --automatic MODEL_FOLDER
    python bench/interactive.py --quality --datasets all --cases 12   # the shipped model on every shared dataset

``--datasets`` (names under ../shared/data, or ``all``) scores each dataset's held-out block and stores it under
``quality_by_dataset`` (without it: CVC-ClinicDB under ``quality``); without ``--model`` the shipped model is
scored. 3D cases are scored on their axial slice with the largest object, as ``medseg eval-interactive`` does.

Writes ``bench/results/interactive.json`` (merged with what is there) and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "interactive.json"
DATASETS = ["isbi2012_em", "drive", "cvc_clinicdb", "brats2013_mini", "monuseg", "hippocampus", "cxr_lungs"]
CANDIDATES = {  # name -> PromptableConfig fields (at the 128 grid unless said)
    "decoder fusion 8-128, grid 128": {"features": [8, 16, 32, 64, 128], "fusion": "decoder"},
    "input fusion 8-128, grid 128": {"features": [8, 16, 32, 64, 128], "fusion": "input"},
    "decoder fusion 16-160, grid 128": {"features": [16, 32, 64, 128, 160], "fusion": "decoder"},
    "decoder fusion 8-128, grid 256": {"features": [8, 16, 32, 64, 128], "fusion": "decoder", "grid": [256, 256]},
    "input fusion 8-128, grid 256": {"features": [8, 16, 32, 64, 128], "fusion": "input", "grid": [256, 256]},
}


def holdout_ids(dataset: Path, train_fraction: float = 0.8) -> list[str]:
    from medseg.data import open_dataset
    from medseg.interactive.slices import split_case_ids

    return split_case_ids([c.case_id for c in open_dataset(dataset).cases], train_fraction)[1]


def evenly(ids: list[str], count: int | None) -> list[str]:
    if not count or count >= len(ids):
        return ids
    return [ids[i] for i in np.linspace(0, len(ids) - 1, count).round().astype(int)]


def latency(segmenter, image: np.ndarray, target: np.ndarray, interactions: int = 100) -> dict:
    """Embed (median of 5) and ``interactions`` timed predictions of simulated clicks on one image."""
    from medseg.interactive.simulate import corrective_prompt, initial_prompts

    embeds = []
    for _ in range(5):
        started = time.perf_counter()
        embedding = segmenter.embed(image)
        embeds.append(time.perf_counter() - started)
    rng = np.random.default_rng(0)
    times, prompts, previous = [], initial_prompts("clicks", target, rng), None
    for index in range(interactions + 3):
        started = time.perf_counter()
        previous = segmenter.predict(embedding, prompts, previous)
        if index >= 3:  # the first calls warm up the allocator
            times.append(time.perf_counter() - started)
        prompt = corrective_prompt("clicks", previous >= 0.5, target, rng)
        if prompt is None or len(prompts) >= 20:  # a fresh object: start again (users rarely exceed 20 clicks)
            prompts, previous = initial_prompts("clicks", target, rng), None
        else:
            prompts.add(prompt)
    return {"embed_ms": round(1000 * statistics.median(embeds), 1),
            "interaction_ms_median": round(1000 * statistics.median(times), 2),
            "interaction_ms_p90": round(1000 * float(np.percentile(times, 90)), 2), "interactions": len(times)}


def run_latency(model: Path | None, threads: int) -> dict:
    from medseg.interactive.cases import dataset_cases
    from medseg.nets.promptable_unet import PromptableConfig, PromptableUNet
    from medseg.interactive.predictor import PromptableSegmenter, load_segmenter

    dataset = DATA / "cvc_clinicdb"
    case = holdout_ids(dataset)[0]
    _, image, target = next(dataset_cases([dataset], cases=case))
    torch.set_num_threads(threads)
    out = {"image": f"cvc_clinicdb/{case}", "image_shape": list(image.shape), "torch_threads": threads,
           "designs": {}}
    if model is not None:
        segmenter = load_segmenter(model)
        out["trained_model"] = {"folder": str(model), "network": segmenter.network.config.to_dict(),
                                **latency(segmenter, image, target)}
        print(f"trained model: {out['trained_model']}", flush=True)
    for name, fields in CANDIDATES.items():
        torch.manual_seed(0)
        segmenter = PromptableSegmenter(PromptableUNet(PromptableConfig(**fields)))
        out["designs"][name] = latency(segmenter, image, target)
        print(f"{name}: {out['designs'][name]}", flush=True)
    return out


def run_quality(model: Path | None, cases: int | None, max_interactions: int, automatic: Path | None,
                baselines: list[str], dataset: Path = DATA / "cvc_clinicdb",
                modes: tuple[str, ...] | None = None) -> dict:
    from medseg.interactive.baselines import AutomaticSegmenter, create_baseline
    from medseg.interactive.cases import dataset_cases
    from medseg.interactive.evaluate import evaluate_interactive
    from medseg.interactive.predictor import load_segmenter

    ids = evenly(holdout_ids(dataset), cases)
    selection = ",".join(ids)
    options = {"modes": modes} if modes else {}
    model_result = evaluate_interactive({"medseg": load_segmenter(model)}, dataset_cases([dataset], cases=selection),
                                        max_interactions=max_interactions, **options)
    others = {name: create_baseline(name) for name in baselines}
    if automatic is not None:
        others["automatic"] = AutomaticSegmenter.from_folder(automatic)
    other_result = evaluate_interactive(others, dataset_cases([dataset], cases=selection),
                                        modes=("clicks", "box+clicks"), max_interactions=max_interactions)
    rows = []
    for result in (model_result, other_result):
        for s in result.summaries():
            rows.append({"method": s.method, "mode": s.mode, "cases": s.cases,
                         "dice_at": {str(k + 1): round(d, 4) for k, d in enumerate(s.mean_dice)},
                         "noc": s.noc, "failures": s.failures, "embed_ms": round(1000 * s.embed_seconds, 1),
                         "interaction_ms": round(1000 * s.predict_seconds, 1)})
            print(f"{s.method:14s} {s.mode:11s} Dice@1 {s.mean_dice[0]:.3f} Dice@{len(s.mean_dice)} "
                  f"{s.mean_dice[-1]:.3f} NoC@85 {s.noc['85']:.2f} NoF@85 {s.failures['85']}", flush=True)
    return {"dataset": dataset.name, "split": "held-out block: last 20 % of sorted case ids",
            "cases": ids, "max_interactions": max_interactions, "model": str(model or "shipped"),
            "automatic": None if automatic is None else str(automatic), "summaries": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="a trained interactive model folder")
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--quality", action="store_true")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cases", type=int, default=0, help="held-out cases, evenly spaced (0: all 122)")
    parser.add_argument("--max-interactions", type=int, default=20)
    parser.add_argument("--baselines", default="watershed,grabcut,random_walker")
    parser.add_argument("--automatic", type=Path, help="an automatic pipeline model folder (reference)")
    parser.add_argument("--datasets", nargs="+", default=None, help="shared dataset names, or all")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = json.loads(args.output.read_text()) if args.output.is_file() else {}
    stamp = {"date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
             "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                        f"torch {torch.__version__}", "load_average_start": [round(x, 2) for x in os.getloadavg()]}
    if args.latency:
        results["latency"] = {**stamp, **run_latency(args.model, args.threads),
                              "load_average_end": [round(x, 2) for x in os.getloadavg()]}
    baselines = [b for b in args.baselines.split(",") if b]
    if args.quality and args.datasets:
        names = DATASETS if args.datasets == ["all"] else args.datasets
        by_dataset = results.setdefault("quality_by_dataset", {})
        for name in names:
            print(f"--- {name}", flush=True)
            by_dataset[name] = {**stamp, **run_quality(args.model, args.cases or None, args.max_interactions,
                                                       args.automatic, baselines, DATA / name,
                                                       ("clicks", "box+clicks")),
                                "load_average_end": [round(x, 2) for x in os.getloadavg()]}
            args.output.write_text(json.dumps(results, indent=1) + "\n")  # each dataset as it ends
    elif args.quality:
        results["quality"] = {**stamp, **run_quality(args.model, args.cases or None, args.max_interactions,
                                                     args.automatic, baselines),
                              "load_average_end": [round(x, 2) for x in os.getloadavg()]}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
