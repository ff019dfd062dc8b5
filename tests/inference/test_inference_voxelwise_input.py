"""The network's input normalised window by window (no resampling): the same bits as the preprocessed array."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.config import Configuration, Normalization
from medseg.inference.voxelwise_input import VoxelwiseInput
from medseg.preprocess.pipeline import preprocess_arrays, voxelwise_prediction_input


def _config(normalization: list[Normalization], spacing: list[float]) -> Configuration:
    return Configuration(name="3d_fullres", spatial_dims=3, target_spacing=spacing, median_shape=[],
                         normalization=normalization, resampling={}, patch_size=[4, 8, 8], batch_size=1, network={},
                         estimated_memory_bytes=0, estimated_step_seconds=0.0, num_iterations=0)


@pytest.mark.parametrize("scheme", [Normalization("ct", clip=[-200.0, 300.0], mean=10.0, std=90.0),
                                    Normalization("zscore"), Normalization("rescale01")])
def test_windows_equal_the_preprocessed_array(scheme: Normalization) -> None:
    rng = np.random.default_rng(0)
    image = np.full((2, 12, 20, 18), -1000, np.int16)
    image[:, 2:11, 3:17, 1:15] = rng.integers(-300, 400, (2, 9, 14, 14))  # content inside a constant background
    config = _config([scheme, Normalization("none")], [1.0, 0.8, 0.8])
    expected = preprocess_arrays(image, None, [1.0, 0.8, 0.8], config)
    voxelwise = voxelwise_prediction_input(image, [1.0, 0.8, 0.8], config)
    assert voxelwise is not None
    cropped, transforms, props = voxelwise
    assert props == expected.properties
    volume = VoxelwiseInput(cropped, transforms)
    assert volume.shape == expected.data.shape and volume.ndim == 4
    region = (slice(None), slice(1, 5), slice(3, 11), slice(0, 8))
    window = volume[region]
    assert window.dtype == torch.float32 and torch.equal(window, torch.from_numpy(expected.data[region]))


def test_resampling_or_masked_zscore_is_not_voxelwise() -> None:
    image = np.random.default_rng(1).normal(0, 1, (1, 6, 10, 10)).astype(np.float32)
    assert voxelwise_prediction_input(image, [2.0, 1.0, 1.0], _config([Normalization("zscore")], [1.0, 1.0, 1.0])) \
        is None
    assert voxelwise_prediction_input(image, [1.0, 1.0, 1.0],
                                      _config([Normalization("zscore", use_mask=True)], [1.0, 1.0, 1.0])) is None
