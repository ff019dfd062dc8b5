"""Benchmark: sliding-window prediction with Gaussian weighting and mirroring TTA, medseg vs nnU-Net vs MONAI.

One randomly initialised 3D ``PlanUNet`` (random weights do not change the speed; seeded, saved once with
safetensors) predicts one preprocessed BraTS 2013 volume (``brats_pat0003``, FLAIR + T1c, already z-scored) with
the same patch, step 0.5, Gaussian importance (sigma = 1/8 patch) and mirroring over all three axes (8 passes):

  medseg   ``Predictor.predict_preprocessed`` (all 8 mirrored copies of a window in one forward batch)
  nnU-Net  ``nnUNetPredictor.predict_sliding_window_return_logits`` built around the same torch module
  medseg-bf16  the same with ``precision="bfloat16"`` (autocast; not an equal setting: nnU-Net runs float32 on
           CPU and float16 autocast on GPU)
  MONAI    ``sliding_window_inference(mode="gaussian", sigma_scale=0.125, overlap=0.5)`` once per flip, by hand,
           with ``sw_batch_size=8`` (the same forward batch as medseg)

Each method runs in a fresh subprocess pinned to ``--threads`` cores that reports its wall time, ``ru_maxrss``
and the RSS growth during the prediction (high-water mark reset just before it); methods run round-robin for
``--rounds`` rounds and the best time is kept. The argmax of the three outputs is compared.

Memory run: ``medseg predict`` (the CLI, end to end: read, preprocess, predict, write) on a 512x512x300 int16
CT-like NIfTI with a 3D model folder, at the default memory limit, streamed (``--memory-limit 256MB``) and not
(``--memory-limit 100GB``); peak RSS of the child process. This run uses a two-stage PlanUNet with 1x1x1 convolutions (features 2, 4) and no TTA
to finish in minutes on 2 cores: memory is set by the volume-sized arrays, not by the network's speed.

    python bench/predict.py              # writes bench/results/predict.json (10-15 minutes on 2 shared cores)
    python bench/predict.py --only-imported    # only the imported-nnU-Net row, merged into predict.json
    python bench/predict.py --only-onnxruntime # only the onnxruntime row (bench/predict_onnx.py), merged likewise

Imported row (``bench/predict_imported.py``): a real nnU-Net v2 model trained for ``--imported-budget`` seconds on
``hippocampus`` (3d_fullres, fold all), imported with ``medseg import nnunet``; nnU-Net's predictor and medseg's
``medseg predict`` on the same held-out cases with the same settings: voxel agreement, Dice between the two
predictions per label, seconds per case of both (``speedup.medseg_vs_nnunet_imported``).

The defaults (BraTS volume scaled by 0.32 to 50x77x77, 48^3 patch, features 8-64) keep three rounds of four
methods within minutes on 2 CPU cores; ``--zoom 1 --patch 64,64,64 --rounds 1`` is the full 155x240x240 volume.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from metrics import _reset_peak_rss, _status_mb  # bench/metrics.py (this folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
BRATS = ROOT.parent / "shared" / "data" / "brats2013_mini"
RESULTS = ROOT / "bench" / "results" / "predict.json"
METHODS = ("medseg", "nnunet", "monai", "medseg-bf16")
NUM_CLASSES = 5  # BraTS 2013 labels 0-4


def _network_config(features: list[int], in_channels: int, num_classes: int, kernel: int = 3) -> dict:
    return dict(spatial_dims=3, in_channels=in_channels, num_classes=num_classes, features_per_stage=features,
                kernel_sizes=[kernel] * len(features), strides=[1] + [2] * (len(features) - 1),
                deep_supervision=False)


def prepare(folder: Path, zoom: float, features: list[int]) -> dict:
    """Write the preprocessed volume (``data.npy``) and the network (``net.json`` + ``net.safetensors``)."""
    import torch
    from safetensors.torch import save_file
    from scipy import ndimage

    from medseg.data import open_dataset
    from medseg.nets.plan_unet import PlanUNet

    dataset = open_dataset(BRATS)
    image = dataset.read_image(dataset.case("brats_pat0003")).array.astype(np.float32)
    if zoom != 1.0:
        image = np.stack([ndimage.zoom(c, zoom, order=1, grid_mode=True, mode="nearest") for c in image])
    np.save(folder / "data.npy", image)
    config = _network_config(features, image.shape[0], NUM_CLASSES)
    torch.manual_seed(0)
    save_file(PlanUNet.from_config(config).state_dict(), str(folder / "net.safetensors"))
    (folder / "net.json").write_text(json.dumps(config))
    return {"shape": list(image.shape), "network": config}


def _load_network(folder: Path):
    from safetensors.torch import load_file

    from medseg.nets.plan_unet import PlanUNet

    network = PlanUNet.from_config(json.loads((folder / "net.json").read_text()))
    network.load_state_dict(load_file(str(folder / "net.safetensors")))
    return network.eval()


def _predict(method: str, network, data, patch: list[int]):
    import torch

    if method in ("medseg", "medseg-bf16"):
        from medseg.config import Configuration, Normalization
        from medseg.inference import Predictor

        config = Configuration(name="3d_fullres", spatial_dims=3, target_spacing=[1.0] * 3, median_shape=[],
                               normalization=[Normalization("none")] * data.shape[0], resampling={},
                               patch_size=patch, batch_size=2, network=network.config, estimated_memory_bytes=0,
                               estimated_step_seconds=0.0, num_iterations=0)
        precision = "bfloat16" if method == "medseg-bf16" else "float32"
        return Predictor([network], config, list(range(NUM_CLASSES)), tta=True,
                         precision=precision).predict_preprocessed(data)
    if method == "nnunet":
        from types import SimpleNamespace

        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                    perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                    allow_tqdm=False)
        # what manual_initialization sets, without building nnU-Net plans around our network
        predictor.network = network
        predictor.configuration_manager = SimpleNamespace(patch_size=list(patch))
        predictor.label_manager = SimpleNamespace(num_segmentation_heads=NUM_CLASSES)
        predictor.allowed_mirroring_axes = (0, 1, 2)
        predictor.list_of_parameters = [network.state_dict()]
        return predictor.predict_sliding_window_return_logits(data)
    if method == "monai":
        from monai.inferers import sliding_window_inference

        x = data[None]
        total = None
        with torch.inference_mode():
            for combo in [c for r in range(4) for c in itertools.combinations((2, 3, 4), r)]:
                xin = x.flip(list(combo)) if combo else x
                out = sliding_window_inference(xin, roi_size=patch, sw_batch_size=8, predictor=network, overlap=0.5,
                                               mode="gaussian", sigma_scale=0.125)
                out = out.flip(list(combo)) if combo else out
                total = out if total is None else total + out
        return total[0] / 8
    raise ValueError(method)


def worker(method: str, folder: Path, patch: list[int], threads: int) -> dict:
    """In a fresh process: load data and network, predict once, report time, memory and the argmax."""
    import warnings

    warnings.simplefilter("ignore")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:threads]))
    import torch

    torch.set_num_threads(threads)
    if method == "monai":
        import monai.inferers  # noqa: F401  - imports are not part of the timed work
    elif method == "nnunet":
        import nnunetv2.inference.predict_from_raw_data  # noqa: F401
    else:
        import medseg.inference  # noqa: F401
    network = _load_network(folder)
    data = torch.from_numpy(np.load(folder / "data.npy"))
    rss_before = _status_mb("VmRSS")
    reset = _reset_peak_rss()
    start = time.perf_counter()
    output = _predict(method, network, data, patch)
    seconds = time.perf_counter() - start
    peak = _status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.save(folder / f"argmax_{method}.npy", output.float().argmax(0).numpy().astype(np.uint8))
    return {"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "prediction_rss_growth_mb": peak - rss_before, "output_dtype": str(output.dtype)}


def _subprocess(command: list[str]) -> tuple[dict, float]:
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return json.loads(out.stdout.strip().splitlines()[-1]), children


def _ct_volume(path: Path, shape: tuple[int, int, int]) -> None:
    """An int16 CT-like volume: air (-1000) around an elliptic body (0 +- noise) with a brighter 'organ'."""
    from medseg.io import Image, write_image

    z, y, x = shape
    yy, xx = np.ogrid[:y, :x]
    body = ((yy - y / 2) / (0.42 * y)) ** 2 + ((xx - x / 2) / (0.45 * x)) ** 2 <= 1
    organ = ((yy - 0.45 * y) / (0.1 * y)) ** 2 + ((xx - 0.55 * x) / (0.12 * x)) ** 2 <= 1
    rng = np.random.default_rng(0)
    volume = np.full(shape, -1000, dtype=np.int16)
    for k in range(z):
        plane = np.where(body, 40, -1000) + np.where(organ, 80, 0) + rng.integers(-20, 20, size=(y, x))
        volume[k] = plane.astype(np.int16)
    write_image(Image.from_array(volume, spacing=(1.0, 0.8, 0.8)), path)


def _memory_model(folder: Path, patch: list[int], classes: int = 3, median_shape: tuple[int, ...] = (300, 512, 512)
                  ) -> None:
    import torch
    from safetensors.torch import save_file

    from medseg.config import Configuration, DatasetSpec, Normalization, Plan
    from medseg.nets.plan_unet import PlanUNet
    from medseg.config.model_folder import ModelSpec, plan_network_spec, write_segmentation_model

    network = _network_config([2, 4], 1, classes, kernel=1)  # 1x1x1 convolutions: cheap; memory is not the network's
    config = Configuration(name="3d_fullres", spatial_dims=3, target_spacing=[1.0, 0.8, 0.8],
                           median_shape=list(median_shape),
                           normalization=[Normalization("ct", clip=[-1000.0, 1000.0], mean=0.0, std=300.0)],
                           resampling={}, patch_size=patch, batch_size=2, network=network, estimated_memory_bytes=1,
                           estimated_step_seconds=0.1, num_iterations=1)
    labels = {"background": 0, "body": 1, "organ": 2} if classes == 3 else \
        {"background": 0, **{f"structure_{k}": k for k in range(1, classes)}}
    plan = Plan("ct_like", ["CT"], labels, "cpu", None, 0, {}, {"3d_fullres": config})
    write_segmentation_model(folder, ModelSpec("segmentation", plan_network_spec(network), list(range(classes)),
                                               "3d_fullres"),
                             plan, DatasetSpec("ct_like", ["CT"], labels, ".nii"))
    torch.manual_seed(0)
    (folder / "fold_0").mkdir()
    save_file(PlanUNet.from_config(network).state_dict(), str(folder / "fold_0" / "weights.safetensors"))


MEMORY_MODES = (("default --memory-limit 2GB (accumulator fits: whole volume)", "2GB"),
                ("streamed (--memory-limit 256MB)", "256MB"),
                ("whole volume (--memory-limit 100GB)", "100GB"))


def memory_run(folder: Path, shape: tuple[int, int, int], patch: list[int], threads: int, classes: int = 3,
               modes: tuple = MEMORY_MODES) -> list[dict]:
    """``medseg predict`` on the large volume with a model of ``classes`` classes, in each of ``modes`` (streamed
    and not), each in a fresh process (peak RSS)."""
    if not (folder / "ct.nii").is_file():
        _ct_volume(folder / "ct.nii", shape)
    shutil.rmtree(folder / "model", ignore_errors=True)
    _memory_model(folder / "model", patch, classes, shape)
    results = []
    # 3 classes: the whole-volume accumulator is (3 + 1) x 78.6 M x 4 B = 1.26 GB, under the default 2 GB limit
    for name, limit in modes:
        shutil.rmtree(folder / "out", ignore_errors=True)
        code = ("import os, resource, sys, json, time\n"
                f"os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:{threads}]))\n"
                "import torch\n"
                f"torch.set_num_threads({threads})\n"
                "from medseg.cli.app import app\n"
                "start = time.perf_counter()\n"
                "try:\n"
                f"    app(['predict', '-i', '{folder / 'ct.nii'}', '-o', '{folder / 'out'}', '-m', "
                f"'{folder / 'model'}', '--no-tta', '--memory-limit', '{limit}'])\n"
                "except SystemExit as e:\n"
                "    assert not e.code, e.code\n"
                "print(json.dumps({'seconds': time.perf_counter() - start, "
                "'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n")
        result, _ = _subprocess([sys.executable, "-c", code])
        result["mode"] = name
        result["classes"] = classes
        results.append(result)
    return results


def memory_by_classes(args: argparse.Namespace) -> None:
    """The streamed memory run at each of ``args.only_memory`` class counts, replacing ``memory_run``'s streamed
    entries of those counts in ``args.output`` (the other entries kept; those without ``classes`` had 3)."""
    shape = tuple(int(s) for s in args.memory_shape.split(","))
    result = json.loads(args.output.read_text()) if args.output.is_file() else {}
    entries = [dict(m, classes=m.get("classes", 3)) for m in result.get("memory_run", [])]
    with tempfile.TemporaryDirectory(prefix="medseg_bench_memory_") as tmp:
        for classes in args.only_memory:
            new = memory_run(Path(tmp), shape, [64, 128, 128], args.threads, classes, modes=MEMORY_MODES[1:2])
            for m in new:
                print(f"memory run {classes} classes {m['mode']}: {m['seconds']:.1f} s, peak RSS "
                      f"{m['peak_rss_mb']:.0f} MB", flush=True)
            entries = [m for m in entries if not (m["classes"] == classes and m["mode"] == new[0]["mode"])]
            entries += [dict(m, shape=list(shape), patch=[64, 128, 128],
                             date=datetime.now(timezone.utc).isoformat(timespec="minutes"),
                             load=os.getloadavg()) for m in new]
    result["memory_run"] = entries
    args.output.write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=METHODS)
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--zoom", type=float, default=0.32, help="scale of the BraTS volume (1.0: 155x240x240)")
    parser.add_argument("--features", default="8,16,32,64", help="PlanUNet features per stage")
    parser.add_argument("--patch", default="48,48,48")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-shape", default="300,512,512", help="z,y,x of the memory run ('' to skip it)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--only-imported", action="store_true", help="run only the imported-nnU-Net row and merge "
                                                                         "it into --output")
    parser.add_argument("--skip-imported", action="store_true", help="leave the imported-nnU-Net row out")
    parser.add_argument("--imported-work", type=Path, default=Path(tempfile.gettempdir()) / "medseg_nnunet_import",
                        help="nnU-Net folders of the imported row (a model trained there before is reused)")
    parser.add_argument("--imported-budget", type=float, default=180.0, help="nnU-Net training budget, seconds")
    parser.add_argument("--imported-retrain", action="store_true", help="train the nnU-Net model again")
    parser.add_argument("--only-onnxruntime", action="store_true", help="run only the onnxruntime row "
                        "(bench/predict_onnx.py) and merge it into --output")
    parser.add_argument("--skip-onnxruntime", action="store_true", help="leave the onnxruntime row out")
    parser.add_argument("--only-memory", type=int, nargs="+", metavar="CLASSES", help="run only the streamed memory "
                        "run, with models of these class counts (e.g. 3 15 50), and merge it into --output")
    args = parser.parse_args()
    if args.only_memory:
        memory_by_classes(args)
        return
    patch = [int(p) for p in args.patch.split(",")]
    if args.worker:
        print(json.dumps(worker(args.worker, args.folder, patch, args.threads)))
        return
    if args.only_onnxruntime:
        result = json.loads(args.output.read_text()) if args.output.is_file() else {}
        _add_onnx_row(result, args, patch)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
        return
    if args.only_imported:
        result = json.loads(args.output.read_text()) if args.output.is_file() else {"speedup": {}}
        _add_imported_row(result, args)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
        return
    started = datetime.now(timezone.utc)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="medseg_bench_predict_") as tmp:
        folder = Path(tmp)
        setup = prepare(folder, args.zoom, [int(f) for f in args.features.split(",")])
        runs: dict[str, list[dict]] = {m: [] for m in METHODS}
        for _ in range(args.rounds):
            for method in METHODS:
                result, _ = _subprocess([sys.executable, __file__, "--worker", method, "--folder", str(folder),
                                         "--patch", args.patch, "--threads", str(args.threads)])
                runs[method].append(result)
                print(f"{method}: {result['seconds']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)
        argmax = {m: np.load(folder / f"argmax_{m}.npy") for m in METHODS}
        agreement = {f"medseg_vs_{m}": float(np.mean(argmax["medseg"] == argmax[m])) for m in METHODS[1:]}
        agreement["medseg-bf16_vs_nnunet"] = float(np.mean(argmax["medseg-bf16"] == argmax["nnunet"]))
        best = {m: min(r["seconds"] for r in runs[m]) for m in METHODS}
        memory = []
        if args.memory_shape:
            shape = tuple(int(s) for s in args.memory_shape.split(","))
            memory = memory_run(folder, shape, [64, 128, 128], args.threads)
            memory = [dict(m, shape=list(shape), patch=[64, 128, 128]) for m in memory]
            for m in memory:
                print(f"memory run {m['mode']}: {m['seconds']:.1f} s, peak RSS {m['peak_rss_mb']:.0f} MB", flush=True)
    result = {
        "command": "python bench/predict.py " + " ".join(sys.argv[1:]),
        "date": started.isoformat(timespec="minutes"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "threads": args.threads, "load_before": load_before, "load_after": os.getloadavg(),
                    "python": platform.python_version()},
        "setup": dict(setup, patch=patch, step=0.5, gaussian_sigma="patch/8", mirroring="all 3 axes (8 passes)",
                      weights="random (seeded); speed does not depend on the values"),
        "runs": runs, "best_seconds": best,
        "speedup": {**{f"medseg_vs_{m}": best[m] / best["medseg"] for m in ("nnunet", "monai")},
                    **{f"medseg-bf16_vs_{m}": best[m] / best["medseg-bf16"] for m in ("nnunet", "monai")}},
        "argmax_agreement": agreement, "memory_run": memory,
    }
    if not args.skip_imported:
        _add_imported_row(result, args)
    if not args.skip_onnxruntime:
        _add_onnx_row(result, args, patch)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"best_seconds": best, "speedup": result["speedup"], "agreement": agreement}, indent=2))


def _add_imported_row(result: dict, args: argparse.Namespace) -> None:
    """Run the imported-nnU-Net row and put it into ``result`` (``imported_nnunet`` and one speedup key)."""
    from predict_imported import imported_row  # bench/predict_imported.py

    started = datetime.now(timezone.utc)
    load_before = os.getloadavg()
    row = imported_row(args.imported_work, args.imported_budget, retrain=args.imported_retrain,
                       rounds=args.rounds if not args.only_imported else 1)
    row.update(command="python bench/predict.py " + " ".join(sys.argv[1:]), date=started.isoformat(timespec="minutes"),
               machine={"cpu": platform.machine(), "cores": os.cpu_count(), "load_before": load_before,
                        "load_after": os.getloadavg(), "python": platform.python_version()})
    result["imported_nnunet"] = row
    seconds = row["seconds_per_case"]
    result.setdefault("speedup", {})["medseg_vs_nnunet_imported"] = seconds["nnunet"] / seconds["medseg"]
    print(json.dumps({k: row[k] for k in ("voxel_agreement", "dice_medseg_vs_nnunet", "seconds_per_case")},
                     indent=2), flush=True)


def _add_onnx_row(result: dict, args: argparse.Namespace, patch: list[int]) -> None:
    """The onnxruntime row (``bench/predict_onnx.py``) into ``result``: ``onnxruntime``,
    ``argmax_agreement.medseg_vs_onnxruntime`` and ``speedup.onnxruntime_vs_torch``."""
    from predict_onnx import merge_row, onnx_row  # bench/predict_onnx.py

    work = Path(tempfile.gettempdir()) / "medseg_bench_onnx"
    merge_row(result, onnx_row(work, threads=args.threads, rounds=args.rounds, zoom=args.zoom,
                               features=tuple(int(f) for f in args.features.split(",")), patch=tuple(patch)))


if __name__ == "__main__":
    main()
