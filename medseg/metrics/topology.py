"""Topology-aware overlap: centreline Dice (clDice, Shit et al. 2021) for tubular structures such as vessels."""

from __future__ import annotations

import numpy as np

from medseg.metrics.conventions import empty_value


def skeleton(mask: np.ndarray) -> np.ndarray:
    """Binary skeleton of a 2D or 3D mask ``(*spatial)`` (scikit-image; Lee's method in 3D)."""
    from skimage.morphology import skeletonize

    return skeletonize(np.asarray(mask, dtype=bool)).astype(bool)


def cldice(pred: np.ndarray, ref: np.ndarray, roi: np.ndarray | None = None) -> float:
    """clDice = 2 Tprec Tsens / (Tprec + Tsens) with Tprec = |S(P) & R| / |S(P)|, Tsens = |S(R) & P| / |S(R)|.

    Skeletons are taken of the masks restricted to ``roi`` (if given). A mask whose skeleton is empty (only
    possible for an empty mask) follows the empty-mask convention.
    """
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if roi is not None:
        pred, ref = pred & roi, ref & roi
    value = empty_value("cldice", not pred.any(), not ref.any())
    if value is not None:
        return float(value)
    s_pred, s_ref = skeleton(pred), skeleton(ref)
    t_prec = np.count_nonzero(s_pred & ref) / max(np.count_nonzero(s_pred), 1)
    t_sens = np.count_nonzero(s_ref & pred) / max(np.count_nonzero(s_ref), 1)
    return float(2 * t_prec * t_sens / (t_prec + t_sens)) if t_prec + t_sens > 0 else 0.0
