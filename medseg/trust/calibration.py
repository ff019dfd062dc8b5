"""Fit a model folder's probability calibration on its cross-validation predictions (``medseg calibrate``).

``medseg train`` predicts each fold's validation cases into ``fold_K/validation/<case>.npz`` (class
probabilities on the case's grid, float16) with the fold that did not train on them. ``calibrate_model`` samples
voxels of those files uniformly (at most ``max_voxels`` in all, the same number per case, seeded), pairs them with
the dataset's reference labels and fits, by L-BFGS on the negative log-likelihood,

    temperature   one ``T > 0``:  softmax(log p / T)            (the argmax is unchanged)
    vector        per class ``w_k, b_k``:  softmax(w * log p + b)

(Guo et al. 2017), stored as ``MODEL/calibration.json`` (``medseg.config.calibration``), which
``Predictor.from_folder`` then applies to every prediction. The NLL, expected calibration error and Brier score
(``medseg.metrics.calibration``) on the fitted voxels before and after are recorded in the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medseg.config.calibration import CalibrationSpec, write_calibration
from medseg.config.model_folder import available_folds, fold_folder, read_segmentation_model
from medseg.errors import MedsegError
from medseg.inference.calibrated import calibrated_log_probabilities, floored_log
from medseg.inference.ensemble import load_probabilities
from medseg.metrics.calibration import brier_score, expected_calibration_error

DEFAULT_MAX_VOXELS = 2_000_000
NO_CV_FIX = ("train the folds with validation, which stores fold_K/validation/<case>.npz: medseg train DATASET -c "
             "CONFIGURATION -f K -o MODEL (for K = 0..4, without --no-validation; fold 'all' has no held-out cases)")


@dataclass
class CalibrationVoxels:
    """Sampled cross-validation voxels: ``log_probabilities`` ``(N, K)`` float32 (floored log of the stored
    probabilities), ``targets`` ``(N,)`` channel indices, and where they came from."""

    log_probabilities: np.ndarray
    targets: np.ndarray
    cases: list[str]
    folds: list[str]


def validation_files(model: str | Path) -> dict[str, Path]:
    """``{case: fold_K/validation/<case>.npz}`` over the model's cross-validation folds; a ``MedsegError`` saying
    how to get them when there is none."""
    model = Path(model)
    files: dict[str, Path] = {}
    for fold in available_folds(model):
        if fold == "all":
            continue
        for path in sorted((fold_folder(model, fold) / "validation").glob("*.npz")):
            if not path.name.startswith("."):
                files[path.name.removesuffix(".npz")] = path
    if not files:
        raise MedsegError("the model has no cross-validation predictions (fold_K/validation/<case>.npz) to "
                          "fit on", path=model, fix=NO_CV_FIX)
    return files


def validation_cases(files: dict[str, Path], data, label_values: list[int]
                     ) -> Iterator[tuple[str, np.ndarray, list[int], np.ndarray]]:
    """``(case, probabilities (K, *S), label values, reference (*S))`` of each cross-validation file (``files``
    as ``validation_files`` gives them) with its reference label map from ``data`` (an opened dataset); a
    ``MedsegError`` for a file of another model's labels or of another grid than its reference."""
    for case_id, path in files.items():
        probabilities, values = load_probabilities(path)
        if values != label_values:
            raise MedsegError(f"probabilities of labels {values}, the model predicts {label_values}", path=path,
                              fix="retrain the fold; its validation folder is from another model")
        reference = data.read_label(data.case(case_id)).array[0]
        if reference.shape != probabilities.shape[1:]:
            raise MedsegError(f"probabilities of shape {probabilities.shape[1:]}, the reference "
                              f"{reference.shape}", path=path, fix="pass the dataset the model was trained on")
        yield case_id, probabilities, values, reference


