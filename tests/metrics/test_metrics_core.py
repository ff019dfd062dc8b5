"""Unit tests of medseg.metrics on hand-computed cases, invariances and the conventions table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import medseg.metrics as M
from medseg.metrics import conventions

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def test_every_metric_has_a_convention_row_and_docs_hold_the_generated_table():
    keys = set(conventions.BY_KEY)
    from medseg.metrics.raters import RATER_METRICS

    assert set(M.ALL_METRICS) | {"ece", "brier"} | set(RATER_METRICS) == keys
    assert conventions.render_markdown() in DOCS.read_text(), "regenerate the table in docs/metrics.md"
    with pytest.raises(KeyError, match="known: dice"):
        conventions.convention("dsc")


def test_overlap_metrics_by_hand():
    pred = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], bool)
    ref = np.array([[1, 0, 0, 0], [1, 1, 1, 0]], bool)
    c = M.confusion(pred, ref)
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 1, 2, 3)
    values = M.overlap_metrics(c)
    expected = {"dice": 4 / 7, "iou": 2 / 5, "precision": 2 / 3, "recall": 2 / 4, "specificity": 3 / 4,
                "accuracy": 5 / 8, "volume_similarity": 1 - 1 / 7, "ravd": 1 / 4}
    assert values == pytest.approx(expected)
    roi = np.array([[1, 1, 1, 0], [1, 1, 1, 0]], bool)
    c_roi = M.confusion(pred, ref, roi)
    assert (c_roi.tp, c_roi.fp, c_roi.fn, c_roi.tn) == (2, 1, 2, 1)


def test_surface_metrics_by_hand_on_a_shifted_square():
    ref = np.zeros((12, 12), bool)
    ref[3:7, 3:7] = True
    pred = np.roll(ref, 2, axis=1)  # moved 2 columns = 2 * 0.5 mm
    sd = M.surface_distances(pred, ref, (3.0, 0.5))
    # 12 surface pixels each; the shared rows match exactly except the moved columns
    assert sd.pred_to_ref.size == sd.ref_to_pred.size == 12
    assert M.hausdorff(sd) == pytest.approx(1.0)
    assert sorted(sd.pred_to_ref) == pytest.approx([0.0] * 4 + [0.5] * 4 + [1.0] * 4)
    assert M.assd(sd) == pytest.approx(0.5)
    assert M.msd(sd) == pytest.approx(0.5)
    assert M.nsd(sd, 0.5) == pytest.approx(8 / 12)
    assert M.hausdorff_percentile(sd, 50) == pytest.approx(0.5)


def test_spacing_scales_distances_and_crop_is_invisible():
    rng = np.random.default_rng(0)
    from scipy import ndimage

    ref = ndimage.gaussian_filter(rng.random((18, 20, 16)), 2) > 0.5  # touches the border
    pred = np.roll(ref, 1, axis=0)
    small = M.surface_distances(pred, ref, (1.0, 2.0, 0.5))
    double = M.surface_distances(pred, ref, (2.0, 4.0, 1.0))
    assert M.hausdorff_percentile(double) == pytest.approx(2 * M.hausdorff_percentile(small), rel=1e-6)
    assert M.assd(double) == pytest.approx(2 * M.assd(small), rel=1e-6)
    # the same masks inside a larger empty image: identical surfaces, since outside the image is background
    big_p, big_r = np.zeros((30, 31, 32), bool), np.zeros((30, 31, 32), bool)
    big_p[5:23, 4:24, 9:25], big_r[5:23, 4:24, 9:25] = pred, ref
    embedded = M.surface_distances(big_p, big_r, (1.0, 2.0, 0.5))
    np.testing.assert_allclose(np.sort(embedded.pred_to_ref), np.sort(small.pred_to_ref))
    for mode in ("voxel", "surfel"):
        a = M.surface_distances(pred, ref, (1.0, 2.0, 0.5), mode=mode)
        b = M.surface_distances(big_p, big_r, (1.0, 2.0, 0.5), mode=mode)
        assert M.nsd(a, 1.2) == pytest.approx(M.nsd(b, 1.2))


def test_hd95_definitions_differ_as_documented():
    sd = M.SurfaceDistances(np.array([0.0, 1.0, 2.0, 10.0]), np.array([0.0, 0.0]), np.ones(4), np.ones(2), "voxel")
    p_directed = np.percentile([0.0, 1.0, 2.0, 10.0], 95)
    assert M.hausdorff_percentile(sd, 95, "max") == pytest.approx(p_directed)
    assert M.hausdorff_percentile(sd, 95, "mean") == pytest.approx(p_directed / 2)
    assert M.hausdorff_percentile(sd, 95, "pooled") == pytest.approx(np.percentile([0, 1, 2, 10, 0, 0], 95))
    with pytest.raises(ValueError, match="definition"):
        M.hausdorff_percentile(sd, 95, "median")


def test_nsd_counts_a_distance_equal_to_tau_as_inside():
    ref = np.zeros((9, 9, 9), bool)
    ref[2:6, 2:6, 2:6] = True
    pred = np.roll(ref, 1, axis=2)
    spacing = (1.0, 1.0, 0.7)  # shifted by exactly 0.7 mm; float32 0.7 != float64 0.7
    sd = M.surface_distances(pred, ref, spacing)
    assert M.nsd(sd, 0.7) == pytest.approx(1.0)
    assert M.nsd(sd, 0.69) < 1.0


def test_boundary_iou():
    ref = np.zeros((20, 20), bool)
    ref[4:14, 4:14] = True
    assert M.boundary_iou(ref, ref) == 1.0
    pred = np.roll(ref, 1, axis=0)
    # a band of 1 px: the one-pixel rings of two 10x10 squares moved by one row
    from scipy import ndimage

    rp, rr = (m & ~ndimage.binary_erosion(m) for m in (pred, ref))
    expected = np.count_nonzero(rp & rr) / np.count_nonzero(rp | rr)
    assert M.boundary_iou(pred, ref, width=1.0) == pytest.approx(expected)
    # a band wider than the objects is the whole mask: boundary IoU becomes IoU
    assert M.boundary_iou(pred, ref, width=50.0) == pytest.approx(M.iou(M.confusion(pred, ref)))


def test_cldice_rewards_connected_centrelines():
    ref = np.zeros((40, 40), bool)
    ref[18:23, 2:38] = True  # a vessel
    assert M.cldice(ref, ref) == pytest.approx(1.0)
    broken = ref.copy()
    broken[:, 19:21] = False  # a 2-pixel gap: Dice barely moves, the centreline loses its gap
    thin = ref.copy()
    thin[18, :] = False  # one pixel thinner: the centreline is still inside
    assert M.dice(M.confusion(broken, ref)) > 0.9
    assert M.cldice(thin, ref) == pytest.approx(1.0)
    assert M.cldice(broken, ref) < 1.0
    assert M.cldice(broken, ref) < M.cldice(thin, ref)


def test_instance_matching_detection_and_panoptic_quality():
    ref = np.zeros((20, 20), np.int32)
    ref[1:5, 1:5] = 1   # 16 px, found exactly
    ref[10:14, 10:14] = 2  # 16 px, found with IoU 12/20 = 0.6
    ref[16:18, 1:3] = 3  # missed
    pred = np.zeros_like(ref)
    pred[1:5, 1:5] = 7
    pred[10:14, 11:15] = 3
    pred[1:3, 16:18] = 9  # false positive
    match = M.match_instances(M.instance_overlap(pred, ref), 0.5)
    assert (match.tp, match.fp, match.fn) == (2, 1, 1)
    values = M.instance_metrics(match)
    assert values["detection_precision"] == pytest.approx(2 / 3)
    assert values["detection_recall"] == pytest.approx(2 / 3)
    assert values["sq"] == pytest.approx((1.0 + 0.6) / 2)
    assert values["rq"] == pytest.approx(2 / 3)
    assert values["pq"] == pytest.approx(values["sq"] * values["rq"])
    assert M.match_instances(M.instance_overlap(pred, ref), 0.7).tp == 1


def _aji_as_written(pred: np.ndarray, ref: np.ndarray) -> float:
    """Kumar et al. 2017's algorithm, literally: loops over reference and predicted instances."""
    intersection = union = 0
    used = set()
    pred_ids = [p for p in np.unique(pred) if p]
    for g in [r for r in np.unique(ref) if r]:
        in_g = ref == g
        best, best_iou = None, 0.0
        for s in pred_ids:
            in_s = pred == s
            iou = (in_g & in_s).sum() / (in_g | in_s).sum()
            if iou > best_iou:
                best, best_iou = s, iou
        if best is None:
            union += in_g.sum()
            continue
        intersection += (in_g & (pred == best)).sum()
        union += (in_g | (pred == best)).sum()
        used.add(best)
    union += sum((pred == s).sum() for s in pred_ids if s not in used)
    return intersection / union


