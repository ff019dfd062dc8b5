"""Calibration of predicted probabilities against reference labels (``medseg evaluate --probabilities DIR``).

For a folder of ``<case>.npz`` probability files (``medseg predict --save-probabilities``) and a folder of
reference label maps: per class (one-vs-rest, the class's probability ``p_k`` against ``reference == k``) the
expected calibration error, the Brier score and a reliability diagram PNG; and over all classes the top-label ECE
and the multi-class Brier score. Voxels of every case are pooled (``medseg.metrics.calibration``: equal-width bins,
ECE of Guo et al. 2017). Writes ``OUT/calibration.json`` and ``OUT/plots/reliability_<class>.png`` atomically.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from medseg.atomic import atomic_write
from medseg.errors import MedsegError
from medseg.evaluation.cases import find_dataset_json, list_cases, read_dataset_json
from medseg.evaluation.report import write_json
from medseg.inference.ensemble import load_probabilities
from medseg.metrics.calibration import Reliability, brier_score, pool_reliability, reliability
from medseg.metrics.conventions import DEFAULT_CALIBRATION_BINS

SCHEMA_VERSION = 1


def probability_files(folder: Path) -> dict[str, Path]:
    """``{case: <case>.npz}`` in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MedsegError("probability folder does not exist", path=folder,
                          fix="pass the folder that medseg predict --save-probabilities wrote")
    files = {p.name.removesuffix(".npz"): p for p in sorted(folder.glob("*.npz")) if not p.name.startswith(".")}
    if not files:
        raise MedsegError("no <case>.npz probability files in the folder", path=folder,
                          fix="predict with medseg predict --save-probabilities")
    return files


def pair_probability_files(prob_dir: Path, ref_dir: Path, roi_dir: Path | None = None
                           ) -> list[tuple[str, Path, Path, Path | None]]:
    """``[(case, <case>.npz, reference file, ROI file or None)]`` for every reference case; a reference case
    without a probability file (or ROI) is a ``MedsegError``."""
    probabilities_of, references = probability_files(prob_dir), list_cases(ref_dir, "reference")
    rois = list_cases(Path(roi_dir), "ROI") if roi_dir is not None else {}
    for case, path in references.items():
        if case not in probabilities_of:
            raise MedsegError(f"reference case '{case}' has no probability file {case}.npz in {prob_dir}", path=path,
                              fix="predict every reference case with --save-probabilities")
        if roi_dir is not None and case not in rois:
            raise MedsegError(f"case '{case}' has no ROI mask in {roi_dir}", path=path, fix="add its ROI mask")
    return [(case, probabilities_of[case], path, rois.get(case)) for case, path in references.items()]


def _class_names(ref_dir: Path, label_values: list[int]) -> dict[int, str]:
    names = {v: f"label_{v}" for v in label_values}
    found = find_dataset_json(ref_dir)
    if found is not None:
        for name, value in (read_dataset_json(found).get("labels") or {}).items():
            if isinstance(value, int) and value in names:
                names[value] = str(name)
    return names