def collect_voxels(model: str | Path, dataset: str | Path, *, max_voxels: int = DEFAULT_MAX_VOXELS,
                   seed: int = 0) -> CalibrationVoxels:
    """Sample voxels of every cross-validation probability file of ``model`` with their reference labels from
    ``dataset`` (the raw dataset the model was trained on)."""
    from medseg.data import open_dataset

    if max_voxels < 1:
        raise MedsegError(f"--max-voxels {max_voxels} is not positive", fix="use e.g. 2000000")
    spec, _, _ = read_segmentation_model(model)
    files = validation_files(model)
    data = open_dataset(dataset)
    lookup = {value: channel for channel, value in enumerate(spec.label_values)}
    per_case = max(1, max_voxels // len(files))
    rng = np.random.default_rng(seed)
    logs, targets = [], []
    for _, probabilities, values, reference in validation_cases(files, data, spec.label_values):
        channel = np.full(reference.shape, -1, dtype=np.int64)
        for value, index in lookup.items():
            channel[reference == value] = index  # other values (an 'ignore' label) are left out
        known = np.flatnonzero(channel.ravel() >= 0)
        chosen = known if len(known) <= per_case else rng.choice(known, per_case, replace=False)
        flat = probabilities.reshape(len(values), -1)[:, chosen]
        logs.append(floored_log(torch.from_numpy(flat.T.copy())).numpy())
        targets.append(channel.ravel()[chosen])
    folds = sorted({path.parent.parent.name.removeprefix("fold_") for path in files.values()})
    return CalibrationVoxels(np.concatenate(logs), np.concatenate(targets), list(files), folds)


def _scale_and_bias(parameters: torch.Tensor, method: str, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    if method == "temperature":  # parameters = [log(1 / T)]
        return parameters[0].exp().expand(k), torch.zeros(k, dtype=parameters.dtype)
    return parameters[:k], parameters[k:]


def fit_scaling(log_probabilities: np.ndarray, targets: np.ndarray, method: str = "temperature", *,
                max_iterations: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """``(scale (K,), bias (K,))`` minimising the mean NLL of ``softmax(scale * z + bias)`` for ``z``
    ``(N, K)`` and ``targets`` ``(N,)``; ``method`` ``"temperature"`` (one shared scale, no bias) or ``"vector"``."""
    if method not in ("temperature", "vector"):
        raise MedsegError(f"unknown calibration method {method!r}", fix="use temperature or vector")
    z = torch.from_numpy(np.asarray(log_probabilities, dtype=np.float64))
    y = torch.from_numpy(np.asarray(targets, dtype=np.int64))
    k = z.shape[1]
    initial = torch.zeros(1) if method == "temperature" else torch.cat([torch.ones(k), torch.zeros(k)])
    parameters = initial.double().requires_grad_(True)
    optimiser = torch.optim.LBFGS([parameters], lr=1.0, max_iter=max_iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        scale, bias = _scale_and_bias(parameters, method, k)
        loss = torch.nn.functional.nll_loss(calibrated_log_probabilities(z, scale, bias), y)
        loss.backward()
        return loss

    optimiser.step(closure)
    scale, bias = _scale_and_bias(parameters.detach(), method, k)
    if not (torch.isfinite(scale).all() and torch.isfinite(bias).all()):
        raise MedsegError("the calibration fit diverged", fix="use --method temperature, or more validation cases")
    return scale.numpy().copy(), bias.numpy().copy()


def scores(log_probabilities: np.ndarray, targets: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> dict:
    """NLL, top-label ECE and Brier score of ``softmax(scale * z + bias)`` on the voxels."""
    z = torch.from_numpy(np.asarray(log_probabilities, dtype=np.float64))
    log_p = calibrated_log_probabilities(z, torch.from_numpy(np.asarray(scale, dtype=np.float64)),
                                         torch.from_numpy(np.asarray(bias, dtype=np.float64)))
    nll = float(torch.nn.functional.nll_loss(log_p, torch.from_numpy(np.asarray(targets, dtype=np.int64))))
    p = log_p.exp().numpy().T  # (K, N)
    return {"nll": nll, "ece": expected_calibration_error(p, targets), "brier": brier_score(p, targets)}


def calibrate_model(model: str | Path, dataset: str | Path, *, method: str = "temperature",
                    max_voxels: int = DEFAULT_MAX_VOXELS, seed: int = 0, write: bool = True) -> CalibrationSpec:
    """Fit ``method`` on ``model``'s cross-validation predictions of ``dataset``'s cases; written to
    ``MODEL/calibration.json`` (replacing an older one) unless ``write`` is False."""
    spec, _, _ = read_segmentation_model(model)
    if method not in ("temperature", "vector"):
        raise MedsegError(f"unknown calibration method {method!r}", fix="use --method temperature or vector")
    voxels = collect_voxels(model, dataset, max_voxels=max_voxels, seed=seed)
    k = len(spec.label_values)
    scale, bias = fit_scaling(voxels.log_probabilities, voxels.targets, method)
    before = scores(voxels.log_probabilities, voxels.targets, np.ones(k), np.zeros(k))
    after = scores(voxels.log_probabilities, voxels.targets, scale, bias)
    calibration = CalibrationSpec(method, list(spec.label_values), [float(s) for s in scale], [float(b) for b in bias],
                                  fitted_on={"cases": len(voxels.cases), "voxels": int(len(voxels.targets)),
                                             "folds": voxels.folds, "seed": seed, "dataset": str(dataset)},
                                  figures={"before": before, "after": after})
    if write:
        write_calibration(model, calibration)
    return calibration