def test_aji_follows_the_paper_and_penalises_merged_nuclei():
    ref = np.zeros((12, 20), np.int32)
    ref[2:7, 2:6], ref[2:7, 6:10] = 1, 2  # two touching nuclei, 20 px each
    ref[8:11, 14:18] = 3                  # a missed one
    merged = np.zeros_like(ref)
    merged[2:7, 2:11] = 5                 # one object for both, 45 px
    merged[0:2, 15:19] = 8                # a false positive, 8 px
    overlap = M.instance_overlap(merged, ref)
    aji = M.aggregated_jaccard(overlap)
    assert aji == pytest.approx((20 + 20) / (45 + 45 + 12 + 8))  # the merged object counts in U for each nucleus
    assert aji == pytest.approx(_aji_as_written(merged, ref))
    assert M.instance_metrics(M.match_instances(overlap, 0.5))["pq"] == 0.0  # IoU 20/45 matches nothing
    rng = np.random.default_rng(0)
    for _ in range(20):  # random maps: the vectorised form agrees with the loops
        a, b = rng.integers(0, 6, (16, 16)), rng.integers(0, 5, (16, 16))
        a[rng.random((16, 16)) < 0.4] = 0
        assert M.aggregated_jaccard(M.instance_overlap(a, b)) == pytest.approx(_aji_as_written(a, b))
    empty = np.zeros_like(ref)
    assert M.aggregated_jaccard(M.instance_overlap(empty, empty)) == 1.0
    assert M.aggregated_jaccard(M.instance_overlap(empty, ref)) == 0.0
    assert M.aggregated_jaccard(M.instance_overlap(merged, empty)) == 0.0


