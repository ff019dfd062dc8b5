"""medseg.evaluation.compare: paired tests, Holm, ranks, the critical difference, cross-checked against scipy.stats
and Demšar's published tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from medseg.errors import MedsegError
from medseg.evaluation.compare import (compare_all, compare_pair, holm, nemenyi_critical_difference,
                                       paired_bootstrap, plot_critical_difference, quality_per_compute,
                                       rank_networks)


def _scores(rng: np.random.Generator, shift: float, n: int = 30) -> tuple[dict, dict]:
    base = rng.uniform(0.6, 0.9, n)
    a = {f"case_{i:02d}": float(v) for i, v in enumerate(base + shift + rng.normal(0, 0.02, n))}
    b = {f"case_{i:02d}": float(v) for i, v in enumerate(base)}
    return a, b


def test_pairing_is_by_case_and_equals_scipy_wilcoxon_on_the_same_numbers():
    rng = np.random.default_rng(0)
    a, b = _scores(rng, 0.03)
    b = dict(reversed(list(b.items())))  # another order: pairing must go by case name
    a["only_in_a"] = 0.1
    b["case_05"] = math.nan  # a case without a finite value for both is left out
    result = compare_pair({"a": a, "b": b}, "a", "b")
    cases = sorted(set(a) & set(b) - {"case_05"})
    expected = stats.wilcoxon([a[c] for c in cases], [b[c] for c in cases])
    assert result.n == len(cases) == 29
    assert result.wilcoxon_p == pytest.approx(expected.pvalue) and result.wilcoxon_statistic == expected.statistic
    assert result.mean_difference == pytest.approx(np.mean([a[c] - b[c] for c in cases]))
    assert result.ci_low < result.mean_difference < result.ci_high and result.ci_low > 0
    assert result.bootstrap_p < 0.01 and result.wilcoxon_p < 0.01


def test_no_difference_is_not_significant():
    rng = np.random.default_rng(1)
    a, b = _scores(rng, 0.0)
    result = compare_pair({"a": a, "b": b}, "a", "b")
    assert result.ci_low < 0 < result.ci_high
    assert result.bootstrap_p > 0.05 and result.wilcoxon_p > 0.05
    same = compare_pair({"a": b, "b": b}, "a", "b")
    assert same.wilcoxon_p == 1.0 and same.mean_difference == 0.0


def test_bootstrap_ci_covers_the_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(2)
    covered = 0
    for trial in range(200):
        differences = rng.normal(0.5, 1.0, 40)
        low, high, _ = paired_bootstrap(differences, samples=500, seed=trial)
        covered += low <= 0.5 <= high
    assert 0.88 <= covered / 200 <= 0.99


def test_holm_matches_the_step_down_rule():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running maximum 0.06 for the last
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    adjusted = holm([0.2, math.nan, 0.01])
    assert adjusted[0] == pytest.approx(0.2) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)


def test_compare_all_corrects_over_every_pair():
    rng = np.random.default_rng(3)
    a, b = _scores(rng, 0.02)
    c = {k: v - 0.05 for k, v in b.items()}
    pairs = compare_all({"a": a, "b": b, "c": c})
    assert [(p.a, p.b) for p in pairs] == [("a", "b"), ("a", "c"), ("b", "c")]
    assert [p.wilcoxon_p_holm for p in pairs] == pytest.approx(holm([p.wilcoxon_p for p in pairs]))
    with pytest.raises(MedsegError, match="at least two"):
        compare_all({"a": a})


@pytest.mark.parametrize("k, q", [(2, 1.960), (3, 2.343), (5, 2.728), (10, 3.164)])
def test_critical_difference_uses_demsars_q_values(k, q):
    # Demšar (2006), Table 5(a): q_0.05 for the Nemenyi test
    datasets = 7
    assert nemenyi_critical_difference(k, datasets) == pytest.approx(q * math.sqrt(k * (k + 1) / (6 * datasets)),
                                                                     abs=2e-3)


def test_ranks_and_friedman_agree_with_scipy():
    rng = np.random.default_rng(4)
    networks = ["unet", "resunet", "swin_unetr", "umamba"]
    means = {f"d{i}": {n: float(rng.uniform(0.5, 0.9)) for n in networks} for i in range(6)}
    table = rank_networks(means)
    matrix = np.array([[means[d][n] for n in table.networks] for d in table.datasets])
    expected_ranks = np.vstack([stats.rankdata(-row) for row in matrix]).mean(axis=0)
    assert [table.average_rank[n] for n in table.networks] == pytest.approx(expected_ranks)
    friedman = stats.friedmanchisquare(*matrix.T)
    assert table.friedman_statistic == pytest.approx(friedman.statistic)
    assert table.friedman_p == pytest.approx(friedman.pvalue)
    k, n = len(networks), len(means)  # the textbook formula from the ranks, without ties
    chi2 = 12 * n / (k * (k + 1)) * (np.sum(expected_ranks**2) - k * (k + 1) ** 2 / 4)
    assert table.friedman_statistic == pytest.approx(chi2)
    hd95 = rank_networks({d: {n: -v for n, v in row.items()} for d, row in means.items()}, higher_is_better=False)
    assert hd95.average_rank == pytest.approx(table.average_rank)


def test_a_network_missing_a_dataset_is_left_out_of_the_ranks():
    means = {"d0": {"a": 0.8, "b": 0.7, "c": 0.6}, "d1": {"a": 0.9, "b": 0.5}}
    table = rank_networks(means)
    assert table.networks == ["a", "b"] and table.average_rank == {"a": 1.0, "b": 2.0}
    assert math.isnan(table.friedman_p)  # two networks: no Friedman test


def test_quality_per_compute_rewards_the_fast_small_accurate_network():
    score = quality_per_compute({"fast": 0.80, "slow": 0.81, "bad": 0.50},
                                {"fast": 0.5, "slow": 3.0, "bad": 0.5}, {"fast": 1e6, "slow": 3e7, "bad": 1e6})
    assert score["bad"] == 0.0
    assert score["fast"] > score["slow"]
    assert all(0.0 <= v <= 1.0 for v in score.values())


def test_the_critical_difference_diagram_is_a_png(tmp_path):
    means = {f"d{i}": {"a": 0.9 - 0.01 * i, "b": 0.8, "c": 0.7 + 0.02 * i, "d": 0.6} for i in range(5)}
    path = plot_critical_difference(rank_networks(means), tmp_path / "cd.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cd.png"]
