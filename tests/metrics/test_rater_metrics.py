"""The metrics of several raters on hand-computed cases: generalised energy distance, best-of-N Dice, and the
calibration of a probability against the raters' vote share (cross-checked with scikit-learn's
calibration_curve where the vote share is a single rater's 0/1)."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.metrics.raters import (best_of_n_dice, generalized_energy_distance, pairwise_iou_distance,
                                   rater_calibration, rater_metrics, soft_reliability)


def _masks() -> tuple[np.ndarray, np.ndarray]:
    small = np.zeros((6, 6), dtype=np.uint8)
    small[2:4, 2:4] = 1  # 4 pixels
    large = np.zeros((6, 6), dtype=np.uint8)
    large[2:4, 0:4] = 1  # 8 pixels, a superset: IoU 0.5, Dice 2/3
    return small, large


def test_ged_by_hand() -> None:
    small, large = _masks()
    assert pairwise_iou_distance(small[None], large[None], [1]).tolist() == [[0.5]]
    # samples reproduce the raters: 2 E[d(S, Y)] = E[d(S, S')] + E[d(Y, Y')], so 0
    raters = np.stack([small, large])
    assert generalized_energy_distance(raters, raters, [1]) == pytest.approx(0.0)
    # every sample is the small mask: cross 0.25, samples 0, raters (0 + .5 + .5 + 0) / 4 -> 2 * .25 - .25
    assert generalized_energy_distance(np.stack([small] * 3), raters, [1]) == pytest.approx(0.25)
    # samples spread beyond the raters cost too: samples {empty, large} vs raters {large}
    empty = np.zeros_like(small)
    assert generalized_energy_distance(np.stack([empty, large]), large[None], [1]) == pytest.approx(
        2 * 0.5 - 0.5 - 0.0)


def test_ged_treats_two_empty_maps_as_equal_and_averages_labels() -> None:
    empty = np.zeros((4, 4), dtype=np.uint8)
    assert generalized_energy_distance(empty[None], empty[None], [1, 2]) == 0.0
    two = np.zeros((4, 4), dtype=np.uint8)
    two[0, 0], two[3, 3] = 1, 2
    only_one = np.where(two == 2, 0, two)
    # label 1 agrees (d 0), label 2 is missing from one map (d 1): mean 0.5
    assert pairwise_iou_distance(two[None], only_one[None], [1, 2]).tolist() == [[0.5]]


def test_best_of_n_dice_by_hand() -> None:
    small, large = _masks()
    raters = np.stack([small, large])
    assert best_of_n_dice(raters, raters, [1]) == pytest.approx(1.0)
    assert best_of_n_dice(small[None], raters, [1]) == pytest.approx((1.0 + 2 / 3) / 2)
    assert best_of_n_dice(np.stack([small, small]), raters, [1]) == best_of_n_dice(small[None], raters, [1])


def test_calibration_against_the_vote_share() -> None:
    small, large = _masks()
    raters = np.stack([small, large, large, large])  # vote share: 1 on the small mask, 0.75 on the rest of large
    share = raters.mean(0)
    assert rater_calibration(share, raters, 1) == {"rater_ece": 0.0, "rater_brier": 0.0, "rater_mae": 0.0}
    hard = (large > 0).astype(float)  # 1 wherever any rater says foreground: over-confident on 4 pixels by 0.25
    result = rater_calibration(hard, raters, 1)
    assert result["rater_mae"] == pytest.approx(4 * 0.25 / 8)
    assert result["rater_brier"] == pytest.approx(4 * 0.0625 / 8)
    assert result["rater_ece"] == pytest.approx(abs(1.0 - (4 * 1 + 4 * 0.75) / 8))  # one bin holds all 8


def test_soft_reliability_of_one_rater_matches_scikit_learn() -> None:
    calibration_curve = pytest.importorskip("sklearn.calibration").calibration_curve
    rng = np.random.default_rng(0)
    probability = rng.uniform(0.001, 0.999, 5000)
    truth = (rng.uniform(size=5000) < probability ** 1.5).astype(float)
    ours = soft_reliability(probability, truth, n_bins=10)
    observed, predicted = calibration_curve(truth, probability, n_bins=10, strategy="uniform")
    filled = ours.count > 0
    np.testing.assert_allclose(ours.accuracy[filled], observed)
    np.testing.assert_allclose(ours.confidence[filled], predicted)


def test_rater_metrics_of_identical_samples_are_those_of_one() -> None:
    small, large = _masks()
    raters = np.stack([small, large])
    once = rater_metrics(small[None], raters, [1])
    repeated = rater_metrics(np.stack([small] * 4), raters, [1])
    assert once == pytest.approx(repeated)
    assert set(once) == {"ged", "best_dice", "rater_ece", "rater_brier", "rater_mae"}
