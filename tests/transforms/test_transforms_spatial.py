"""Spatial transforms keep image and label aligned: exactly for mirroring and 90-degree turns, away from
boundaries for random rotation, scaling and elastic deformation, in 2D and 3D."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import ndimage

from medseg.errors import MedsegError
from medseg.transforms import AugmentationConfig, sample_spatial
from medseg.transforms import spatial as S


def blobs(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A label map ``(1, 1, *shape)`` int8 of smooth blobs with labels 0, 1, 2, 3."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=max(shape) / 8)
    levels = np.quantile(field, [0.4, 0.65, 0.85])
    return torch.from_numpy(np.digitize(field, levels).astype(np.int8))[None, None]


def warp_whole(label: torch.Tensor, params, patch, mode="linear", displacement=None):
    """Resample the label map, and itself as an image, around the input centre."""
    shape = label.shape[2:]
    centers = torch.tensor([[(s - 1) / 2 for s in shape]] * params.matrices.shape[0], dtype=torch.float64)
    grid = S.normalized_sampling_grid(params.matrices, centers, patch, shape, displacement)
    batch = label.expand(len(centers), *label.shape[1:])
    return S.warp(batch.float(), batch, grid, label_mode=mode)


@pytest.mark.parametrize("shape", [(33, 33), (21, 21, 21)])
def test_mirror_is_exact_and_an_involution(shape):
    label = blobs(shape).expand(4, 1, *shape).contiguous()
    flips = torch.tensor([[k % 2 == 1, k // 2 == 1, k == 3][:len(shape)] for k in range(4)])
    flipped = S.mirror(label, flips)
    for b in range(4):
        axes = [2 + a - 1 for a in range(1, len(shape) + 1) if flips[b, a - 1]]
        expected = label[b:b + 1].flip(axes) if axes else label[b:b + 1]
        assert torch.equal(flipped[b:b + 1], expected)
    assert torch.equal(S.mirror(flipped, flips), label)
    assert not torch.equal(flipped, label)


@pytest.mark.parametrize("mode", ["linear", "nearest"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_quarter_turn_is_exact(mode, ndim):
    shape = (15,) * ndim
    label = blobs(shape, seed=1)
    angles = torch.tensor([[math.pi / 2] + [0.0] * (2 * ndim - 4)], dtype=torch.float64)  # 1 angle in 2D, 3 in 3D
    params = SimpleNamespace(matrices=S.affine_matrices(angles, torch.ones(1, ndim)))
    image, warped = warp_whole(label, params, shape, mode)
    expected = torch.rot90(label, -1, dims=(ndim, ndim + 1))  # plane (y, x): the last two axes
    assert torch.equal(warped, expected)
    assert torch.allclose(image, expected.float(), atol=1e-4)


KINDS = {"rotation": dict(p_rotation=1), "scaling": dict(p_scaling=1), "elastic": dict(p_elastic=1),
         "all": dict(p_rotation=1, p_scaling=1, p_elastic=1)}


@pytest.mark.parametrize("kind, mode", [("rotation", "linear"), ("scaling", "linear"), ("elastic", "linear"),
                                        ("all", "linear"), ("all", "nearest")])
@pytest.mark.parametrize("ndim", [2, 3])
def test_each_spatial_transform_keeps_alignment(kind, mode, ndim):
    shape = (64,) * ndim if ndim == 2 else (36,) * 3
    patch = tuple(s - 8 for s in shape)
    label = blobs(shape, seed=2)
    config = AugmentationConfig.for_patch(patch, elastic_magnitude=(0.03, 0.05), **KINDS[kind])
    params = sample_spatial(config, 3, patch, torch.Generator().manual_seed(3))
    noise = torch.randn((3, ndim, *patch), generator=torch.Generator().manual_seed(4))
    displacement = S.elastic_displacement(noise, params.elastic_sigma, params.elastic_magnitude)
    image, warped = warp_whole(label, params, patch, mode, displacement)
    # interior: output voxels whose whole 3^d neighbourhood has one label; there the bilinear image is that label
    footprint = np.ones((1, 1) + (3,) * ndim, dtype=bool)
    values = warped.numpy()
    interior = (ndimage.maximum_filter(values, footprint=footprint)
                == ndimage.minimum_filter(values, footprint=footprint))
    agree = np.abs(image.numpy() - values) < 1e-3
    assert interior.mean() > 0.3
    assert agree[interior].mean() > 0.98
    assert (np.rint(image.numpy()) == values).mean() > 0.95
    unwarped = label[(slice(None), slice(None), *(slice(4, s - 4) for s in shape))]
    assert (warped != unwarped).float().mean() > 0.02  # the transform really moved things


def test_grid_bounds_contain_every_sample_point():
    patch = (20, 24, 28)
    config = AugmentationConfig(p_rotation=1, p_scaling=1, p_elastic=1, rotation_degrees=(-180, 180))
    params = sample_spatial(config, 8, patch, torch.Generator().manual_seed(0))
    centers = torch.rand(8, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 50
    noise = torch.randn((8, 3, *patch), generator=torch.Generator().manual_seed(2))
    displacement = S.elastic_displacement(noise, params.elastic_sigma, params.elastic_magnitude)
    grid = S.sampling_grid(params.matrices, centers, patch, displacement)
    lo, hi = S.grid_bounds(params.matrices, centers, patch, params.elastic_magnitude)
    points = grid.reshape(8, -1, 3)
    assert (torch.floor(points.amin(1)).numpy() >= lo).all()
    assert (torch.floor(points.amax(1)).numpy() + 1 <= hi - 1).all()
    normalized = S.normalized_sampling_grid(params.matrices, centers, patch, (60, 70, 80), displacement)
    assert torch.allclose(normalized, S.normalize_grid(grid, (60, 70, 80)), atol=1e-5)


def test_elastic_displacement_has_requested_peak_and_is_smooth():
    noise = torch.randn((2, 3, 32, 32, 32), generator=torch.Generator().manual_seed(0))
    magnitude = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.5, 0.0]])
    field = S.elastic_displacement(noise, torch.full((2, 3), 4.0), magnitude)
    assert field.shape == (2, 32, 32, 32, 3)
    assert torch.allclose(field.abs().amax(dim=(1, 2, 3)), magnitude, atol=1e-5)
    step = (field[:, 1:] - field[:, :-1]).abs().amax(dim=(1, 2, 3))
    assert (step <= magnitude * 0.5 + 1e-6).all()


def test_in_plane_only_never_resamples_across_z():
    config = AugmentationConfig.for_patch((8, 64, 64), p_rotation=1, p_scaling=1, p_elastic=1)
    assert config.in_plane_only and config.rotation_degrees == (-180.0, 180.0)
    params = sample_spatial(config, 16, (8, 64, 64), torch.Generator().manual_seed(0))
    assert torch.allclose(params.matrices[:, 0], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).expand(16, 3))
    assert torch.allclose(params.matrices[:, :, 0], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).expand(16, 3))
    assert (params.elastic_magnitude[:, 0] == 0).all() and (params.elastic_magnitude[:, 1:] > 0).all()


def test_spatial_probabilities_follow_the_config():
    config = AugmentationConfig.for_patch((32, 32, 32))
    params = sample_spatial(config, 20000, (32, 32, 32), torch.Generator().manual_seed(0))
    rotated = (params.matrices.det() - 1).abs() < 1e-9  # pure rotations keep the determinant at 1
    assert abs(params.active.double().mean() - (1 - 0.8 * 0.8)) < 0.015
    assert abs((~rotated).double().mean() - 0.2) < 0.015
    assert not params.elastic.any()


def test_config_round_trips_through_json_and_rejects_nonsense():
    config = AugmentationConfig.for_patch((48, 160), p_elastic=0.1)
    assert config.rotation_degrees == (-15.0, 15.0) and config.mirror_axes == (0, 1)
    assert AugmentationConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(MedsegError, match="p_rotation"):
        AugmentationConfig(p_rotation=1.5)
    with pytest.raises(MedsegError, match="unknown augmentation settings"):
        AugmentationConfig.from_dict({"p_rotaton": 0.2})
    assert all(getattr(AugmentationConfig.disabled(), name) == 0 for name in ("p_rotation", "p_noise", "p_gamma"))


@pytest.mark.parametrize("ndim", [2, 3])
def test_fast_linear_labels_equal_the_full_one_hot_interpolation(ndim):
    from medseg.transforms.labels import resample_labels, resample_labels_onehot

    shape = (48,) * ndim if ndim == 2 else (30, 34, 38)
    label = torch.cat([blobs(shape, seed=5) - 1, blobs(shape, seed=6)])  # labels -1..2 and 0..3, 2 samples
    patch = (40,) * ndim if ndim == 2 else (28, 28, 28)
    config = AugmentationConfig(p_rotation=1, p_scaling=1, rotation_degrees=(-180, 180))
    params = sample_spatial(config, 2, patch, torch.Generator().manual_seed(7))
    centers = torch.tensor([[s / 2 + 3.3 for s in shape]] * 2, dtype=torch.float64)  # partly outside the input
    grid = S.normalized_sampling_grid(params.matrices, centers, patch, shape)
    fast = resample_labels(label, grid)
    assert torch.equal(fast, resample_labels_onehot(label, grid))
    assert set(torch.unique(fast).tolist()) == {-1, 0, 1, 2, 3}
