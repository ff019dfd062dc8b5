"""Intensity transforms do what they claim (checked by statistics and against scipy) and leave labels alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medseg.transforms import AugmentationConfig, SampledBatch, augment
from medseg.transforms import intensity as I
from medseg.transforms import random as R


def image(shape=(3, 2, 24, 24, 24), seed=0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 2 + 1


def first_only(b: int, c: int) -> torch.Tensor:
    mask = torch.zeros(b, c, dtype=torch.bool)
    mask[0, 0] = True
    return mask


def test_noise_has_the_requested_std_and_spares_unmasked_channels():
    x = image()
    mask = torch.tensor([[True, False], [True, True], [False, False]])
    std = torch.tensor([[0.5, 0.5], [0.1, 0.3], [1.0, 1.0]])
    noise = torch.randn((3, 24, 24, 24), generator=torch.Generator().manual_seed(1))
    out = I.add_gaussian_noise(x, std, noise, mask)
    added = (out - x).flatten(2).std(dim=2)
    assert torch.allclose(added[mask], std[mask], rtol=0.03)
    assert torch.equal(out[~mask], x[~mask])


def test_brightness_contrast_gamma_statistics():
    x = image()
    mask = torch.ones(3, 2, dtype=torch.bool)
    factors = torch.tensor([[0.8, 1.2], [1.0, 0.75], [1.25, 0.9]])
    assert torch.allclose(I.scale_brightness(x, factors, mask), x * factors[..., None, None, None])
    free = I.adjust_contrast(x, factors, mask, preserve_range=False)
    assert torch.allclose(free.mean(dim=(2, 3, 4)), x.mean(dim=(2, 3, 4)), atol=1e-4)
    assert torch.allclose(free.std(dim=(2, 3, 4)), x.std(dim=(2, 3, 4)) * factors, rtol=1e-4)
    kept = I.adjust_contrast(x, factors, mask)
    assert (kept.amin(dim=(2, 3, 4)) >= x.amin(dim=(2, 3, 4)) - 1e-6).all()
    assert (kept.amax(dim=(2, 3, 4)) <= x.amax(dim=(2, 3, 4)) + 1e-6).all()
    gammas = torch.full((3, 2), 1.5)
    for invert in (False, True):
        retained = I.adjust_gamma(x, gammas, mask, invert=invert)
        assert torch.allclose(retained.mean(dim=(2, 3, 4)), x.mean(dim=(2, 3, 4)), atol=1e-4)
        assert torch.allclose(retained.std(dim=(2, 3, 4)), x.std(dim=(2, 3, 4)), rtol=1e-4)
        assert not torch.allclose(retained, x, atol=1e-2)
    plain = I.adjust_gamma(x, gammas, mask, retain_stats=False)
    inverted = I.adjust_gamma(x, gammas, mask, invert=True, retain_stats=False)
    assert (plain.mean(dim=(2, 3, 4)) < x.mean(dim=(2, 3, 4))).all()  # gamma > 1 darkens ...
    assert (inverted.mean(dim=(2, 3, 4)) > x.mean(dim=(2, 3, 4))).all()  # ... and brightens when inverted
    assert torch.allclose(I.adjust_gamma(x, torch.ones(3, 2), mask, retain_stats=False), x, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 1, 40, 36), (2, 2, 20, 22, 24)])
def test_blur_matches_scipy(shape):
    x = image(shape, seed=2)
    ndim = len(shape) - 2
    sigmas = torch.rand((*shape[:2], ndim), generator=torch.Generator().manual_seed(3)) * 0.5 + 0.5
    mask = first_only(*shape[:2])
    mask[1, -1] = True
    out = I.gaussian_blur(x, sigmas, mask)
    for b, c in mask.nonzero().tolist():
        expected = ndimage.gaussian_filter(x[b, c].double().numpy(), sigmas[b, c].tolist(), mode="mirror", truncate=4.0)
        np.testing.assert_allclose(out[b, c].numpy(), expected, atol=2e-5)
    assert torch.equal(out[~mask], x[~mask])


def test_low_resolution_removes_fine_detail_and_keeps_shape():
    checker = torch.from_numpy((np.indices((32, 32, 32)).sum(0) % 2).astype(np.float32))[None, None]
    x = checker.expand(2, 1, 32, 32, 32).contiguous()
    scales = torch.tensor([[[0.5, 0.5, 0.5]], [[1.0, 1.0, 1.0]]])
    out = I.simulate_low_resolution(x, scales, torch.ones(2, 1, dtype=torch.bool))
    assert out.shape == x.shape
    assert out[0].std() < 0.5 * x[0].std()
    assert torch.allclose(out[1], x[1])


def test_augmenting_intensity_leaves_labels_untouched_and_is_seeded():
    label = torch.randint(0, 4, (4, 1, 16, 16, 16), generator=torch.Generator().manual_seed(0)).to(torch.int8)
    config = AugmentationConfig.disabled().with_changes(p_noise=1, p_blur=1, p_brightness=1, p_contrast=1,
                                                        p_low_resolution=1, p_gamma=1, p_gamma_inverted=1)
    batch = SampledBatch(["a"] * 4, (16, 16, 16), image((4, 2, 16, 16, 16)), label.clone(), [0, 1, 2, 3])
    first = augment(batch, config, torch.Generator().manual_seed(5))
    again = augment(SampledBatch(["a"] * 4, (16, 16, 16), image((4, 2, 16, 16, 16)), label.clone(), [0, 1, 2, 3]),
                    config, torch.Generator().manual_seed(5))
    assert torch.equal(first["label"], label)
    assert torch.equal(first["image"], again["image"])
    assert not torch.allclose(first["image"], image((4, 2, 16, 16, 16)))


def test_random_wrappers_follow_probabilities():
    generator = torch.Generator().manual_seed(0)
    factors = R.below_or_above_one((0.75, 1.25), (20000,), generator)
    assert abs((factors < 1).double().mean() - 0.5) < 0.02
    assert factors.min() >= 0.75 and factors.max() <= 1.25
    flips = R.sample_mirror(AugmentationConfig(mirror_axes=(1, 2)), 20000, 3, generator)
    assert not flips[:, 0].any() and abs(flips[:, 1:].double().mean() - 0.5) < 0.02
    x = torch.zeros(4000, 1, 2, 2)
    noisy = R.random_noise(x, AugmentationConfig(p_noise=0.1), generator)
    assert abs((noisy.flatten(1).abs().sum(1) > 0).double().mean() - 0.1) < 0.02
    assert torch.equal(x, torch.zeros_like(x))  # not in place unless asked


def test_2_5d_stacks_share_one_intensity_change_per_image_channel():
    """slice_stack 5: the 5 slices of each image channel get the same brightness factor (and gamma), as slices
    of one image would; the two image channels (and the samples) get their own."""
    x = image((6, 10, 16, 16)).abs() + 0.5
    label = torch.zeros((6, 1, 16, 16), dtype=torch.int8)
    brightness = AugmentationConfig.disabled().with_changes(p_brightness=1, slice_stack=5)
    out = augment(SampledBatch(["a"] * 6, (16, 16), x.clone(), label.clone(), list(range(6))), brightness,
                  torch.Generator().manual_seed(3))["image"]
    factors = (out / x).flatten(2).mean(2).view(6, 2, 5)  # (sample, image channel, slice)
    assert torch.allclose(factors, factors[:, :, :1].expand_as(factors), atol=1e-5)
    assert (factors[:, 0, 0] - factors[:, 1, 0]).abs().max() > 1e-3 and factors[:, 0, 0].std() > 1e-3
    unstacked = augment(SampledBatch(["a"] * 6, (16, 16), x.clone(), label.clone(), list(range(6))),
                        brightness.with_changes(slice_stack=1), torch.Generator().manual_seed(3))["image"]
    per_slice = (unstacked / x).flatten(2).mean(2).view(6, 2, 5)
    assert (per_slice - per_slice[:, :, :1]).abs().max() > 1e-3  # without it every slice draws its own
    gamma = AugmentationConfig.disabled().with_changes(p_gamma=1, slice_stack=5)
    shared = augment(SampledBatch(["a"] * 6, (16, 16), x.clone(), label.clone(), list(range(6))), gamma,
                     torch.Generator().manual_seed(4))["image"]
    assert not torch.allclose(shared, x)
    with pytest.raises(ValueError, match="slice_stack"):
        augment(SampledBatch(["a"] * 6, (16, 16), image((6, 7, 16, 16)), label.clone(), list(range(6))),
                brightness, torch.Generator().manual_seed(3))
