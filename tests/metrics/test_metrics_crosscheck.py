"""Cross-checks of medseg.metrics against DeepMind surface-distance, MONAI and medpy on randomised shapes.

Each peer is compared only where it defines the same quantity (agreement to 1e-6 relative):

- DeepMind surface-distance <-> medseg ``mode="surfel"`` (marching-cubes surfels weighted by area, area-weighted
  percentile): HD, HD95 ("max"), MSD (mean of the two directed averages), surface Dice.
- MONAI <-> medseg ``mode="voxel"`` (erosion surface voxels, linear-interpolated percentile): HD, HD95 ("max"),
  ASSD (pooled), surface Dice / NSD (``use_subvoxels=False``), Dice, IoU, panoptic quality; and MONAI's
  ``use_subvoxels=True`` surface Dice <-> medseg ``mode="surfel"``.
- medpy <-> medseg ``mode="voxel"``: Dice, IoU, precision, recall, specificity, |RAVD|, HD, HD95 ("pooled"),
  ASSD (pooled), both surface connectivities.

Where the peers disagree with each other the test asserts the difference and names the convention medseg follows.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage

import medseg.metrics as M

sd_lib = pytest.importorskip("surface_distance")
medpy_metric = pytest.importorskip("medpy.metric")

RTOL = 1e-6
# surface-distance 0.1 imports scipy.ndimage.filters / .morphology, deprecated namespaces
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _blobs(rng, shape, sigma, level):
    return ndimage.gaussian_filter(rng.random(shape), sigma) > level


def _perturb(rng, mask):
    """A plausible prediction: shifted by up to one voxel, boundary voxels flipped, sometimes an extra blob."""
    shifted = np.roll(mask, tuple(int(s) for s in rng.integers(-1, 2, mask.ndim)), axis=tuple(range(mask.ndim)))
    boundary = shifted ^ ndimage.binary_erosion(shifted)
    flip = boundary & (rng.random(mask.shape) < 0.3)
    out = shifted ^ flip
    if rng.random() < 0.5:
        centre = tuple(int(rng.integers(0, s)) for s in mask.shape)
        out[tuple(slice(max(c - 1, 0), c + 2) for c in centre)] = True
    return out


def _case(kind, rng, ndim):
    shape = (22, 26, 20)[:ndim] if ndim == 3 else (48, 56)
    if kind == "blobs":  # several objects, touching the image border
        ref = _blobs(rng, shape, 2.0, 0.52)
    elif kind == "holes":  # a ball with a cavity
        grid = np.indices(shape).astype(float)
        r = np.sqrt(sum((g - s / 2) ** 2 for g, s in zip(grid, shape)))
        ref = (r < min(shape) * 0.4) & (r > min(shape) * 0.15)
    elif kind == "tiny":  # one and two-voxel objects
        ref = np.zeros(shape, bool)
        ref[tuple(int(rng.integers(1, s - 1)) for s in shape)] = True
        p = tuple(int(rng.integers(1, s - 2)) for s in shape)
        ref[p] = True
        ref[(p[0] + 1,) + p[1:]] = True
    elif kind == "touching":  # two boxes sharing a face
        ref = np.zeros(shape, bool)
        ref[tuple(slice(2, s // 2) for s in shape)] = True
        ref[tuple(slice(s // 2, s - 3) for s in shape)] = True
    else:
        raise AssertionError(kind)
    pred = _perturb(rng, ref)
    if kind == "tiny":
        pred = ref.copy()
        pred[tuple(int(rng.integers(0, s)) for s in shape)] = True
    return pred, ref


KINDS = ("blobs", "holes", "tiny", "touching")
SPACINGS = {2: [(1.0, 1.0), (0.7, 1.3)], 3: [(1.0, 1.0, 1.0), (2.5, 0.8, 1.1)]}
CASES = [(kind, ndim, spacing, seed) for ndim in (2, 3) for kind in KINDS for spacing in SPACINGS[ndim]
         for seed in (0, 1)]


def _id(case):
    kind, ndim, spacing, seed = case
    return f"{kind}-{ndim}d-{'x'.join(f'{s:g}' for s in spacing)}-s{seed}"


@pytest.fixture(params=CASES, ids=_id)
def masks(request):
    kind, ndim, spacing, seed = request.param
    pred, ref = _case(kind, np.random.default_rng(seed + 100 * ndim), ndim)
    assert pred.any() and ref.any()
    return pred, ref, spacing


def test_surfel_mode_matches_deepmind(masks):
    pred, ref, spacing = masks
    theirs = sd_lib.compute_surface_distances(ref, pred, spacing)
    ours = M.surface_distances(pred, ref, spacing, mode="surfel")
    np.testing.assert_allclose(np.sort(ours.ref_to_pred), theirs["distances_gt_to_pred"], rtol=RTOL)
    np.testing.assert_allclose(ours.ref_weights.sum(), theirs["surfel_areas_gt"].sum(), rtol=RTOL)
    assert M.hausdorff(ours) == pytest.approx(sd_lib.compute_robust_hausdorff(theirs, 100), rel=RTOL)
    assert M.hausdorff_percentile(ours, 95, "max") == pytest.approx(
        sd_lib.compute_robust_hausdorff(theirs, 95), rel=RTOL)
    assert M.msd(ours) == pytest.approx(np.mean(sd_lib.compute_average_surface_distance(theirs)), rel=RTOL)
    for tau in (0.5, 1.7, 3.0):
        assert M.nsd(ours, tau) == pytest.approx(sd_lib.compute_surface_dice_at_tolerance(theirs, tau), rel=RTOL)


def test_voxel_mode_matches_medpy(masks):
    pred, ref, spacing = masks
    c = M.confusion(pred, ref)
    assert M.dice(c) == pytest.approx(medpy_metric.dc(pred, ref), rel=RTOL)
    assert M.iou(c) == pytest.approx(medpy_metric.jc(pred, ref), rel=RTOL)
    assert M.precision(c) == pytest.approx(medpy_metric.precision(pred, ref), rel=RTOL)
    assert M.recall(c) == pytest.approx(medpy_metric.recall(pred, ref), rel=RTOL)
    assert M.specificity(c) == pytest.approx(medpy_metric.specificity(pred, ref), rel=RTOL)
    # medpy's ravd is signed ((|P| - |R|) / |R|); medseg's is the absolute value, as the name says
    assert M.ravd(c) == pytest.approx(abs(medpy_metric.ravd(pred, ref)), rel=RTOL)
    for connectivity in range(1, pred.ndim + 1):
        sd = M.surface_distances(pred, ref, spacing, connectivity=connectivity)
        kw = dict(voxelspacing=spacing, connectivity=connectivity)
        assert M.hausdorff(sd) == pytest.approx(medpy_metric.hd(pred, ref, **kw), rel=RTOL)
        # medpy's hd95 pools both directed distance sets before taking the percentile
        assert M.hausdorff_percentile(sd, 95, "pooled") == pytest.approx(
            medpy_metric.hd95(pred, ref, **kw), rel=RTOL)
        assert M.assd(sd) == pytest.approx(medpy_metric.assd(pred, ref, **kw), rel=RTOL)
        assert M.directed_means(sd)[0] == pytest.approx(medpy_metric.asd(pred, ref, **kw), rel=RTOL)


def _monai():
    monai_metrics = pytest.importorskip("monai.metrics")
    import torch

    def tensor(mask):
        return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)[None, None])

    return monai_metrics, tensor


def test_voxel_mode_matches_monai(masks):
    mm, t = _monai()
    import torch

    pred, ref, spacing = masks
    sd = M.surface_distances(pred, ref, spacing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = float(mm.compute_hausdorff_distance(t(pred), t(ref), spacing=spacing))
        hd95 = float(mm.compute_hausdorff_distance(t(pred), t(ref), percentile=95, spacing=spacing))
        assd = float(mm.compute_average_surface_distance(t(pred), t(ref), symmetric=True, spacing=spacing))
        onehot_p, onehot_r = torch.cat([1 - t(pred), t(pred)], 1), torch.cat([1 - t(ref), t(ref)], 1)
        nsd = float(mm.compute_surface_dice(onehot_p, onehot_r, [1.7], spacing=spacing))
        nsd_subvoxel = float(mm.compute_surface_dice(onehot_p, onehot_r, [1.7], spacing=spacing, use_subvoxels=True))
        dice = float(mm.compute_dice(onehot_p, onehot_r, include_background=False))
        iou = float(mm.compute_iou(onehot_p, onehot_r, include_background=False))
    # MONAI works in float32: agreement is to float32 precision, well inside 1e-6 relative
    assert M.hausdorff(sd) == pytest.approx(hd, rel=RTOL)
    assert M.hausdorff_percentile(sd) == pytest.approx(hd95, rel=RTOL)  # medseg's default = MONAI's "max"
    assert M.assd(sd) == pytest.approx(assd, rel=RTOL)
    assert M.nsd(sd, 1.7) == pytest.approx(nsd, rel=RTOL)
    # MONAI's use_subvoxels=True is DeepMind's surfel weighting: it matches medseg's surfel mode
    assert M.nsd(M.surface_distances(pred, ref, spacing, mode="surfel"), 1.7) == pytest.approx(nsd_subvoxel, rel=RTOL)
    c = M.confusion(pred, ref)
    assert M.dice(c) == pytest.approx(dice, rel=RTOL)
    assert M.iou(c) == pytest.approx(iou, rel=RTOL)


def test_peers_disagree_on_hd95_and_nsd_and_medseg_names_its_choice():
    """HD95: MONAI/DeepMind take the max of the directed 95th percentiles, medpy pools both sets; medseg's default
    is "max" (the BraTS definition, and the one two of three peers use) and "pooled" is available by name.
    NSD: MONAI counts surface voxels, DeepMind weights surfels by area: the numbers differ on the same masks;
    medseg's default counts voxels (mode="voxel") and matches DeepMind in mode="surfel"."""
    rng = np.random.default_rng(7)
    spacing = (2.5, 0.8, 1.1)
    hd95_gaps, nsd_gaps = [], []
    for _ in range(4):
        ref = _blobs(rng, (22, 26, 20), 2.0, 0.52)
        pred = _perturb(rng, ref)
        voxel = M.surface_distances(pred, ref, spacing)
        pooled = medpy_metric.hd95(pred, ref, voxelspacing=spacing)
        hd95_gaps.append(abs(M.hausdorff_percentile(voxel) - pooled))
        surfel = M.surface_distances(pred, ref, spacing, mode="surfel")
        dm = sd_lib.compute_surface_dice_at_tolerance(sd_lib.compute_surface_distances(ref, pred, spacing), 1.7)
        nsd_gaps.append(abs(M.nsd(voxel, 1.7) - dm))
        assert M.nsd(surfel, 1.7) == pytest.approx(dm, rel=RTOL)
    assert M.conventions.DEFAULT_HD95_DEFINITION == "max"
    assert max(hd95_gaps) > 1e-3, "the two HD95 definitions should differ on these shapes"
    assert max(nsd_gaps) > 1e-3, "voxel counting and surfel-area weighting should differ on these shapes"


