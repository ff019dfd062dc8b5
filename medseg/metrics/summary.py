"""Summary statistics of per-case metric values: mean, sd, median and a percentile-bootstrap CI of the mean."""

from __future__ import annotations

import math

import numpy as np

BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95


def bootstrap_ci(values: np.ndarray, *, samples: int = BOOTSTRAP_SAMPLES, confidence: float = CONFIDENCE,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of ``values`` (resampling cases with replacement)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(samples, values.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def summarise(values, *, samples: int = BOOTSTRAP_SAMPLES, confidence: float = CONFIDENCE,
              seed: int = 0) -> dict[str, float]:
    """Statistics over the finite values; NaN (undefined) and inf (one mask empty for a distance) are counted
    separately, never averaged in silently."""
    array = np.asarray(values, dtype=np.float64)
    finite = array[np.isfinite(array)]
    low, high = bootstrap_ci(finite, samples=samples, confidence=confidence, seed=seed)
    return {
        "mean": float(finite.mean()) if finite.size else math.nan,
        "sd": float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
        "median": float(np.median(finite)) if finite.size else math.nan,
        "ci_low": low,
        "ci_high": high,
        "n": int(array.size),
        "n_finite": int(finite.size),
        "n_nan": int(np.isnan(array).sum()),
        "n_inf": int(np.isinf(array).sum()),
    }
