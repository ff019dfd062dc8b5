"""Probabilistic metrics: expected calibration error, Brier score and reliability-diagram data."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medseg.metrics.conventions import DEFAULT_CALIBRATION_BINS


@dataclass(frozen=True)
class Reliability:
    """Reliability-diagram data: per equal-width bin ``(edges[i], edges[i+1]]`` (the first includes 0)."""

    edges: np.ndarray       # (B + 1,)
    confidence: np.ndarray  # (B,) mean top-label confidence, NaN for an empty bin
    accuracy: np.ndarray    # (B,) fraction of correct top labels, NaN for an empty bin
    count: np.ndarray       # (B,) voxels

    @property
    def ece(self) -> float:
        total = self.count.sum()
        if total == 0:
            return math.nan
        filled = self.count > 0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float(np.sum(self.count[filled] * gaps) / total)


def _top_label(probs: np.ndarray, labels: np.ndarray, roi: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidence and correctness per voxel; ``probs`` is ``(*spatial)`` foreground probability or
    ``(C, *spatial)`` class probabilities, ``labels`` ``(*spatial)`` (bool or class index)."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if probs.shape == labels.shape:
        confidence = np.maximum(probs, 1.0 - probs)
        correct = (probs >= 0.5) == labels.astype(bool)
    elif probs.shape[1:] == labels.shape:
        confidence, correct = probs.max(axis=0), probs.argmax(axis=0) == labels
    else:
        raise ValueError(f"probabilities {probs.shape} do not fit labels {labels.shape}: need (*S) or (C, *S)")
    if roi is not None:
        roi = np.asarray(roi, dtype=bool)
        return confidence[roi], correct[roi]
    return confidence.ravel(), correct.ravel()


def reliability(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = DEFAULT_CALIBRATION_BINS,
                roi: np.ndarray | None = None) -> Reliability:
    """Bin the top-label confidence into ``n_bins`` equal-width bins; a binary foreground probability ``p``
    predicts foreground when ``p >= 0.5`` with confidence ``max(p, 1 - p)``."""
    confidence, correct = _top_label(probs, labels, roi)
    return binned_reliability(confidence, correct.astype(np.float64), n_bins)


def binned_reliability(confidence: np.ndarray, observed: np.ndarray, n_bins: int) -> Reliability:
    """Voxels binned by ``confidence`` ``(N,)`` into ``n_bins`` equal-width bins of [0, 1] (the first including 0);
    per bin the mean confidence and the mean of ``observed`` ``(N,)`` (0/1 correctness, or a soft target such as
    the raters' vote share)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(index, weights=observed, minlength=n_bins) / count
    return Reliability(edges, mean_confidence, accuracy, count)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = DEFAULT_CALIBRATION_BINS,
                               roi: np.ndarray | None = None) -> float:
    """ECE = sum over bins of (bin voxels / voxels) x |accuracy - mean confidence| (Guo et al. 2017)."""
    return reliability(probs, labels, n_bins=n_bins, roi=roi).ece


def brier_score(probs: np.ndarray, labels: np.ndarray, *, roi: np.ndarray | None = None) -> float:
    """Mean squared error of the probabilities: ``mean (p - y)^2`` for a foreground probability ``(*S)``, or
    ``mean over voxels of sum_c (p_c - [y == c])^2`` for class probabilities ``(C, *S)``."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if probs.shape == labels.shape:
        squared = (probs - labels.astype(bool)) ** 2
    elif probs.shape[1:] == labels.shape:
        onehot = labels[None] == np.arange(probs.shape[0]).reshape((-1,) + (1,) * labels.ndim)
        squared = ((probs - onehot) ** 2).sum(axis=0)
    else:
        raise ValueError(f"probabilities {probs.shape} do not fit labels {labels.shape}: need (*S) or (C, *S)")
    if roi is not None:
        squared = squared[np.asarray(roi, dtype=bool)]
    return float(squared.mean()) if squared.size else math.nan


def pool_reliability(parts: list[Reliability]) -> Reliability:
    """The reliability data of the union of the voxels of ``parts`` (same bin edges), e.g. of several cases."""
    if not parts:
        raise ValueError("no reliability data to pool")
    edges = parts[0].edges
    if any(p.edges.shape != edges.shape or not np.allclose(p.edges, edges) for p in parts):
        raise ValueError("reliability data with different bins cannot be pooled")
    count = np.sum([p.count for p in parts], axis=0)
    confidence = np.sum([np.nan_to_num(p.confidence) * p.count for p in parts], axis=0)
    accuracy = np.sum([np.nan_to_num(p.accuracy) * p.count for p in parts], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return Reliability(edges, confidence / count, accuracy / count, count)
