"""Metrics that compare a distribution of segmentations with several raters' label maps: the generalised energy
distance (Kohl et al. 2018), best-of-N Dice, and the per-voxel calibration of a predicted foreground
probability against the raters' frequency (CURVAS-style: the raters' vote share is the soft target).

Label maps are integer arrays ``(N, *S)`` (N samples or raters of one case); ``labels`` are the foreground values
scored. Distances and overlaps average over those labels, each with medseg's empty-mask conventions (two empty
masks agree: IoU and Dice 1).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from medseg.metrics.calibration import Reliability, binned_reliability
from medseg.metrics.conventions import DEFAULT_CALIBRATION_BINS
from medseg.metrics.overlap import confusion, dice, iou

RATER_METRICS = ("ged", "best_dice", "rater_ece")  # the conventions table's rows of this module


def _foreground(maps: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """``(N, L, *S)`` bool: map ``n``'s mask of label ``labels[l]``."""
    maps = np.asarray(maps)
    return np.stack([maps == value for value in labels], axis=1)


def pairwise_iou_distance(a: np.ndarray, b: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """``1 - IoU`` between every map of ``a`` ``(N, *S)`` and of ``b`` ``(M, *S)``, averaged over ``labels``:
    ``(N, M)``; two maps without label ``l`` are at distance 0 for it."""
    fa, fb = _foreground(a, labels), _foreground(b, labels)
    distances = np.zeros((len(fa), len(fb)))
    for i in range(len(fa)):
        for j in range(len(fb)):
            distances[i, j] = np.mean([1.0 - iou(confusion(fa[i, k], fb[j, k])) for k in range(len(labels))])
    return distances


def generalized_energy_distance(samples: np.ndarray, raters: np.ndarray, labels: Sequence[int]) -> float:
    """``D^2_GED = 2 E[d(S, Y)] - E[d(S, S')] - E[d(Y, Y')]`` with ``d = 1 - IoU`` (Kohl et al. 2018), the
    expectations over all pairs of the ``samples`` ``(N, *S)``, the ``raters`` ``(M, *S)`` and across (pairs of
    a map with itself included, at distance 0, as in the authors' evaluation). 0 when the samples reproduce the
    raters exactly; lower is better."""
    cross = pairwise_iou_distance(samples, raters, labels).mean()
    within_samples = pairwise_iou_distance(samples, samples, labels).mean()
    within_raters = pairwise_iou_distance(raters, raters, labels).mean()
    return float(2.0 * cross - within_samples - within_raters)


def best_of_n_dice(samples: np.ndarray, raters: np.ndarray, labels: Sequence[int]) -> float:
    """For each rater the Dice of the sample closest to it (the best of N), averaged over raters; each Dice the
    mean over ``labels``. A model whose N samples cover the raters' spread scores near 1."""
    fs, fr = _foreground(samples, labels), _foreground(raters, labels)
    best = []
    for j in range(len(fr)):
        best.append(max(np.mean([dice(confusion(fs[i, k], fr[j, k])) for k in range(len(labels))])
                        for i in range(len(fs))))
    return float(np.mean(best))


def rater_frequency(maps: np.ndarray, label: int) -> np.ndarray:
    """The share of ``maps`` ``(N, *S)`` that give each voxel ``label``: ``(*S)`` in [0, 1]."""
    return (np.asarray(maps) == label).mean(axis=0)


def soft_reliability(probability: np.ndarray, frequency: np.ndarray, *, n_bins: int = DEFAULT_CALIBRATION_BINS,
                     roi: np.ndarray | None = None) -> Reliability:
    """Reliability data of a foreground ``probability`` ``(*S)`` against the raters' ``frequency`` ``(*S)``:
    voxels binned by the predicted probability (equal-width bins, the first including 0); per bin the mean
    probability (``confidence``) and the mean rater frequency (``accuracy``). ``roi``: the voxels scored (e.g.
    where any rater or sample marks foreground, so that the sure background does not dilute the error)."""
    p, f = np.asarray(probability, dtype=np.float64), np.asarray(frequency, dtype=np.float64)
    if p.shape != f.shape:
        raise ValueError(f"probability {p.shape} and rater frequency {f.shape} differ in shape")
    if roi is not None:
        roi = np.asarray(roi, dtype=bool)
        p, f = p[roi], f[roi]
    return binned_reliability(p.ravel(), f.ravel(), n_bins)


def rater_calibration(probability: np.ndarray, raters: np.ndarray, label: int, *,
                      n_bins: int = DEFAULT_CALIBRATION_BINS) -> dict[str, float]:
    """Per-voxel calibration of a predicted probability of ``label`` ``(*S)`` against the raters' vote share
    (``raters`` ``(M, *S)``), over the voxels where either is above 0: ``rater_ece`` (ECE with the vote share as
    the soft target), ``rater_brier`` (mean squared difference) and ``rater_mae`` (mean absolute difference)."""
    frequency = rater_frequency(raters, label)
    p = np.asarray(probability, dtype=np.float64)
    roi = (p > 0) | (frequency > 0)
    if not roi.any():
        return {"rater_ece": 0.0, "rater_brier": 0.0, "rater_mae": 0.0}
    difference = p[roi] - frequency[roi]
    return {"rater_ece": soft_reliability(p, frequency, n_bins=n_bins, roi=roi).ece,
            "rater_brier": float(np.mean(difference ** 2)), "rater_mae": float(np.mean(np.abs(difference)))}


def rater_metrics(samples: np.ndarray, raters: np.ndarray, labels: Sequence[int], *,
                  probability: np.ndarray | None = None) -> dict[str, float]:
    """Every rater metric of one case: ``ged``, ``best_dice``, and per-voxel calibration of the samples' vote
    share (or of ``probability`` ``(L, *S)``, one map per label, when given) averaged over ``labels``."""
    result = {"ged": generalized_energy_distance(samples, raters, labels),
              "best_dice": best_of_n_dice(samples, raters, labels)}
    parts = [rater_calibration(probability[k] if probability is not None else rater_frequency(samples, value),
                               raters, value) for k, value in enumerate(labels)]
    for key in parts[0]:
        result[key] = float(np.mean([part[key] for part in parts]))
    return result
