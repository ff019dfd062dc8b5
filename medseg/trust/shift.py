"""Dataset shift: the Fréchet distance between two datasets' feature distributions, and a per-case
out-of-distribution score (Mahalanobis distance to a model's training cases, stored in its model folder).

Features (``medseg.trust.features``) are standardised by the mean and standard deviation of the two datasets
together (of the training cases, for the per-case score; a feature constant there is left out); each set is
summarised by its mean and a Ledoit-Wolf shrunk covariance (scikit-learn), so a dataset with fewer
cases than features still has a well-conditioned covariance. The Fréchet distance between N(m1, S1) and N(m2, S2)
is ``|m1 - m2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` (the squared 2-Wasserstein distance, as FID and the Fréchet
Radiomic Distance use it), with the matrix square root of ``scipy.linalg.sqrtm``.

``MODEL/shift_reference.json`` (``ShiftReference``): the training cases' feature standardisation, mean and
covariance, and their leave-one-out Mahalanobis distances; a new case's score is its distance, its percentile
among those and whether it lies beyond their 95th percentile.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from medseg.errors import MedsegError
from medseg.trust.features import FeatureTable

REFERENCE_FILE = "shift_reference.json"
OOD_FILE = "ood.json"
SCHEMA_VERSION = 1
OOD_PERCENTILE = 95.0


def standardisation(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N, F)`` -> centre and scale ``(F,)``: the mean and standard deviation per feature; a feature constant over
    the rows gets scale 0, and ``standardise`` gives it 0 for every case (no spread to measure a difference by)."""
    centre = values.mean(axis=0)
    scale = values.std(axis=0)
    scale[scale <= 1e-12 * (1 + np.abs(centre))] = 0.0
    return centre, scale


def standardise(values: np.ndarray, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(N, F)`` rows in units of ``scale`` about ``centre``; 0 where ``scale`` is 0."""
    safe = np.where(scale > 0, scale, 1.0)
    return np.where(scale > 0, (np.atleast_2d(values) - centre) / safe, 0.0)


def gaussian(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N, F)`` -> mean ``(F,)`` and Ledoit-Wolf shrunk covariance ``(F, F)`` (well conditioned for N < F)."""
    from sklearn.covariance import ledoit_wolf

    if len(values) < 2:
        raise MedsegError(f"{len(values)} case(s): a distribution needs at least 2", fix="use more cases")
    covariance, _ = ledoit_wolf(values)
    return values.mean(axis=0), covariance


def frechet_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray) -> float:
    """The Fréchet distance (squared 2-Wasserstein) between N(mean_a, cov_a) and N(mean_b, cov_b), >= 0."""
    from scipy.linalg import sqrtm

    root = sqrtm(cov_a @ cov_b)
    root = np.real(root)  # sqrtm of a product of two SPD matrices has real eigenvalues; only round-off is imaginary
    difference = mean_a - mean_b
    value = difference @ difference + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root)
    return float(max(value, 0.0))


@dataclass
class ShiftResult:
    """The distance between ``a`` and ``b`` and the features whose means differ most (in standard deviations of the
    two sets together, ``b`` minus ``a``)."""

    distance: float
    feature_set: str
    cases_a: int
    cases_b: int
    largest_differences: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dataset_distance(a: FeatureTable, b: FeatureTable, *, top: int = 5) -> ShiftResult:
    """Fréchet distance between the feature distributions of ``a`` and ``b``, both standardised by the mean and
    standard deviation of their union (symmetric: ``d(a, b) == d(b, a)``)."""
    if a.names != b.names:
        raise MedsegError(f"feature sets differ ({len(a.names)} vs {len(b.names)} features)",
                          fix="compute both with the same --features (and --model)")
    centre, scale = standardisation(np.concatenate([a.values, b.values]))
    za, zb = standardise(a.values, centre, scale), standardise(b.values, centre, scale)
    distance = frechet_distance(*gaussian(za), *gaussian(zb))
    shift = zb.mean(axis=0) - za.mean(axis=0)
    order = np.argsort(-np.abs(shift))[:top]
    return ShiftResult(distance, a.feature_set, len(a.values), len(b.values),
                       {a.names[i]: float(shift[i]) for i in order})


@dataclass
class ShiftReference:
    """``shift_reference.json``: the training cases' feature distribution, for per-case OOD scores."""

    feature_set: str
    names: list[str]
    centre: list[float]
    scale: list[float]
    mean: list[float]
    covariance: list[list[float]]
    loo_distances: list[float]
    cases: int
    schema_version: int = SCHEMA_VERSION

    @property
    def threshold(self) -> float:
        """Distances above this (the leave-one-out distances' 95th percentile) are flagged."""
        return float(np.percentile(self.loo_distances, OOD_PERCENTILE))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "threshold": self.threshold}

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> "ShiftReference":
        try:
            if int(data.get("schema_version", 1)) > SCHEMA_VERSION:
                raise MedsegError(f"{REFERENCE_FILE} is newer than this medseg", path=path, fix="upgrade medseg")
            return cls(str(data["feature_set"]), list(data["names"]), list(data["centre"]), list(data["scale"]),
                       list(data["mean"]), [list(r) for r in data["covariance"]], list(data["loo_distances"]),
                       int(data["cases"]))
        except (KeyError, TypeError, ValueError) as error:
            raise MedsegError(f"{REFERENCE_FILE} is malformed ({type(error).__name__}: {error})", path=path,
                              fix="refit it: medseg shift --fit MODEL DATASET") from None

    def distances(self, values: np.ndarray) -> np.ndarray:
        """Mahalanobis distances ``(N,)`` of feature rows ``(N, F)`` from the reference distribution."""
        return mahalanobis(values, np.array(self.centre), np.array(self.scale), np.array(self.mean),
                           np.array(self.covariance))

    def scores(self, values: np.ndarray) -> list[dict[str, Any]]:
        """Per row: ``mahalanobis``, ``percentile`` (share of the training cases' leave-one-out distances below
        it, in %) and ``out_of_distribution`` (beyond their 95th percentile)."""
        loo = np.sort(np.array(self.loo_distances))
        return [{"mahalanobis": float(d), "percentile": float(100 * np.searchsorted(loo, d) / len(loo)),
                 "out_of_distribution": bool(d > self.threshold)} for d in self.distances(values)]