def write_reliability_diagram(data: Reliability, title: str, path: Path) -> Path:
    """Accuracy per confidence bin against the diagonal, with the bins' voxel counts below (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centres = (data.edges[:-1] + data.edges[1:]) / 2
    width = np.diff(data.edges)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(4.5, 5.5), sharex=True,
                                         gridspec_kw={"height_ratios": [3, 1]})
    filled = data.count > 0
    top.bar(centres[filled], data.accuracy[filled], width=width[filled], edgecolor="black", label="accuracy")
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.plot(data.confidence[filled], data.accuracy[filled], "o", color="tab:red", markersize=3,
             label="mean confidence")
    top.set_ylabel("fraction correct")
    top.set_title(f"{title}: ECE {data.ece:.4f}")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, np.maximum(data.count, 0), width=width, color="grey")
    bottom.set_yscale("log")
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("voxels")
    figure.tight_layout()

    def write(temporary: Path) -> None:
        figure.savefig(temporary, format="png", dpi=100)

    try:
        return atomic_write(path, write)
    finally:
        plt.close(figure)


def probability_calibration(prob_dir: str | Path, ref_dir: str | Path, out_dir: str | Path, *,
                            n_bins: int = DEFAULT_CALIBRATION_BINS, roi_dir: str | Path | None = None,
                            plots: bool = True) -> dict:
    """Score every reference case's ``<case>.npz`` in ``prob_dir``; see the module docstring. Returns the
    ``calibration.json`` content."""
    from medseg.evaluation.evaluate import _check_grid, _read_label_map  # the label checks of evaluate

    prob_dir, ref_dir, out_dir = Path(prob_dir), Path(ref_dir), Path(out_dir)
    pairs = pair_probability_files(prob_dir, ref_dir, Path(roi_dir) if roi_dir is not None else None)
    label_values: list[int] | None = None
    per_class: dict[int, list[Reliability]] = {}
    squared: dict[int, list[float]] = {}
    top: list[Reliability] = []
    multi_squared, voxels = 0.0, 0
    for case, prob_path, ref_path, roi_path in pairs:
        probabilities, values = load_probabilities(prob_path)
        if label_values is None:
            label_values = values
        elif values != label_values:
            raise MedsegError(f"probabilities of labels {values}, other cases have {label_values}",
                              path=prob_path, fix="score the predictions of one model")
        reference_image = _read_label_map(ref_path, "reference")
        reference = reference_image.array[0]
        if probabilities.shape[1:] != reference.shape:
            raise MedsegError(f"probabilities of shape {probabilities.shape[1:]} for a reference of shape "
                              f"{reference.shape}", path=prob_path,
                              fix="predict the reference's image (the probabilities are on the input's grid)")
        roi = np.ones(reference.shape, dtype=bool)
        if roi_path is not None:
            roi_image = _read_label_map(roi_path, "ROI")
            _check_grid(roi_image, reference_image, roi_path, ref_path, "ROI")
            roi = roi_image.array[0] != 0
        channels = np.full(reference.shape, -1, dtype=np.int64)
        for index, value in enumerate(values):
            channels[reference == value] = index
        roi &= channels >= 0  # a reference value the model does not predict (an 'ignore' label) is not scored
        count = int(roi.sum())
        if count == 0:
            continue
        for index, value in enumerate(values):
            truth = channels == index
            per_class.setdefault(value, []).append(reliability(probabilities[index], truth, n_bins=n_bins, roi=roi))
            squared.setdefault(value, []).append(brier_score(probabilities[index], truth, roi=roi) * count)
        top.append(reliability(probabilities, channels, n_bins=n_bins, roi=roi))
        multi_squared += brier_score(probabilities, channels, roi=roi) * count
        voxels += count
    if label_values is None or voxels == 0:
        raise MedsegError("no voxel to score (empty ROIs, or only labels the model does not predict)", path=ref_dir,
                          fix="check the ROI masks and the reference labels")
    names = _class_names(ref_dir, label_values)
    classes, plot_files = {}, []
    for value in label_values:
        pooled = pool_reliability(per_class[value])
        classes[names[value]] = {"label": value, "ece": pooled.ece, "brier": float(np.sum(squared[value]) / voxels),
                                 "bins": _bins(pooled)}
        if plots:
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", names[value])
            plot_files.append(str(write_reliability_diagram(pooled, f"{names[value]} (label {value})",
                                                            out_dir / "plots" / f"reliability_{safe}.png")))
    pooled_top = pool_reliability(top)
    result = {"schema_version": SCHEMA_VERSION, "probabilities": str(prob_dir), "reference": str(ref_dir),
              "cases": len(pairs), "voxels": voxels, "n_bins": n_bins,
              "definition": "ECE: sum over equal-width confidence bins of (bin voxels / voxels) x |accuracy - mean "
                            "confidence|; per class one-vs-rest (confidence max(p, 1 - p)), top_label over the "
                            "classes' argmax; Brier: mean squared error (per class of p_k, multi-class summed "
                            "over classes); voxels of all cases pooled",
              "classes": classes,
              "top_label": {"ece": pooled_top.ece, "brier": multi_squared / voxels, "bins": _bins(pooled_top)},
              "plots": plot_files}
    write_json(result, out_dir / "calibration.json")
    return result


def _bins(data: Reliability) -> dict:
    def listed(values: np.ndarray) -> list:
        return [None if not math.isfinite(float(v)) else float(v) for v in values]

    return {"edges": listed(data.edges), "confidence": listed(data.confidence), "accuracy": listed(data.accuracy),
            "count": [int(c) for c in data.count]}
