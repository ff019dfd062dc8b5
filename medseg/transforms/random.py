"""Random wrappers: sample parameters from an explicit ``torch.Generator``, then call the deterministic transforms.

All parameters are drawn on the CPU from the generator passed in (so a seed fixes them whatever the device);
noise fields are drawn on the image's device from a generator seeded by that CPU generator.
Probabilities and ranges come from an :class:`AugmentationConfig`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from medseg.transforms import intensity
from medseg.transforms.config import AugmentationConfig
from medseg.transforms.spatial import affine_matrices

Tensor = torch.Tensor


def uniform(low: float, high: float, shape: Sequence[int], generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(tuple(shape), generator=generator, dtype=torch.float64)


def bernoulli(p: float, shape: Sequence[int], generator: torch.Generator) -> Tensor:
    return torch.rand(tuple(shape), generator=generator, dtype=torch.float64) < p


def below_or_above_one(value_range: tuple[float, float], shape: Sequence[int], generator: torch.Generator) -> Tensor:
    """nnU-Net's ``BGContrast``: with probability 0.5 uniform in ``[low, 1)``, else in ``[max(low, 1), high)``."""
    low, high = value_range
    below = bernoulli(0.5, shape, generator) & (low < 1)
    return torch.where(below, uniform(low, 1.0, shape, generator), uniform(max(low, 1.0), high, shape, generator))