def test_empty_masks_follow_the_conventions_table_where_peers_differ():
    """Peers: DeepMind's Dice is NaN for two empty masks, medpy raises on empty masks; medseg returns the table's
    values (two empty masks agree perfectly: Dice 1, distances 0; one empty: Dice 0, distances inf)."""
    empty = np.zeros((10, 12, 9), bool)
    full = empty.copy()
    full[3:6, 4:8, 2:5] = True
    try:
        deepmind_dice = sd_lib.compute_dice_coefficient(empty, empty)
    except AttributeError:  # surface-distance 0.1 returns np.NaN, a name NumPy 2 removed
        deepmind_dice = np.nan
    assert np.isnan(deepmind_dice)
    with pytest.raises(RuntimeError):
        medpy_metric.hd(empty, full)
    for pred, ref in ((empty, empty), (empty, full), (full, empty)):
        values = M.binary_metrics(pred, ref, (1.0, 2.0, 0.5), M.MetricOptions(metrics=M.ALL_METRICS))
        for key, value in values.items():
            expected = M.conventions.empty_value(key, not pred.any(), not ref.any())
            if expected is None:
                assert np.isfinite(value) or np.isnan(value)
            else:
                np.testing.assert_equal(value, expected, err_msg=key)
    # surface-distance returns empty lists for two empty masks, as medseg does before applying the convention
    assert sd_lib.compute_surface_distances(empty, empty, (1, 1, 1))["distances_gt_to_pred"].size == 0


