"""Quality control without labels: a per-case predicted Dice from the prediction's own probabilities, fitted on a
model's cross-validation cases (``medseg qc``).

The features of one case come from its class probabilities ``p (K, *spatial)`` alone (so the cross-validation
files ``fold_K/validation/<case>.npz`` and any later prediction give them alike). With ``m_k = (argmax p == k)``
for each foreground channel ``k`` that is predicted or has probability mass:

    expected_dice      2 sum(p_k m_k) / (sum p_k + sum m_k): the Dice the model expects of its own mask if its
                       probabilities were calibrated (Jungo & Reyes 2019); 1 where both sums are ~0
    boundary_entropy   mean entropy H(p) / log K on the mask's boundary band (one voxel either side)
    uncertain_fraction voxels with max_k p < 0.9 inside or around the mask, over the mask's voxels (capped at 4)
    log_volume         log10 of the mask's share of the image (floor 1e-6): failures are often tiny or huge

each averaged over the foreground channels. ``fit_quality_model`` regresses the true per-case Dice (``medseg.metrics``'
Dice, averaged over foreground classes; its empty-mask conventions) on the standardised features by ridge
regression, and records its leave-one-out Spearman correlation on the cross-validation cases as the evidence of
how far to trust it. The model is stored as ``MODEL/qc.json``; ``medseg predict`` with a model that has one writes
``OUTPUT/qc/<case>.json`` (the features, the predicted Dice and the failure score ``1 - predicted Dice``), and
``medseg qc OUTPUT`` lists the cases, most likely failures first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError
from medseg.inference.run import QUALITY_FOLDER

FEATURES = ("expected_dice", "boundary_entropy", "uncertain_fraction", "log_volume")
QC_FILE = "qc.json"
SCHEMA_VERSION = 1
MIN_CASES = 8
DEFAULT_RIDGE = 1.0
CONFIDENT = 0.9


def case_features(probabilities: np.ndarray, label_values: list[int]) -> dict[str, float]:
    """``FEATURES`` of one case from its class probabilities ``(K, *spatial)`` (channel ``i`` is
    ``label_values[i]``; label value 0 is the background)."""
    from medseg.trust.uncertainty import _boundary_band, entropy

    p = np.asarray(probabilities, dtype=np.float32)
    if p.ndim < 2 or len(p) != len(label_values) or len(p) < 2:
        raise MedsegError(f"probabilities of shape {p.shape} for labels {label_values}",
                          fix="pass (K, *spatial) probabilities of a model's K >= 2 label values")
    winner = p.argmax(0)
    confident = p.max(0) >= CONFIDENT
    normalised_entropy = entropy(p) / math.log(len(p))
    rows = []
    for channel, value in enumerate(label_values):
        if value == 0:
            continue
        mask = winner == channel
        mass, voxels = float(p[channel].sum()), int(mask.sum())
        if voxels == 0 and mass < 1.0:
            continue  # a structure neither predicted nor considered: nothing to judge
        overlap = float(p[channel][mask].sum())
        band = _boundary_band(mask) if voxels else mask
        around = (mask | band) & ~confident
        rows.append([2 * overlap / (mass + voxels) if mass + voxels > 1e-6 else 1.0,
                     float(normalised_entropy[band].mean()) if band.any() else 0.0,
                     min(4.0, float(around.sum()) / max(voxels, 1)),
                     math.log10(max(voxels / mask.size, 1e-6))])
    if not rows:  # nothing predicted and no mass anywhere: a confident empty prediction
        return {"expected_dice": 1.0, "boundary_entropy": 0.0, "uncertain_fraction": 0.0, "log_volume": -6.0}
    return dict(zip(FEATURES, np.mean(np.asarray(rows, dtype=np.float64), 0).tolist()))


def case_dice(labels: np.ndarray, reference: np.ndarray, label_values: list[int]) -> float:
    """``medseg.metrics.mean_label_dice`` of ``labels`` against ``reference`` over the foreground label values."""
    from medseg.metrics import mean_label_dice

    return mean_label_dice(labels, reference, [value for value in label_values if value != 0])


@dataclass(frozen=True)
class QualityModel:
    """Ridge regression of the per-case Dice on the standardised ``FEATURES``."""

    mean: list[float]
    scale: list[float]
    coefficients: list[float]
    intercept: float
    ridge: float
    cases: int
    loo_spearman: float | None  # leave-one-out Spearman of predicted and true Dice on the fitted cases
    loo_mae: float | None
    fitted_on: str

    def predict(self, features: dict[str, float]) -> float:
        """Predicted Dice in [0, 1]."""
        x = (np.array([features[name] for name in FEATURES]) - self.mean) / self.scale
        return float(np.clip(self.intercept + x @ np.asarray(self.coefficients), 0.0, 1.0))

    def score(self, probabilities: np.ndarray, label_values: list[int]) -> dict:
        """The record ``medseg predict`` writes for one case."""
        features = case_features(probabilities, label_values)
        predicted = self.predict(features)
        return {"schema_version": SCHEMA_VERSION, "predicted_dice": predicted, "failure_score": 1.0 - predicted,
                "features": features, "loo_spearman_of_the_fit": self.loo_spearman}

    def to_dict(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, "features": list(FEATURES), "mean": self.mean,
                "scale": self.scale, "coefficients": self.coefficients, "intercept": self.intercept,
                "ridge": self.ridge, "cases": self.cases, "loo_spearman": self.loo_spearman,
                "loo_mae": self.loo_mae, "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, data: dict, *, path: Path | None = None) -> "QualityModel":
        if data.get("schema_version") != SCHEMA_VERSION or data.get("features") != list(FEATURES):
            raise MedsegError(f"a quality model of schema {data.get('schema_version')} with features "
                              f"{data.get('features')}", path=path,
                              fix="fit it again with this medseg: medseg qc MODEL --fit -d DATASET")
        return cls(**{k: data[k] for k in ("mean", "scale", "coefficients", "intercept", "ridge", "cases",
                                           "loo_spearman", "loo_mae", "fitted_on")})


def _ridge(x: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, float]:
    """Coefficients and intercept of ``min |y - b - x w|^2 + ridge |w|^2`` (x standardised)."""
    centred = y - y.mean()
    w = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ centred)
    return w, float(y.mean())


def fit_from_cases(features: list[dict[str, float]], dice: list[float], *, ridge: float = DEFAULT_RIDGE,
                   fitted_on: str = "") -> QualityModel:
    """A ``QualityModel`` from per-case features and true Dice (cases with NaN Dice left out)."""
    from scipy.stats import spearmanr

    keep = [i for i, d in enumerate(dice) if math.isfinite(d)]
    if len(keep) < MIN_CASES:
        raise MedsegError(f"{len(keep)} cross-validation cases with a Dice, fewer than {MIN_CASES} to fit on",
                          fix="train more folds or with more cases (each fold validates its held-out cases)")
    raw = np.array([[features[i][name] for name in FEATURES] for i in keep], dtype=np.float64)
    y = np.array([dice[i] for i in keep], dtype=np.float64)
    mean, scale = raw.mean(0), raw.std(0)
    scale[scale < 1e-9] = 1.0
    x = (raw - mean) / scale
    loo = np.empty(len(y))
    for i in range(len(y)):
        rest = np.arange(len(y)) != i
        w, b = _ridge(x[rest], y[rest], ridge)
        loo[i] = np.clip(b + x[i] @ w, 0.0, 1.0)
    spearman = None if y.std() == 0 or loo.std() == 0 else float(spearmanr(loo, y).statistic)
    w, b = _ridge(x, y, ridge)
    return QualityModel(mean.tolist(), scale.tolist(), w.tolist(), b, ridge, len(y), spearman,
                        float(np.abs(loo - y).mean()), fitted_on)


def fit_quality_model(model: str | Path, dataset: str | Path, *, ridge: float = DEFAULT_RIDGE,
                      write: bool = True) -> tuple[QualityModel, dict[str, dict]]:
    """Fit on the model's cross-validation predictions (``fold_K/validation/<case>.npz``) against ``dataset``'s
    reference labels; stored as ``MODEL/qc.json`` when ``write``. A model with ``calibration.json`` has its
    calibration applied to those probabilities first, as ``medseg predict`` applies it. Returns the model and, per
    case, its features, true Dice and the fitted model's predicted Dice."""
    import torch

    from medseg.config.calibration import read_calibration
    from medseg.inference.calibrated import apply_calibration
    from medseg.config import write_json_atomic
    from medseg.config.model_folder import read_segmentation_model
    from medseg.data import open_dataset
    from medseg.trust.calibration import validation_cases, validation_files

    model = Path(model)
    spec, _, _ = read_segmentation_model(model)
    files = validation_files(model)
    calibration = read_calibration(model, spec.label_values)
    data = open_dataset(dataset)
    features, dice = [], []
    for _, probabilities, values, reference in validation_cases(files, data, spec.label_values):
        if calibration is not None:
            probabilities = apply_calibration(torch.from_numpy(probabilities.astype(np.float32)), calibration,
                                              dim=0).numpy()
        labels = np.asarray(values)[probabilities.argmax(0)]
        features.append(case_features(probabilities, values))
        dice.append(case_dice(labels, reference, values))
    folds = sorted({path.parent.parent.name for path in files.values()})
    quality = fit_from_cases(features, dice, ridge=ridge, fitted_on=f"{len(files)} cases of {', '.join(folds)}")
    if write:
        write_json_atomic(quality.to_dict(), model / QC_FILE)
    cases = {case: {"features": f, "dice": d, "predicted_dice": quality.predict(f)}
             for case, f, d in zip(files, features, dice)}
    return quality, cases


def read_quality_model(model: str | Path) -> QualityModel | None:
    """``MODEL/qc.json`` if the model has one, else None."""
    from medseg.config import read_json

    path = Path(model) / QC_FILE
    return QualityModel.from_dict(read_json(path), path=path) if path.is_file() else None


def review_list(prediction_folder: str | Path) -> list[dict]:
    """Every case's QC record in ``prediction_folder/qc/``, highest failure score first."""
    from medseg.config import read_json

    folder = Path(prediction_folder) / QUALITY_FOLDER
    records = sorted(folder.glob("*.json")) if folder.is_dir() else []
    records = [p for p in records if not p.name.startswith(".")]
    if not records:
        raise MedsegError("no quality scores (qc/<case>.json) in the prediction folder", path=prediction_folder,
                          fix="fit the model's quality control first (medseg qc MODEL --fit -d DATASET), then "
                              "predict with that model")
    rows = [{"case": p.name.removesuffix(".json"), **read_json(p)} for p in records]
    return sorted(rows, key=lambda row: (-row["failure_score"], row["case"]))
