"""Statistics for comparing networks on the same cases: paired tests, multiple-testing correction, ranks across
datasets, the critical difference and a quality-per-compute summary.

The protocol follows U-Bench where it fits (paired tests per dataset, ranks across datasets) and Demšar (2006)
for the ranks: a Friedman test over the datasets, then the Nemenyi critical difference of the average ranks.
The tests themselves are scipy.stats' (``wilcoxon``, ``friedmanchisquare``, ``studentized_range``); the
paired bootstrap of the mean difference resamples cases with replacement as ``medseg.metrics.summary`` does.

Inputs are plain mappings, so the same functions serve ``medseg benchmark`` and anyone's own tables:
``scores[network][case] -> value`` for one dataset, ``means[dataset][network] -> value`` across datasets.
Higher is better unless ``higher_is_better=False`` (HD95, for example).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from medseg.errors import MedsegError
from medseg.metrics.summary import BOOTSTRAP_SAMPLES, CONFIDENCE


@dataclass(frozen=True)
class PairedComparison:
    """Network ``a`` against network ``b`` on the cases both were scored on (difference = a - b)."""

    a: str
    b: str
    n: int
    mean_difference: float
    ci_low: float
    ci_high: float
    bootstrap_p: float
    wilcoxon_statistic: float
    wilcoxon_p: float
    wilcoxon_p_holm: float = math.nan

    def to_dict(self) -> dict:
        return asdict(self)


def _paired_values(scores: Mapping[str, Mapping[str, float]], a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    cases = sorted(set(scores[a]) & set(scores[b]))
    values_a = np.array([scores[a][c] for c in cases], dtype=np.float64)
    values_b = np.array([scores[b][c] for c in cases], dtype=np.float64)
    finite = np.isfinite(values_a) & np.isfinite(values_b)
    return values_a[finite], values_b[finite]


def paired_bootstrap(differences: np.ndarray, *, samples: int = BOOTSTRAP_SAMPLES, confidence: float = CONFIDENCE,
                     seed: int = 0) -> tuple[float, float, float]:
    """Percentile CI of the mean of paired ``differences`` (cases resampled with replacement) and the two-sided
    bootstrap p-value of "mean difference = 0" (twice the smaller tail of the resampled means around 0)."""
    differences = np.asarray(differences, dtype=np.float64)
    if differences.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, differences.size, size=(samples, differences.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    tail = min(np.mean(means <= 0.0), np.mean(means >= 0.0))
    return float(low), float(high), float(min(1.0, 2.0 * tail))


def compare_pair(scores: Mapping[str, Mapping[str, float]], a: str, b: str, *, seed: int = 0) -> PairedComparison:
    """Wilcoxon signed-rank test (scipy, two-sided, zero differences dropped as Wilcoxon's original test) and the
    paired bootstrap of the mean difference, over the cases with finite values for both networks."""
    from scipy.stats import wilcoxon

    values_a, values_b = _paired_values(scores, a, b)
    differences = values_a - values_b
    low, high, p_boot = paired_bootstrap(differences, seed=seed)
    if differences.size == 0 or np.all(differences == 0):
        statistic, p_value = math.nan, 1.0
    else:
        result = wilcoxon(values_a, values_b, zero_method="wilcox", alternative="two-sided")
        statistic, p_value = float(result.statistic), float(result.pvalue)
    mean = float(differences.mean()) if differences.size else math.nan
    return PairedComparison(a, b, int(differences.size), mean, low, high, p_boot, statistic, p_value)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the order given. NaN stays NaN."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, math.nan)
    valid = np.flatnonzero(np.isfinite(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = order.size
    running = 0.0
    for i, index in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def compare_all(scores: Mapping[str, Mapping[str, float]], *, seed: int = 0) -> list[PairedComparison]:
    """Every pair of networks on one dataset, Wilcoxon p-values Holm-corrected over the pairs."""
    networks = sorted(scores)
    if len(networks) < 2:
        raise MedsegError(f"comparing networks needs at least two, got {networks} (fix: score more networks)")
    pairs = [compare_pair(scores, a, b, seed=seed) for a, b in itertools.combinations(networks, 2)]
    adjusted = holm([pair.wilcoxon_p for pair in pairs])
    return [PairedComparison(**{**pair.to_dict(), "wilcoxon_p_holm": p}) for pair, p in zip(pairs, adjusted)]


@dataclass(frozen=True)
class RankTable:
    """Average ranks of networks over datasets (1 = best), the Friedman test and the Nemenyi critical difference.

    ``ranks[dataset][network]`` are the per-dataset ranks (ties share the average rank); networks whose average
    ranks differ by less than ``critical_difference`` are not significantly different at ``alpha``.
    """

    networks: list[str]
    datasets: list[str]
    ranks: dict[str, dict[str, float]]
    average_rank: dict[str, float]
    friedman_statistic: float
    friedman_p: float
    critical_difference: float
    alpha: float

    def to_dict(self) -> dict:
        return asdict(self)


def nemenyi_critical_difference(networks: int, datasets: int, alpha: float = 0.05) -> float:
    """Demšar's CD = q_alpha * sqrt(k (k + 1) / (6 N)), q_alpha the studentized range quantile / sqrt(2)."""
    from scipy.stats import studentized_range

    q = studentized_range.ppf(1.0 - alpha, networks, math.inf) / math.sqrt(2.0)
    return float(q * math.sqrt(networks * (networks + 1) / (6.0 * datasets)))


def rank_networks(means: Mapping[str, Mapping[str, float]], *, higher_is_better: bool = True,
                  alpha: float = 0.05) -> RankTable:
    """Ranks of the networks scored on every dataset of ``means`` (a network missing a dataset is left out)."""
    from scipy.stats import friedmanchisquare, rankdata

    datasets = sorted(means)
    if not datasets:
        raise MedsegError("ranking needs at least one dataset of results (fix: run the benchmark first)")
    networks = sorted(set.intersection(*(set(means[d]) for d in datasets)))
    if len(networks) < 2:
        raise MedsegError(f"ranking needs at least two networks scored on every dataset, got {networks}")
    table = np.array([[means[d][n] for n in networks] for d in datasets], dtype=np.float64)
    table = np.where(np.isfinite(table), table, -np.inf if higher_is_better else np.inf)
    ranks = np.vstack([rankdata(-row if higher_is_better else row) for row in table])
    if len(networks) >= 3 and len(datasets) >= 2:
        statistic, p_value = friedmanchisquare(*table.T)
        statistic, p_value = float(statistic), float(p_value)
    else:
        statistic, p_value = math.nan, math.nan  # Friedman's test needs 3 treatments and 2 blocks
    return RankTable(
        networks=networks, datasets=datasets,
        ranks={d: {n: float(r) for n, r in zip(networks, row)} for d, row in zip(datasets, ranks)},
        average_rank={n: float(r) for n, r in zip(networks, ranks.mean(axis=0))},
        friedman_statistic=statistic, friedman_p=p_value,
        critical_difference=nemenyi_critical_difference(len(networks), len(datasets), alpha), alpha=alpha)


def quality_per_compute(dice: Mapping[str, float], seconds_per_step: Mapping[str, float],
                        params: Mapping[str, int]) -> dict[str, float]:
    """A U-Score-like summary in [0, 1]: the harmonic mean of quality and efficiency, each min-max normalised
    over the networks given (quality: mean Dice; efficiency: the mean of 1 - normalised log s/step and
    1 - normalised log parameters). Not U-Bench's exact U-Score: medseg's networks train at one wall-clock budget,
    so their Dice already pays for a slow step; the efficiency term is what deployment pays on top."""
    networks = sorted(set(dice) & set(seconds_per_step) & set(params))

    def normalised(values: np.ndarray) -> np.ndarray:
        span = values.max() - values.min()
        return np.zeros_like(values) if span == 0 else (values - values.min()) / span

    quality = normalised(np.array([dice[n] for n in networks], dtype=np.float64))
    speed = 1.0 - normalised(np.log(np.array([seconds_per_step[n] for n in networks], dtype=np.float64)))
    size = 1.0 - normalised(np.log(np.array([params[n] for n in networks], dtype=np.float64)))
    efficiency = (speed + size) / 2.0
    total = quality + efficiency
    score = np.where(total > 0, 2.0 * quality * efficiency / np.where(total > 0, total, 1.0), 0.0)
    return {n: float(s) for n, s in zip(networks, score)}


def plot_critical_difference(table: RankTable, path: str | Path) -> Path:
    """The critical-difference diagram (Demšar): networks on the average-rank axis, best on the left, a bar of
    length CD, and thick lines joining the groups of networks whose ranks differ by less than CD."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medseg.atomic import atomic_write

    order = sorted(table.networks, key=lambda n: table.average_rank[n])
    k = len(order)
    depth = (k + 1) // 2 + 0.5
    fig, ax = plt.subplots(figsize=(7.5, 1.0 + 0.35 * depth))
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(-depth, 1.6)
    ax.axis("off")
    ax.hlines(0, 1, k, color="black", lw=1)
    for rank in range(1, k + 1):
        ax.vlines(rank, 0, 0.15, color="black", lw=1)
        ax.text(rank, 0.3, str(rank), ha="center", va="bottom", fontsize=8)
    for i, network in enumerate(order):
        r = table.average_rank[network]
        left = i < (k + 1) // 2
        y = -(i + 1) if left else -(k - i)
        x_text = 0.6 if left else k + 0.4
        ax.plot([r, r, x_text], [0, y, y], color="black", lw=0.8)
        ax.text(x_text, y, f"{network} ({r:.2f})", ha="left" if not left else "right", va="center", fontsize=8,
                transform=ax.transData, clip_on=False)
    cd = table.critical_difference
    ax.hlines(1.0, 1, 1 + cd, color="black", lw=2)
    ax.text(1 + cd / 2, 1.15, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8)
    groups = _cliques(order, table.average_rank, cd)
    for j, (start, end) in enumerate(groups):
        y = -0.35 - 0.25 * j
        ax.hlines(y, table.average_rank[start] - 0.03, table.average_rank[end] + 0.03, color="black", lw=3)
    fig.tight_layout()
    try:
        return atomic_write(Path(path), lambda temporary: fig.savefig(temporary, dpi=120, format="png"))
    finally:
        plt.close(fig)


def _cliques(order: list[str], ranks: Mapping[str, float], cd: float) -> list[tuple[str, str]]:
    """Maximal runs of rank-ordered networks whose first and last ranks differ by less than ``cd``."""
    runs: list[tuple[int, int]] = []
    for i in range(len(order)):
        j = i
        while j + 1 < len(order) and ranks[order[j + 1]] - ranks[order[i]] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in runs):
            runs.append((i, j))
    return [(order[a], order[b]) for a, b in runs]