def test_panoptic_quality_matches_monai():
    """MONAI pairs instances at IoU > 0.5, medseg at IoU >= t (the issue's definition): with t just above 0.5 the
    two agree; at t = 0.5 medseg additionally matches the pairs of IoU exactly 0.5 (e.g. 1 voxel inside 2)."""
    mm, _ = _monai()
    import torch

    rng = np.random.default_rng(3)
    ties = 0
    for _ in range(5):
        ref = M.label_instances(_blobs(rng, (64, 64), 1.5, 0.53))
        pred = M.label_instances(_perturb(rng, ref > 0))
        overlap = M.instance_overlap(pred, ref)
        strict = M.match_instances(overlap, float(np.nextafter(0.5, 1.0)))
        tp, fp, fn, iou_sum = mm.compute_panoptic_quality(
            torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(ref.astype(np.int64)),
            output_confusion_matrix=True).tolist()
        assert (strict.tp, strict.fp, strict.fn) == (tp, fp, fn)
        pq = M.instance_metrics(strict)["pq"]
        assert pq == pytest.approx(iou_sum / (tp + 0.5 * fp + 0.5 * fn), rel=RTOL)
        inclusive = M.match_instances(overlap, 0.5)
        assert inclusive.tp - strict.tp == np.count_nonzero(inclusive.iou == 0.5)
        ties += inclusive.tp - strict.tp
    assert ties > 0, "the shapes should contain pairs of IoU exactly 0.5"


