"""The patch sampler: foreground oversampling, uniform class choice, padding, 2D-from-3D, exact region reads."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from medseg.data.sampler import PatchSampler
from medseg.errors import MedsegError
from medseg.data.cache import write_case
from medseg.transforms import AugmentationConfig, sample_spatial
from medseg.transforms import spatial as S


def test_forced_patches_hold_a_uniformly_chosen_class(synthetic_cache):
    sampler = PatchSampler(synthetic_cache, (8, 8, 8), case_ids=["case_0", "case_1"])
    rng = np.random.default_rng(0)
    assert sampler.forced_count(6) == 2 and sampler.forced_count(4) == 2 and sampler.forced_count(3) == 1
    chosen, foreground = Counter(), 0
    for _ in range(300):
        picks = sampler.choose(6, rng)
        assert [p.forced_class is not None for p in picks] == [False] * 4 + [True] * 2
        batch = sampler.extract(picks)
        for pick, label in zip(picks, batch.plain_label):
            foreground += bool((label > 0).any())
            if pick.forced_class is not None:
                chosen[pick.forced_class] += 1
                assert (label == pick.forced_class).any()
                assert label[0, 4, 4, 4] == pick.forced_class  # the chosen voxel is the patch centre
    assert foreground / 1800 >= 1 / 3
    # class 3 is one voxel of 20000 yet is chosen as often as the large class 1
    assert set(chosen) == {1, 2, 3} and all(abs(n / 600 - 1 / 3) < 0.07 for n in chosen.values())


def test_case_without_foreground_falls_back_to_random_patches(synthetic_cache):
    sampler = PatchSampler(synthetic_cache, (8, 8, 8), case_ids=["case_empty"])
    picks = sampler.choose(3, np.random.default_rng(0))
    assert all(p.forced_class is None for p in picks)
    assert sampler.extract(picks).plain_image.shape == (3, 1, 8, 8, 8)


def test_real_brats_forced_patches_contain_their_class(brats_cache):
    sampler = PatchSampler(brats_cache, (32, 32, 32))
    rng = np.random.default_rng(1)
    for _ in range(10):
        picks = sampler.choose(3, rng)
        batch = sampler.extract(picks)
        assert batch.plain_image.dtype == torch.float32 and batch.plain_image.shape == (3, 2, 32, 32, 32)
        assert (batch.plain_label[2] == picks[2].forced_class).any()


def test_small_images_are_centred_and_zero_padded(tmp_path):
    seg = np.ones((1, 10, 12), dtype=np.int8)
    write_case(tmp_path, "small", seg.astype(np.float32) * 5, seg, {1: np.argwhere(seg[0] == 1)}, {})
    sampler = PatchSampler(tmp_path, (16, 16), foreground_fraction=0.0)
    batch = sampler.extract(sampler.choose(2, np.random.default_rng(0)))
    image = batch.plain_image[0, 0]
    assert image.shape == (16, 16) and image.sum() == 5 * 120
    assert (image[3:13, 2:14] == 5).all()


def test_2d_patches_from_3d_cases_take_one_slice(synthetic_cache):
    sampler = PatchSampler(synthetic_cache, (16, 16), case_ids=["case_0"], foreground_fraction=1.0)
    picks = sampler.choose(20, np.random.default_rng(0))
    batch = sampler.extract(picks)
    assert batch.plain_image.shape == (20, 1, 16, 16)
    for pick, label in zip(picks, batch.plain_label):
        assert pick.slice_index is not None and label[0, 8, 8] == pick.forced_class


def test_2_5d_patches_stack_the_neighbouring_slices_channel_major(tmp_path):
    """slice_context 2: channels c * 5 + j hold channel c at slice z + j - 2, clamped at the ends; the label is
    the centre slice's. Also through the spatial transform's region read (the warped path)."""
    z, y, x = 6, 20, 24
    data = np.zeros((2, z, y, x), dtype=np.float32)
    data[0] = np.arange(z)[:, None, None]  # channel 0 says its slice
    data[1] = 100 + np.arange(z)[:, None, None]
    seg = np.zeros((1, z, y, x), dtype=np.int8)
    seg[0] = (np.arange(z) % 2)[:, None, None]  # odd slices are class 1
    write_case(tmp_path, "case", data, seg, {1: np.argwhere(seg[0] == 1)}, {})
    sampler = PatchSampler(tmp_path, (16, 16), foreground_fraction=0.5, slice_context=2)
    assert sampler.num_channels == 10
    picks = sampler.choose(40, np.random.default_rng(0))
    assert {p.slice_index for p in picks} >= {0, z - 1}  # the ends, where slices repeat, are among them
    batch = sampler.extract(picks)
    assert batch.plain_image.shape == (40, 10, 16, 16)
    for pick, image, label in zip(picks, batch.plain_image, batch.plain_label):
        expected = np.clip(np.arange(pick.slice_index - 2, pick.slice_index + 3), 0, z - 1)
        assert image[:5, 8, 8].tolist() == expected.tolist()
        assert image[5:, 8, 8].tolist() == (100 + expected).tolist()
        assert int(label[0, 8, 8]) == pick.slice_index % 2
    config = AugmentationConfig(p_rotation=1, rotation_degrees=(-45, 45))
    warped = sampler.extract(picks[:4], sample_spatial(config, 4, (16, 16), torch.Generator().manual_seed(0)))
    for pick, region in zip(picks[:4], warped.region_image):
        centre = region[:, region.shape[1] // 2, region.shape[2] // 2]
        assert centre[:5].tolist() == np.clip(np.arange(pick.slice_index - 2, pick.slice_index + 3), 0, z - 1).tolist()
    with pytest.raises(MedsegError, match="slice_context"):
        PatchSampler(tmp_path, (4, 16, 16), slice_context=1)  # a 3D patch has no slices to stack


def test_regions_read_for_the_spatial_transform_give_the_same_patch_as_the_whole_volume(synthetic_cache):
    """Resampling the small region the sampler reads equals resampling the whole (padded) case."""
    patch = (12, 16, 16)
    sampler = PatchSampler(synthetic_cache, patch, case_ids=["case_0"])
    config = AugmentationConfig(p_rotation=1, p_scaling=1, rotation_degrees=(-45, 45))
    picks = sampler.choose(4, np.random.default_rng(2))
    params = sample_spatial(config, 4, patch, torch.Generator().manual_seed(0))
    batch = sampler.extract(picks, params)
    assert batch.warp_index == [0, 1, 2, 3] and not batch.plain_index
    grid = S.normalized_sampling_grid(params.matrices, batch.region_centers, patch, batch.region_image.shape[2:])
    image, label = S.warp(batch.region_image, batch.region_label, grid)
    case = sampler.case("case_0")
    pad = 40
    whole = torch.from_numpy(np.pad(np.asarray(case.data), [(0, 0)] + [(pad, pad)] * 3))[None].expand(4, -1, -1, -1, -1)
    centers = torch.tensor(np.stack([p.lower for p in picks]) + (np.array(patch) - 1) / 2 + pad)
    full_grid = S.normalized_sampling_grid(params.matrices, centers, patch, whole.shape[2:])
    expected_image, expected_label = S.warp(whole.contiguous(), whole.to(torch.int8).contiguous(), full_grid)
    assert torch.allclose(image, expected_image, atol=1e-4)
    assert (label == expected_label).float().mean() > 0.999
    assert all(r < 60 for r in batch.region_image.shape[2:])  # a region, not the whole case


def test_bad_inputs_name_the_fix(tmp_path, synthetic_cache):
    with pytest.raises(MedsegError, match="medseg preprocess"):
        PatchSampler(tmp_path / "missing", (8, 8))
    with pytest.raises(MedsegError, match="does not fit"):
        PatchSampler(synthetic_cache, (8,))
