"""Benchmark: Dice + HD95 + ASSD + NSD on large 3D masks, medseg vs MONAI vs DeepMind surface-distance.

Masks are the whole-tumour label of a BraTS 2013 case (../shared/data/brats2013_mini) resampled (nearest
neighbour, same physical extent) to 256^3 and 512x512x300; the prediction is a perturbed copy (shifted, locally
eroded/dilated, with spurious blobs). Each (library, case) runs in a fresh subprocess pinned to 2 cores, which
reports its wall time and peak memory: ru_maxrss of the whole process (interpreter, library
imports, the two input masks), the RSS growth during the computation (the kernel's high-water mark, reset just
before the computation, minus the RSS then), and tracemalloc's peak (numpy allocations only; torch's are invisible).
The libraries run round-robin for --rounds rounds (a fresh subprocess each time); the best time is kept, and the
largest memory figures.

Pairs that compute the same definitions are compared, and their values are checked to agree:
  medseg (surface="voxel", default)  vs  MONAI             (surface voxels, linear percentile)
  medseg (surface="surfel")          vs  surface-distance  (surfels weighted by area)

    python bench/metrics.py                 # writes bench/results/metrics.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BRATS = ROOT.parent / "shared" / "data" / "brats2013_mini"
RESULTS = ROOT / "bench" / "results" / "metrics.json"
CASES = {"256^3": (256, 256, 256), "512x512x300": (300, 512, 512)}  # array order (z, y, x)
LIBRARIES = ("medseg", "medseg-surfel", "monai", "surface-distance")
TOLERANCE_MM = 1.0
THREADS = 2


def make_case(shape: tuple[int, int, int], folder: Path, seed: int = 0) -> tuple[float, ...]:
    """Write ref.npy / pred.npy (bool, ``shape``) into ``folder``; return the spacing (mm, z y x)."""
    from scipy import ndimage

    from medseg.io import read_image

    image = read_image(BRATS / "labelsTr" / "brats_pat0003.nii.gz")
    labels = image.array[0]
    extent = np.array(labels.shape) * np.array(image.spacing)
    spacing = tuple(float(e / s) for e, s in zip(extent, shape))
    index = [np.minimum(((np.arange(n) + 0.5) * labels.shape[a] / n).astype(np.int64), labels.shape[a] - 1)
             for a, n in enumerate(shape)]
    ref = (labels > 0)[np.ix_(*index)]
    rng = np.random.default_rng(seed)
    box = tuple(slice(max(s.start - 8, 0), s.stop + 8) for s in ndimage.find_objects(ref.astype(np.uint8))[0])
    crop = np.roll(ref[box], (1, 2, -1), axis=(0, 1, 2))
    half = crop.shape[1] // 2  # one half grows, the other shrinks: a realistic, uneven boundary error
    crop[:, :half] = ndimage.binary_dilation(crop[:, :half], iterations=2)
    crop[:, half:] = ndimage.binary_erosion(crop[:, half:], iterations=1)
    for _ in range(5):  # spurious blobs near the tumour
        centre = [int(rng.integers(0, n)) for n in crop.shape]
        crop[tuple(slice(max(c - 3, 0), c + 3) for c in centre)] = True
    pred = np.zeros_like(ref)
    pred[box] = crop
    np.save(folder / "ref.npy", ref)
    np.save(folder / "pred.npy", pred)
    return spacing


def _status_mb(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (resident high-water mark) of this process, in MB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0), so that it measures the computation alone."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _compute(library: str, pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    if library in ("medseg", "medseg-surfel"):
        from medseg.metrics import MetricOptions, binary_metrics

        options = MetricOptions(metrics=("dice", "hd95", "assd", "nsd"), nsd_tolerance=TOLERANCE_MM,
                                surface_mode="surfel" if library == "medseg-surfel" else "voxel", threads=THREADS)
        return binary_metrics(pred, ref, spacing, options)
    if library == "surface-distance":
        import surface_distance as sd

        distances = sd.compute_surface_distances(ref, pred, spacing)
        areas_r, areas_p = distances["surfel_areas_gt"], distances["surfel_areas_pred"]
        pooled = (np.dot(distances["distances_gt_to_pred"], areas_r)
                  + np.dot(distances["distances_pred_to_gt"], areas_p)) / (areas_r.sum() + areas_p.sum())
        return {"dice": float(sd.compute_dice_coefficient(ref, pred)),
                "hd95": float(sd.compute_robust_hausdorff(distances, 95)), "assd": float(pooled),
                "nsd": float(sd.compute_surface_dice_at_tolerance(distances, TOLERANCE_MM))}
    if library == "monai":
        import torch
        from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance
        from monai.metrics import compute_surface_dice

        p, r = torch.from_numpy(pred)[None, None], torch.from_numpy(ref)[None, None]
        dice = compute_dice(p, r, include_background=True)
        hd95 = compute_hausdorff_distance(p, r, percentile=95, spacing=spacing)
        assd = compute_average_surface_distance(p, r, symmetric=True, spacing=spacing)
        nsd = compute_surface_dice(torch.cat([~p, p], 1), torch.cat([~r, r], 1), [TOLERANCE_MM], spacing=spacing)
        return {"dice": float(dice), "hd95": float(hd95), "assd": float(assd), "nsd": float(nsd)}
    raise ValueError(library)


def worker(library: str, folder: Path, spacing: tuple[float, ...]) -> dict:
    """Run in a fresh process: import the library, load the masks, compute once, report time and memory."""
    import warnings

    warnings.simplefilter("ignore")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:THREADS]))
    if library == "monai":
        import torch

        torch.set_num_threads(THREADS)
        import monai.metrics  # noqa: F401  - imports are not part of the timed work
    elif library == "surface-distance":
        import surface_distance  # noqa: F401
    else:
        import edt  # noqa: F401

        import medseg.metrics  # noqa: F401
    pred, ref = np.load(folder / "pred.npy"), np.load(folder / "ref.npy")
    rss_before = _status_mb("VmRSS")
    peak_was_reset = _reset_peak_rss()
    tracemalloc.start()
    start = time.perf_counter()
    values = _compute(library, pred, ref, spacing)
    seconds = time.perf_counter() - start
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    compute_peak = _status_mb("VmHWM") if peak_was_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "compute_rss_growth_mb": compute_peak - rss_before, "tracemalloc_peak_mb": traced_peak,
            "input_mb": (pred.nbytes + ref.nbytes) / 2**20, "values": values}


def _subprocess(library: str, folder: Path, spacing: tuple[float, ...], name: str) -> dict:
    command = [sys.executable, __file__, "--worker", library, str(folder), json.dumps(spacing)]
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{library} on {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _merge(measured: list[dict]) -> dict:
    """Best time over the rounds; the largest memory figures (the conservative side)."""
    merged = dict(measured[0])
    merged["seconds"] = min(m["seconds"] for m in measured)
    merged["all_seconds"] = [m["seconds"] for m in measured]
    for key in ("peak_rss_mb", "compute_rss_growth_mb", "tracemalloc_peak_mb"):
        merged[key] = max(m[key] for m in measured)
    return merged


def run(rounds: int, cases: list[str], libraries: list[str]) -> dict:
    results: dict = {"cases": {}}
    with tempfile.TemporaryDirectory(prefix="medseg-bench-") as tmp:
        for name in cases:
            folder = Path(tmp) / name.replace("^", "")
            folder.mkdir()
            spacing = make_case(CASES[name], folder)
            ref = np.load(folder / "ref.npy")
            entry = {"shape": list(CASES[name]), "spacing_mm": spacing, "ref_voxels": int(ref.sum()),
                     "pred_voxels": int(np.load(folder / "pred.npy").sum()), "libraries": {}}
            del ref
            runs: dict[str, list[dict]] = {library: [] for library in libraries}
            for _ in range(rounds):  # round-robin, so that a shared machine's load hits every library alike
                for library in libraries:
                    runs[library].append(_subprocess(library, folder, spacing, name))
            for library, measured in runs.items():
                entry["libraries"][library] = got = _merge(measured)
                print(f"{name:12s} {library:17s} {got['seconds']:8.2f} s  peak RSS {got['peak_rss_mb']:7.0f} MB  "
                      f"growth {got['compute_rss_growth_mb']:7.0f} MB  {got['values']}", file=sys.stderr)
            entry["ratios"] = _ratios(entry["libraries"])
            results["cases"][name] = entry
    return results


def _ratios(libraries: dict) -> dict:
    """Speed-up (peer time / medseg time) and memory of each comparable pair."""
    out = {}
    for ours, peer in (("medseg", "monai"), ("medseg-surfel", "surface-distance"), ("medseg", "surface-distance")):
        if ours in libraries and peer in libraries:
            a, b = libraries[ours], libraries[peer]
            out[f"{ours} vs {peer}"] = {
                "speedup": b["seconds"] / a["seconds"],
                "peak_rss_ratio": a["peak_rss_mb"] / b["peak_rss_mb"],
                "rss_growth_ratio": a["compute_rss_growth_mb"] / max(b["compute_rss_growth_mb"], 1e-9),
                "max_relative_difference": max(
                    abs(a["values"][k] - b["values"][k]) / max(abs(b["values"][k]), 1e-12) for k in a["values"]),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=3, metavar=("LIBRARY", "FOLDER", "SPACING"), help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3,
                        help="fresh subprocesses per (library, case), run round-robin; the best time is kept")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ", ".join(CASES))
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.worker:
        library, folder, spacing = args.worker
        print(json.dumps(worker(library, Path(folder), tuple(json.loads(spacing)))))
        return
    if not (BRATS / "labelsTr").is_dir():
        sys.exit(f"BraTS data not found at {BRATS}")
    started, load_at_start = time.time(), os.getloadavg()
    results = run(args.rounds, args.cases.split(","), args.libraries.split(","))
    results.update({
        "benchmark": "Dice + HD95 + ASSD + NSD (tau = 1 mm) on one binary 3D mask pair",
        "command": "python bench/metrics.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores_available": os.cpu_count(),
                    "cores_used": THREADS, "python": platform.python_version(),
                    "load_average_at_start": load_at_start},
        "total_seconds": time.time() - started,
        "rounds": args.rounds,
        "load_average_at_end": os.getloadavg(),
    })
    args.output.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.output.with_suffix(".json.part")
    temporary.write_text(json.dumps(results, indent=2))
    os.replace(temporary, args.output)
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
