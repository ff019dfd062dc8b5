"""nnU-Net plans -> medseg Configuration: each normalisation scheme normalises as nnU-Net's does, resampling and
2d/transpose limits are mapped or named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.errors import MedsegError
from medseg.importers.nnunet_plan import network_transpose, normalizations, resampling
from medseg.preprocess.normalize import normalize

PLANS = Path("plans.json")
STATS = {"foreground_intensity_properties_per_channel": {"1": {
    "percentile_00_5": -100.0, "percentile_99_5": 400.0, "mean": 50.0, "std": 80.0}}}


def test_each_scheme_normalises_as_nnunet():
    raw = {"normalization_schemes": ["ZScoreNormalization", "CTNormalization", "NoNormalization",
                                     "RescaleTo01Normalization", "RGBTo01Normalization"],
           "use_mask_for_norm": [True, False, False, False, False]}
    schemes = normalizations(raw, STATS, 5, PLANS)
    assert [s.scheme for s in schemes] == ["zscore", "ct", "none", "rescale01", "rgb"]
    assert schemes[0].use_mask and schemes[1].clip == [-100.0, 400.0]
    rng = np.random.default_rng(0)
    image = rng.uniform(-300, 600, (5, 6, 7, 8)).astype(np.float32)
    image[4] = rng.uniform(0, 255, (6, 7, 8))
    mask = np.zeros((6, 7, 8), bool)
    mask[1:5, 2:6, 1:7] = True
    out = normalize(image, schemes, mask)
    inside = image[0][mask]
    assert np.allclose(out[0][mask], (inside - inside.mean()) / inside.std(), atol=1e-5)  # nnU-Net: image[mask]
    assert np.allclose(out[1], (np.clip(image[1], -100, 400) - 50) / 80, atol=1e-5)
    assert np.array_equal(out[2], image[2])
    expected = (image[3] - image[3].min()) / (image[3].max() - image[3].min())
    assert np.allclose(out[3], expected, atol=1e-6) and out[3].min() == 0 and np.isclose(out[3].max(), 1)
    assert np.allclose(out[4], image[4] / 255, atol=1e-6)


def test_ct_without_statistics_and_unknown_schemes_are_named():
    with pytest.raises(MedsegError, match="CTNormalization of channel 0 without"):
        normalizations({"normalization_schemes": ["CTNormalization"]}, {}, 1, PLANS)
    with pytest.raises(MedsegError, match="2 normalization schemes for 1 channels"):
        normalizations({"normalization_schemes": ["NoNormalization"] * 2}, {}, 1, PLANS)


def test_resampling_orders_and_separate_z():
    raw = {"resampling_fn_data": "resample_data_or_seg_to_shape",
           "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}}
    notes: list[str] = []
    assert resampling(raw, [1.0, 1.0, 1.0], PLANS, notes) == {"image_order": 3, "z_order": 0, "label": "one_hot_linear",
                                                              "separate_z": False}
    assert notes == []
    assert resampling(raw, [5.0, 0.8, 0.8], PLANS, notes)["separate_z"] is True
    assert len(notes) == 1 and "per case" in notes[0]  # what medseg does differently is said
    forced = {**raw, "resampling_fn_data_kwargs": {"order": 1, "order_z": 1, "force_separate_z": False}}
    assert resampling(forced, [5.0, 0.8, 0.8], PLANS, [])["separate_z"] is False


def test_2d_configuration_must_slice_the_first_axis():
    assert network_transpose({"transpose_forward": [0, 2, 1]}, 2, PLANS) == [1, 0]
    with pytest.raises(MedsegError, match="slices the image along its axis 2"):
        network_transpose({"transpose_forward": [2, 0, 1]}, 2, PLANS)