def test_instances_from_connected_components_respect_connectivity():
    mask = np.zeros((5, 5), bool)
    mask[1, 1] = mask[2, 2] = True  # diagonal neighbours
    assert M.label_instances(mask, 1).max() == 2
    assert M.label_instances(mask, 2).max() == 1
    assert M.label_instances(mask).max() == 1  # default: full neighbourhood (cc3d, scikit-image, BraTS 2023)
    corner = np.zeros((3, 3, 3), bool)
    corner[0, 0, 0] = corner[1, 1, 1] = True
    assert M.label_instances(corner).max() == 1 and M.label_instances(corner, 2).max() == 2


def test_lesion_wise_dice_and_f1():
    ref = np.zeros((30, 30), bool)
    ref[2:6, 2:6] = True    # lesion A, covered by two predicted pieces
    ref[20:24, 20:24] = True  # lesion B, missed
    pred = np.zeros_like(ref)
    pred[2:6, 2:4] = True
    pred[2:6, 5:7] = True
    pred[12:14, 12:14] = True  # false positive
    values = M.lesion_metrics(pred, ref)
    dice_a = 2 * 12 / (16 + 16)
    assert values["lesion_dice"] == pytest.approx(dice_a / 3)  # (A + B(0)) / (2 lesions + 1 FP)
    assert values["lesion_f1"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))