def test_mean_label_dice_is_medpys_dice_averaged_over_the_labels_within_the_roi() -> None:
    """The per-case number the benches and QC report: medpy's ``dc`` per label value inside the ROI, averaged;
    a label absent from both maps counts 1 (medpy's ``dc`` gives 0 there, medseg's Dice convention 1)."""
    rng = np.random.default_rng(5)
    shape = (24, 28, 20)
    reference = np.zeros(shape, dtype=np.int16)
    reference[_blobs(rng, shape, 2.0, 0.52)] = 1
    reference[_blobs(rng, shape, 2.0, 0.55)] = 3
    prediction = np.where(_perturb(rng, reference == 1), 1, 0).astype(np.int16)
    prediction[_perturb(rng, reference == 3)] = 3
    roi = _blobs(rng, shape, 3.0, 0.45)
    values = [1, 3, 7]  # 7: absent from both
    expected = [medpy_metric.binary.dc(prediction[roi] == v, reference[roi] == v) for v in (1, 3)] + [1.0]
    assert all(0.1 < e < 0.99 for e in expected[:2])  # real, imperfect overlaps
    assert M.mean_label_dice(prediction, reference, values, roi) == pytest.approx(np.mean(expected), rel=RTOL)
    whole = np.mean([medpy_metric.binary.dc(prediction == v, reference == v) for v in (1, 3)])
    assert M.mean_label_dice(prediction, reference, [1, 3]) == pytest.approx(whole, rel=RTOL)
    assert np.isnan(M.mean_label_dice(prediction, reference, []))


def test_mean_label_dice_can_leave_out_the_labels_absent_from_both() -> None:
    prediction = np.zeros((6, 6), dtype=np.int8)
    reference = np.zeros((6, 6), dtype=np.int8)
    prediction[1:4, 1:4], reference[2:5, 1:4] = 1, 1
    one = medpy_metric.binary.dc(prediction == 1, reference == 1)
    assert M.mean_label_dice(prediction, reference, [1, 2]) == pytest.approx((one + 1.0) / 2)
    assert M.mean_label_dice(prediction, reference, [1, 2], skip_absent=True) == pytest.approx(one)
    roi = np.zeros((6, 6), dtype=bool)
    roi[5] = True  # neither map has a label there
    assert np.isnan(M.mean_label_dice(prediction, reference, [1, 2], roi, skip_absent=True))
    assert M.mean_label_dice(prediction, reference, [1, 2], roi) == 1.0
