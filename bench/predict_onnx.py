"""The ``onnxruntime`` row of ``bench/predict.py``: medseg's prediction with the torch engine and with the
onnxruntime engine (``medseg export`` + ``Predictor`` over onnxruntime sessions), same settings, same threads.

Two parts, each engine in a fresh subprocess pinned to ``--threads`` cores (round-robin, best of ``--rounds``):

  network   the BraTS volume and random-weight PlanUNet of ``bench/predict.py`` (``prepare``), exported with a
            dynamic batch; ``Predictor.predict_preprocessed`` (sliding window, step 0.5, Gaussian, mirroring over
            3 axes) with the torch network and with the onnxruntime session: seconds and argmax agreement
  pipeline  models trained briefly by ``medseg train`` on the shared data (``hippocampus`` 3d_fullres, 400 steps
            on the first 20 case ids; ``isbi2012_em`` 2d, 60 steps on em_000..em_007), or the model folders given
            by ``--model DATASET=FOLDER``, exported with a dynamic batch; ``Predictor.predict`` end to end
            (preprocess, sliding window, TTA, restore) on held-out cases (the last 4 hippocampus ids,
            em_018..em_020): seconds per case of both engines, the fraction of voxels whose labels agree, and the
            agreement on the voxels that either engine calls foreground (so an all-background model shows)

Both engines' workers start with medseg's runtime defaults (``OMP_WAIT_POLICY=PASSIVE``, as ``medseg predict``);
onnxruntime's threads do not spin either (``medseg.inference.onnx_engine.session_options``).

Merged into ``--output`` (``bench/results/predict.json``): ``onnxruntime`` (this row), ``argmax_agreement.
medseg_vs_onnxruntime`` (network part) and ``speedup.onnxruntime_vs_torch`` (torch seconds / onnxruntime seconds,
network part; > 1: onnxruntime faster).

    python bench/predict_onnx.py                 # ~15 minutes on 2 shared cores; trained models are reused
    python bench/predict_onnx.py --model hippocampus=/tmp/medseg_nnunet_import/imported   # bench/predict_imported.py's
    python bench/predict.py --only-onnxruntime   # the same, from the main benchmark
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "predict.json"
ENGINES = ("torch", "onnxruntime")
BIN = Path(sys.executable).parent
DATASETS = {  # name: configuration, training case ids, held-out case ids (from the sorted ids), training steps
    "hippocampus": ("3d_fullres", slice(0, 20), slice(-4, None), 400),
    "isbi2012_em": ("2d", slice(0, 8), slice(18, 21), 60),
}


def _pin(threads: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:threads]))
    import torch

    torch.set_num_threads(threads)


def _subprocess(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *map(str, args)], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- network part ---------------------------------------------------------------------------------------------

def network_worker(engine: str, folder: Path, patch: list[int]) -> dict:
    """One engine predicts the preprocessed BraTS volume with the bench network; seconds and the argmax."""
    import torch

    from medseg.config import Configuration, Normalization
    from medseg.inference import Predictor
    from medseg.inference.onnx_engine import OnnxNetwork, open_session
    from predict import NUM_CLASSES, _load_network  # bench/predict.py

    network = _load_network(folder)
    data = torch.from_numpy(np.load(folder / "data.npy"))
    if engine == "onnxruntime":
        network = OnnxNetwork(open_session(folder / "net.onnx"), spatial_dims=3, in_channels=data.shape[0],
                              num_classes=NUM_CLASSES, input_name="image", output_name="logits", batch=None)
    config = Configuration(name="3d_fullres", spatial_dims=3, target_spacing=[1.0] * 3, median_shape=[],
                           normalization=[Normalization("none")] * data.shape[0], resampling={}, patch_size=patch,
                           batch_size=2, network={}, estimated_memory_bytes=0, estimated_step_seconds=0.0,
                           num_iterations=0)
    start = time.perf_counter()
    output = Predictor([network], config, list(range(NUM_CLASSES)), tta=True).predict_preprocessed(data)
    seconds = time.perf_counter() - start
    np.save(folder / f"argmax_{engine}.npy", output.argmax(0).numpy().astype(np.uint8))
    return {"seconds": seconds}


def network_part(folder: Path, zoom: float, features: list[int], patch: list[int], threads: int,
                 rounds: int) -> dict:
    from medseg.export.onnx_network import export_network
    from predict import _load_network, prepare  # bench/predict.py

    setup = prepare(folder, zoom, features)
    start = time.perf_counter()
    exported = export_network(_load_network(folder), [2, setup["shape"][0], *patch], folder / "net.onnx",
                              dynamic=True)
    export_seconds = time.perf_counter() - start
    runs: dict[str, list[float]] = {e: [] for e in ENGINES}
    for _ in range(rounds):
        for engine in ENGINES:
            result = _subprocess(["--network-worker", engine, "--folder", folder, "--patch",
                                  ",".join(map(str, patch)), "--threads", threads])
            runs[engine].append(result["seconds"])
            print(f"network {engine}: {result['seconds']:.1f} s", flush=True)
    argmax = {e: np.load(folder / f"argmax_{e}.npy") for e in ENGINES}
    best = {e: min(v) for e, v in runs.items()}
    return {"setup": dict(setup, patch=patch, step=0.5, mirroring="all 3 axes (8 passes)", export="dynamic batch",
                          opset=exported.opset), "export_seconds": export_seconds, "runs": runs,
            "best_seconds": best, "time_ratio_onnxruntime_over_torch": best["onnxruntime"] / best["torch"],
            "argmax_agreement": float(np.mean(argmax["torch"] == argmax["onnxruntime"]))}


# --- pipeline part --------------------------------------------------------------------------------------------

def _case_ids(name: str) -> tuple[list[str], str]:
    spec = json.loads((DATA / name / "dataset.json").read_text())
    ending = spec["file_ending"]
    ids = sorted(p.name[: -len(ending)] for p in (DATA / name / "labelsTr").iterdir() if p.name.endswith(ending))
    return ids, ending


def train_model(name: str, work: Path, threads: int) -> Path:
    """A model of ``name`` trained by ``medseg train`` for its steps on its training ids (reused when ``work``
    has one)."""
    configuration, train, _, steps = DATASETS[name]
    model = work / name / "model"
    if (model / "fold_0" / "weights.safetensors").is_file():
        return model
    ids, ending = _case_ids(name)
    dataset = work / name / "data"
    for sub in ("imagesTr", "labelsTr"):
        (dataset / sub).mkdir(parents=True, exist_ok=True)
    spec = json.loads((DATA / name / "dataset.json").read_text())
    spec["numTraining"] = len(ids[train])
    (dataset / "dataset.json").write_text(json.dumps(spec))
    for case in ids[train]:
        for target, source in ((f"imagesTr/{case}_0000{ending}", f"imagesTr/{case}_0000{ending}"),
                               (f"labelsTr/{case}{ending}", f"labelsTr/{case}{ending}")):
            if not (dataset / target).exists():
                (dataset / target).symlink_to(DATA / name / source)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for command in ([BIN / "medseg", "plan", dataset, "-o", work / name / "plans.json", "--budget", "60s",
                     "--overwrite"],
                    [BIN / "medseg", "train", dataset, "-c", configuration, "-f", "0", "-o", model, "-p",
                     work / name / "plans.json", "--budget", "30m", "--max-iterations", steps, "--iterations-per-epoch",
                     steps // 2, "--workers", "0"]):
        done = subprocess.run([str(c) for c in command], capture_output=True, text=True, env=env, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return model


def pipeline_worker(engine: str, model: Path, cases: list[str], out: Path) -> dict:
    """One engine predicts the image files ``cases`` end to end; labels saved as ``out/<i>.npy``."""
    from medseg.inference.onnx_engine import engine_predictor
    from medseg.io import read_image

    start = time.perf_counter()
    predictor = engine_predictor(model, engine)
    load = time.perf_counter() - start
    seconds = []
    for index, case in enumerate(cases):
        image = read_image(case)
        start = time.perf_counter()
        labels = predictor.predict(image).array
        seconds.append(time.perf_counter() - start)
        np.save(out / f"{engine}_{index}.npy", labels)
    return {"load_seconds": load, "seconds": seconds}


def pipeline_part(name: str, work: Path, threads: int, rounds: int, model: Path | None = None) -> dict:
    """``model`` (default: one trained here) exported, both engines on the held-out cases of ``name``."""
    from medseg.config.model_folder import read_model_spec
    from medseg.export import export_model

    _, _, held_out, _ = DATASETS[name]
    model = model or train_model(name, work, threads)
    ids, ending = _case_ids(name)
    cases = [str(DATA / name / "imagesTr" / f"{case}_0000{ending}") for case in ids[held_out]]
    exported = work / name / "onnx"
    start = time.perf_counter()
    report = export_model(model, exported, dynamic=True, overwrite=True)
    export_seconds = time.perf_counter() - start
    out = work / name / "labels"
    out.mkdir(exist_ok=True)
    runs: dict[str, list[float]] = {e: [] for e in ENGINES}
    for _ in range(rounds):
        for engine in ENGINES:
            result = _subprocess(["--pipeline-worker", engine, "--folder", exported if engine == "onnxruntime"
                                  else model, "--cases", json.dumps(cases), "--out", out, "--threads", threads])
            runs[engine].append(sum(result["seconds"]) / len(cases))
            print(f"{name} {engine}: {runs[engine][-1]:.2f} s per case", flush=True)
    same = total = foreground = foreground_same = 0
    per_case = []
    for index in range(len(cases)):
        a, b = np.load(out / f"torch_{index}.npy"), np.load(out / f"onnxruntime_{index}.npy")
        same, total = same + int(np.sum(a == b)), total + a.size
        either = (a != 0) | (b != 0)  # agreement where it is not trivial: voxels either engine calls foreground
        foreground, foreground_same = foreground + int(either.sum()), foreground_same + int((a == b)[either].sum())
        per_case.append(float(np.mean(a == b)))
    best = {e: min(v) for e, v in runs.items()}
    spec = read_model_spec(model)
    return {"model": {"folder": str(model), "configuration": report.configuration, "network": spec.network.name,
                      "features": spec.network.options.get("features_per_stage"), "card": spec.card.to_dict()},
            "cases": [Path(c).name for c in cases], "export_seconds": export_seconds,
            "max_abs_logit_diff": [f.max_abs_diff for f in report.folds], "runs_seconds_per_case": runs,
            "best_seconds_per_case": best, "time_ratio_onnxruntime_over_torch": best["onnxruntime"] / best["torch"],
            "voxel_agreement": same / total, "voxel_agreement_per_case": per_case,
            "foreground_voxel_fraction": foreground / total,
            "agreement_on_foreground": foreground_same / foreground if foreground else None}


# --- the row --------------------------------------------------------------------------------------------------

def onnx_row(work: Path, *, threads: int = 2, rounds: int = 2, zoom: float = 0.32,
             features: tuple[int, ...] = (8, 16, 32, 64), patch: tuple[int, ...] = (48, 48, 48),
             models: dict[str, Path] | None = None) -> dict:
    """Both parts; ``work`` keeps the trained models (reused by later runs); ``models``: dataset name -> an
    existing model folder to use instead of training one."""
    import onnxruntime
    import torch

    started = datetime.now(timezone.utc)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="medseg_bench_onnx_") as tmp:
        network = network_part(Path(tmp), zoom, list(features), list(patch), threads, rounds)
    pipeline = {name: pipeline_part(name, work, threads, rounds, (models or {}).get(name)) for name in DATASETS}
    return {"command": "python " + " ".join([f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
            "date": started.isoformat(timespec="minutes"),
            "machine": {"cpu": platform.machine(), "cores": os.cpu_count(), "threads": threads,
                        "load_before": load_before, "load_after": os.getloadavg(),
                        "python": platform.python_version(), "torch": torch.__version__,
                        "onnxruntime": onnxruntime.__version__},
            "network": network, "pipeline": pipeline}


def parse_models(values: list[str]) -> dict[str, Path]:
    """``["hippocampus=/path/model"]`` -> ``{"hippocampus": Path("/path/model")}``."""
    models = {}
    for value in values:
        name, _, folder = value.partition("=")
        if name not in DATASETS or not folder:
            raise SystemExit(f"--model {value!r}: use DATASET=FOLDER with DATASET one of {', '.join(DATASETS)}")
        models[name] = Path(folder)
    return models


def merge_row(result: dict, row: dict) -> dict:
    """``row`` into a ``predict.json`` result: ``onnxruntime``, ``argmax_agreement.medseg_vs_onnxruntime`` and
    ``speedup.onnxruntime_vs_torch``."""
    result["onnxruntime"] = row
    result.setdefault("argmax_agreement", {})["medseg_vs_onnxruntime"] = row["network"]["argmax_agreement"]
    result.setdefault("speedup", {})["onnxruntime_vs_torch"] = 1.0 / row["network"]["time_ratio_onnxruntime_over_torch"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network-worker", choices=ENGINES)
    parser.add_argument("--pipeline-worker", choices=ENGINES)
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--cases", default="[]")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--patch", default="48,48,48")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "medseg_bench_onnx",
                        help="trained models of the pipeline part (reused when there)")
    parser.add_argument("--model", action="append", default=[], metavar="DATASET=FOLDER",
                        help="use this model folder for a dataset of the pipeline part instead of training one")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    patch = [int(p) for p in args.patch.split(",")]
    if args.network_worker or args.pipeline_worker:
        from medseg.settings import apply_runtime_defaults

        apply_runtime_defaults()  # what medseg predict sets before torch starts (idle OpenMP threads sleep)
        _pin(args.threads)
        if args.network_worker:
            print(json.dumps(network_worker(args.network_worker, args.folder, patch)))
        else:
            print(json.dumps(pipeline_worker(args.pipeline_worker, args.folder, json.loads(args.cases), args.out)))
        return
    row = onnx_row(args.work, threads=args.threads, rounds=args.rounds, patch=tuple(patch),
                   models=parse_models(args.model))
    result = json.loads(args.output.read_text()) if args.output.is_file() else {}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(merge_row(result, row), indent=2) + "\n")
    print(json.dumps({"network": {k: row["network"][k] for k in ("best_seconds", "argmax_agreement")},
                      "pipeline": {n: {k: p[k] for k in ("best_seconds_per_case", "voxel_agreement",
                                                         "agreement_on_foreground")}
                                   for n, p in row["pipeline"].items()}}, indent=2))


if __name__ == "__main__":
    main()