def test_calibration_by_hand():
    probs = np.array([0.9, 0.9, 0.2, 0.6])
    labels = np.array([1, 0, 0, 1])
    # top-label confidences 0.9, 0.9, 0.8, 0.6; correct: yes, no, yes, yes
    rel = M.reliability(probs, labels, n_bins=5)  # bins (0, .2], (.2, .4], (.4, .6], (.6, .8], (.8, 1]
    assert rel.count.tolist() == [0, 0, 1, 1, 2]
    expected_ece = (1 * abs(1 - 0.6) + 1 * abs(1 - 0.8) + 2 * abs(0.5 - 0.9)) / 4
    assert rel.ece == pytest.approx(expected_ece)
    assert M.expected_calibration_error(probs, labels, n_bins=5) == pytest.approx(expected_ece)
    two_class = np.stack([1 - probs, probs])
    assert M.expected_calibration_error(two_class, labels, n_bins=5) == pytest.approx(expected_ece)
    brier = np.mean((probs - labels) ** 2)
    assert M.brier_score(probs, labels) == pytest.approx(brier)
    assert M.brier_score(two_class, labels) == pytest.approx(2 * brier)
    assert math.isnan(M.brier_score(probs, labels, roi=np.zeros(4, bool)))


def test_accumulator_regions_and_summary():
    ref = np.zeros((2, 10, 10), np.uint8)
    ref[0, 2:5, 2:5] = 1
    ref[1, 2:5, 2:5] = 2
    ref[1, 6:8, 6:8] = 4
    pred = ref.copy()
    pred[1, 6:8, 6:8] = 0  # enhancing missed
    acc = M.MetricAccumulator({"whole": (1, 2, 4), "enhancing": (4,)}, M.MetricOptions(metrics=("dice", "hd95")))
    acc.update("a", pred, ref, (3.0, 1.0, 1.0))
    acc.update("b", ref, ref, (3.0, 1.0, 1.0))
    rows = {(r["case"], r["class"]): r for r in acc.rows}
    assert rows["a", "enhancing"]["dice"] == 0.0 and math.isinf(rows["a", "enhancing"]["hd95"])
    assert rows["a", "whole"]["dice"] == pytest.approx(2 * 18 / (18 + 22))
    summary = acc.aggregate()
    assert summary["enhancing"]["hd95"]["n_inf"] == 1 and summary["enhancing"]["hd95"]["mean"] == 0.0
    assert summary["enhancing"]["dice"]["mean"] == pytest.approx(0.5)
    acc.reset()
    assert acc.rows == []
    with pytest.raises(ValueError, match="unknown metric"):
        M.MetricOptions(metrics=("dsc",))


def test_bootstrap_ci_brackets_the_mean_and_is_reproducible():
    values = np.random.default_rng(0).normal(0.8, 0.05, 40)
    low, high = M.bootstrap_ci(values, seed=1)
    assert low < values.mean() < high
    assert (low, high) == M.bootstrap_ci(values, seed=1)
    assert high - low == pytest.approx(2 * 1.96 * values.std(ddof=1) / np.sqrt(40), rel=0.25)
    stats = M.summarise([1.0, math.nan, math.inf, 0.5])
    assert (stats["n"], stats["n_finite"], stats["n_nan"], stats["n_inf"]) == (4, 2, 1, 1)
    assert stats["mean"] == pytest.approx(0.75)


def test_matching_below_one_half_maximises_total_iou_not_greedy():
    # X (20 vx) overlaps A (10 vx) by 8 and B (20 vx) by 12; Y (10 vx) overlaps B by 8.
    # Greedy by IoU takes X-B (12/28) and leaves A and Y unmatched; the optimum is X-A (8/22) + Y-B (8/22).
    overlap = M.InstanceOverlap(
        pred_ids=np.array([1, 2]), ref_ids=np.array([1, 2]), pred_sizes=np.array([20, 10]),
        ref_sizes=np.array([10, 20]), pair_pred=np.array([0, 0, 1]), pair_ref=np.array([0, 1, 1]),
        pair_intersection=np.array([8, 12, 8]))
    match = M.match_instances(overlap, 0.3)
    assert sorted(zip(match.pred_index.tolist(), match.ref_index.tolist())) == [(0, 0), (1, 1)]
    assert match.iou == pytest.approx([8 / 22, 8 / 22])
    strict = M.match_instances(overlap, 0.4)  # only X-B passes
    assert (strict.tp, strict.fp, strict.fn) == (1, 1, 1) and strict.iou == pytest.approx([12 / 28])