def device_generator(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """``generator`` itself on the CPU; elsewhere a generator on ``device`` seeded from it (deterministic)."""
    if torch.device(device).type == "cpu":
        return generator
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


@dataclass
class SpatialParams:
    """Per-sample spatial augmentation of a batch. ``matrices`` ``(B, d, d)`` (rotation @ scaling);
    ``active`` ``(B,)`` whether the sample is resampled at all; ``elastic`` ``(B,)``; ``elastic_sigma`` and
    ``elastic_magnitude`` ``(B, d)`` in voxels (zero where not elastic)."""

    matrices: Tensor
    active: Tensor
    elastic: Tensor
    elastic_sigma: Tensor
    elastic_magnitude: Tensor

    def select(self, index: Sequence[int]) -> "SpatialParams":
        index = torch.as_tensor(list(index), dtype=torch.long)
        return SpatialParams(self.matrices[index], self.active[index], self.elastic[index],
                             self.elastic_sigma[index], self.elastic_magnitude[index])


def sample_spatial(config: AugmentationConfig, batch_size: int, patch_size: Sequence[int],
                   generator: torch.Generator) -> SpatialParams:
    """Draw rotation, scaling and elastic parameters for ``batch_size`` patches of size ``patch_size``."""
    ndim, batch = len(patch_size), batch_size
    rotate = bernoulli(config.p_rotation, (batch,), generator)
    scale = bernoulli(config.p_scaling, (batch,), generator)
    elastic = bernoulli(config.p_elastic, (batch,), generator)
    low, high = (math.radians(a) for a in config.rotation_degrees)
    angles = uniform(low, high, (batch, 1 if ndim == 2 else 3), generator)
    if ndim == 3 and config.in_plane_only:
        angles[:, 1:] = 0.0
    angles = torch.where(rotate.unsqueeze(1), angles, torch.zeros_like(angles))
    factors = uniform(*config.scaling_range, (batch, 1), generator).expand(batch, ndim).clone()
    if ndim == 3 and config.in_plane_only:
        factors[:, 0] = 1.0
    factors = torch.where(scale.unsqueeze(1), factors, torch.ones_like(factors))
    edges = torch.tensor([float(p) for p in patch_size], dtype=torch.float64)
    sigma = uniform(*config.elastic_sigma, (batch, ndim), generator) * edges
    magnitude = uniform(*config.elastic_magnitude, (batch, ndim), generator) * edges
    if ndim == 3 and config.in_plane_only:
        magnitude[:, 0] = 0.0
    magnitude = torch.where(elastic.unsqueeze(1), magnitude, torch.zeros_like(magnitude))
    return SpatialParams(affine_matrices(angles, factors), rotate | scale | elastic, elastic, sigma, magnitude)


def sample_mirror(config: AugmentationConfig, batch_size: int, ndim: int, generator: torch.Generator) -> Tensor:
    """``(B, d)`` bool: flip axis k of sample b, each allowed axis with probability 0.5."""
    flips = bernoulli(0.5, (batch_size, ndim), generator)
    allowed = torch.tensor([k in config.mirror_axes for k in range(ndim)])
    return flips & allowed


def _sample_mask(p_sample: float, p_channel: float, shape: tuple[int, int], generator: torch.Generator) -> Tensor:
    return bernoulli(p_sample, (shape[0], 1), generator) & bernoulli(p_channel, shape, generator)


def random_noise(image: Tensor, config: AugmentationConfig, generator: torch.Generator, *,
                 inplace: bool = False) -> Tensor:
    """Additive Gaussian noise, one std per sample shared by its channels (nnU-Net: synchronised)."""
    shape = tuple(image.shape[:2])
    mask = _sample_mask(config.p_noise, 1.0, shape, generator)
    std = uniform(*config.noise_std, (shape[0], 1), generator).expand(shape)
    rows = int(mask.sum())
    if rows == 0:
        return image
    noise = torch.randn((rows, *image.shape[2:]), generator=device_generator(generator, image.device),
                        device=image.device)
    return intensity.add_gaussian_noise(image, std, noise, mask, inplace=inplace)


def random_blur(image: Tensor, config: AugmentationConfig, generator: torch.Generator, *,
                inplace: bool = False) -> Tensor:
    """Gaussian blur of about half the channels, sigma drawn per channel and per axis."""
    shape = tuple(image.shape[:2])
    mask = _sample_mask(config.p_blur, config.blur_p_per_channel, shape, generator)
    sigmas = uniform(*config.blur_sigma, (*shape, image.ndim - 2), generator)
    return intensity.gaussian_blur(image, sigmas, mask, inplace=inplace)


def random_brightness(image: Tensor, config: AugmentationConfig, generator: torch.Generator, *,
                      inplace: bool = False) -> Tensor:
    """Multiply channels by a factor drawn below or above 1 with equal chance."""
    return _random_factor(image, config.p_brightness, config.brightness_range, intensity.scale_brightness,
                          generator, inplace)


def random_contrast(image: Tensor, config: AugmentationConfig, generator: torch.Generator, *,
                    inplace: bool = False) -> Tensor:
    """Scale channels' contrast about their mean (range kept), factor below or above 1 with equal chance."""
    return _random_factor(image, config.p_contrast, config.contrast_range, intensity.adjust_contrast,
                          generator, inplace)


def _random_factor(image: Tensor, p_sample: float, value_range: tuple[float, float], transform,
                   generator: torch.Generator, inplace: bool) -> Tensor:
    shape = tuple(image.shape[:2])
    mask = _sample_mask(p_sample, 1.0, shape, generator)
    return transform(image, below_or_above_one(value_range, shape, generator), mask, inplace=inplace)


def random_low_resolution(image: Tensor, config: AugmentationConfig, generator: torch.Generator, *,
                          inplace: bool = False) -> Tensor:
    """Low-resolution simulation of about half the channels, one factor per channel for all its axes."""
    shape = tuple(image.shape[:2])
    ndim = image.ndim - 2
    mask = _sample_mask(config.p_low_resolution, config.low_resolution_p_per_channel, shape, generator)
    scales = uniform(*config.low_resolution_scale, (*shape, 1), generator).expand(*shape, ndim).clone()
    if ndim == 3 and config.in_plane_only:
        scales[..., 0] = 1.0
    return intensity.simulate_low_resolution(image, scales, mask, inplace=inplace)


def random_gamma(image: Tensor, config: AugmentationConfig, generator: torch.Generator, *, invert: bool,
                 inplace: bool = False) -> Tensor:
    shape = tuple(image.shape[:2])
    mask = _sample_mask(config.p_gamma_inverted if invert else config.p_gamma, 1.0, shape, generator)
    gammas = below_or_above_one(config.gamma_range, shape, generator)
    return intensity.adjust_gamma(image, gammas, mask, invert=invert, retain_stats=True, inplace=inplace)


def augment_intensity(image: Tensor, config: AugmentationConfig, generator: torch.Generator, *,
                      inplace: bool = False) -> Tensor:
    """nnU-Net's intensity chain on ``(B, C, *P)``: noise, blur, brightness, contrast, low-res, gammas."""
    image = image if inplace else image.clone()
    for step in (random_noise, random_blur, random_brightness, random_contrast, random_low_resolution):
        image = step(image, config, generator, inplace=True)
    image = random_gamma(image, config, generator, invert=True, inplace=True)
    return random_gamma(image, config, generator, invert=False, inplace=True)