def mahalanobis(values: np.ndarray, centre: np.ndarray, scale: np.ndarray, mean: np.ndarray,
                covariance: np.ndarray) -> np.ndarray:
    """``(N, F)`` -> ``(N,)``: distances of the standardised rows from ``mean`` under ``covariance``."""
    z = standardise(values, centre, scale) - mean
    precision = np.linalg.pinv(covariance, hermitian=True)
    return np.sqrt(np.maximum(np.einsum("nf,fg,ng->n", z, precision, z), 0.0))


def fit_reference(table: FeatureTable) -> ShiftReference:
    """The reference distribution of ``table``'s cases, with each case's distance from a fit of the others."""
    values = table.values
    if len(values) < 3:
        raise MedsegError(f"{len(values)} case(s) to fit a shift reference on", fix="use a dataset of >= 3 cases")

    def fit(rows: np.ndarray):
        centre, scale = standardisation(rows)
        mean, covariance = gaussian(standardise(rows, centre, scale))
        return centre, scale, mean, covariance

    loo = [float(mahalanobis(values[i], *fit(np.delete(values, i, axis=0)))[0]) for i in range(len(values))]
    centre, scale, mean, covariance = fit(values)
    return ShiftReference(table.feature_set, list(table.names), centre.tolist(), scale.tolist(), mean.tolist(),
                          covariance.tolist(), loo, len(values))


def write_reference(model: str | Path, reference: ShiftReference) -> Path:
    from medseg.config import write_json_atomic

    return write_json_atomic(reference.to_dict(), Path(model) / REFERENCE_FILE)


def read_reference(model: str | Path) -> ShiftReference | None:
    """The model folder's shift reference, or None when it has none."""
    from medseg.config import read_json

    path = Path(model) / REFERENCE_FILE
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict):
        raise MedsegError(f"{REFERENCE_FILE} is not a JSON object", path=path,
                          fix="refit it: medseg shift --fit MODEL DATASET")
    return ShiftReference.from_dict(data, path)


def fit_model_reference(model: str | Path, dataset: str | Path, *, feature_set: str = "texture",
                        cases: Sequence[str] | None = None, progress: bool | None = None) -> ShiftReference:
    """Fit the reference on ``dataset``'s cases (the model's training data) and store it in ``model``."""
    from medseg.config.model_folder import read_model_spec
    from medseg.trust.features import dataset_features

    read_model_spec(model)  # a MedsegError for a folder that is not a model
    table = dataset_features(dataset, feature_set=feature_set, model=model, cases=cases, progress=progress)
    reference = fit_reference(table)
    write_reference(model, reference)
    return reference


def ood_auroc(in_distribution: Sequence[float], out_of_distribution: Sequence[float]) -> float:
    """Area under the ROC curve of telling ``out_of_distribution`` scores (positives) from ``in_distribution``
    ones by their size (scikit-learn's ``roc_auc_score``); 0.5 is chance, 1.0 perfect."""
    from sklearn.metrics import roc_auc_score

    scores = np.concatenate([np.asarray(in_distribution, float), np.asarray(out_of_distribution, float)])
    truth = np.concatenate([np.zeros(len(in_distribution)), np.ones(len(out_of_distribution))])
    return float(roc_auc_score(truth, scores))


def score_images(model: str | Path, reference: ShiftReference, images: Iterable[tuple[str, np.ndarray, list]]
                 ) -> dict[str, dict[str, Any]]:
    """``{case_id: score}`` (``ShiftReference.scores``) for ``(case_id, image (C, *spatial), spacing)`` items
    (read one at a time)."""
    from medseg.trust.features import case_feature_function

    extract = case_feature_function(reference.feature_set, model)
    ids, rows = [], []
    for case_id, array, spacing in images:
        ids.append(case_id)
        rows.append(extract(np.asarray(array, dtype=np.float64), spacing)[0])
    if rows and len(rows[0]) != len(reference.names):
        raise MedsegError(f"{len(rows[0])} features for a reference of {len(reference.names)}",
                          path=Path(model) / REFERENCE_FILE, fix="refit it: medseg shift --fit MODEL DATASET")
    scores = reference.scores(np.stack(rows)) if rows else []
    return dict(zip(ids, scores))


def write_prediction_ood(model: str | Path, reference: ShiftReference, cases, output: str | Path) -> Path:
    """``medseg predict``'s ``OUTPUT/ood.json`` (``{"cases": {case_id: score}}``, written atomically): each case's
    score against ``model``'s shift reference. ``cases``: ``medseg.inference.run.InputCase`` items."""
    from medseg.config import write_json_atomic
    from medseg.data import read_channels

    def images():
        for case in cases:
            image = read_channels(case.files)
            yield case.case_id, image.array, list(image.spacing)

    scores = score_images(model, reference, images())
    return write_json_atomic({"reference": str(Path(model) / REFERENCE_FILE), "threshold": reference.threshold,
                              "cases": scores}, Path(output) / OOD_FILE)
