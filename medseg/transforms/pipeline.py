"""The training augmentation of one batch: spatial resampling with one ``grid_sample``, intensity, mirroring.

The sampler hands over a :class:`SampledBatch`: samples without a spatial transform as plain patches, the
others as the input region their sampling grid reads (see ``spatial.grid_bounds``), so nothing larger than
needed is read from disk. :func:`augment` runs on whatever device the tensors are moved to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from medseg.transforms.cascade import random_previous_stage_morphology
from medseg.transforms.config import AugmentationConfig
from medseg.transforms.random import SpatialParams, augment_intensity, device_generator, sample_mirror
from medseg.transforms.spatial import elastic_displacement, mirror, normalized_sampling_grid, warp

Tensor = torch.Tensor


@dataclass
class SampledBatch:
    """Patches of one batch before augmentation (``B`` = ``len(case_ids)``).

    ``plain_image`` ``(Bp, C, *P)`` / ``plain_label`` ``(Bp, 1, *P)`` int8: samples ``plain_index`` of the batch,
    cropped, not resampled. ``region_image`` ``(Bw, C, *R)`` / ``region_label``: the input regions of samples
    ``warp_index`` (zero-padded to a common ``R``), ``region_centers`` ``(Bw, d)`` where each patch centre lies
    in its region's voxel coordinates, ``spatial`` their parameters (rows in ``warp_index`` order).
    """

    case_ids: list[str]
    patch_size: tuple[int, ...]
    plain_image: Tensor
    plain_label: Tensor
    plain_index: list[int]
    region_image: Tensor | None = None
    region_label: Tensor | None = None
    region_centers: Tensor | None = None
    warp_index: list[int] = field(default_factory=list)
    spatial: SpatialParams | None = None

    def to(self, device: torch.device | str) -> "SampledBatch":
        move = (lambda t: None if t is None else t.to(device, non_blocking=True))
        return SampledBatch(self.case_ids, self.patch_size, move(self.plain_image), move(self.plain_label),
                            self.plain_index, move(self.region_image), move(self.region_label),
                            self.region_centers, self.warp_index, self.spatial)


def resample_regions(batch: SampledBatch, label_mode: str, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Resample the region samples to patches: ``(Bw, C, *P)`` float32 and ``(Bw, 1, *P)`` int8."""
    device = batch.region_image.device
    params = batch.spatial
    displacement = None
    if bool(params.elastic.any()):
        ndim = len(batch.patch_size)
        noise_generator = device_generator(generator, device)
        noise = torch.randn((len(batch.warp_index), ndim, *batch.patch_size), generator=noise_generator, device=device)
        displacement = elastic_displacement(noise, params.elastic_sigma.to(device), params.elastic_magnitude.to(device))
    grid = normalized_sampling_grid(params.matrices, batch.region_centers, batch.patch_size,
                                    batch.region_image.shape[2:], displacement)
    return warp(batch.region_image, batch.region_label, grid, label_mode=label_mode)


def assemble(batch: SampledBatch, warped: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
    """Put plain and resampled samples back in batch order: ``(B, C, *P)``, ``(B, 1, *P)``."""
    if not batch.warp_index:
        return batch.plain_image.float(), batch.plain_label
    if not batch.plain_index:
        return warped
    size = len(batch.case_ids)
    image = torch.empty((size, *warped[0].shape[1:]), dtype=torch.float32, device=warped[0].device)
    label = torch.empty((size, *warped[1].shape[1:]), dtype=torch.int8, device=warped[1].device)
    for target, plain, resampled in ((image, batch.plain_image, warped[0]), (label, batch.plain_label, warped[1])):
        target[_index(batch.plain_index, target.device)] = plain.to(target.dtype)
        target[_index(batch.warp_index, target.device)] = resampled
    return image, label


def augment(batch: SampledBatch, config: AugmentationConfig, generator: torch.Generator) -> dict[str, Tensor]:
    """Augment a sampled batch on its tensors' device.

    Returns ``{"image": (B, C, *P) float32, "label": (B, 1, *P) int8}``; cached labels of -1 (outside the crop
    mask) become 0, and with ``config.zero_outside_mask`` the image is set to 0 there, as nnU-Net does.
    """
    warped = resample_regions(batch, config.label_interpolation, generator) if batch.warp_index else None
    image, label = assemble(batch, warped)
    targets = None
    if config.target_channels:  # regression targets: warped (above) and mirrored (below) only
        image, targets = image[:, :-config.target_channels].contiguous(), image[:, -config.target_channels:]
    split = image.shape[1] if config.intensity_channels is None else min(config.intensity_channels, image.shape[1])
    if split < image.shape[1]:  # a cascade: the previous stage's channels take morphology, not intensity changes
        image = torch.cat([_intensity(image[:, :split].contiguous(), config, generator),
                           random_previous_stage_morphology(image[:, split:], config, generator)], 1)
    else:
        image = _intensity(image, config, generator)
    if targets is not None:
        image = torch.cat([image, targets], 1)
    flips = sample_mirror(config, image.shape[0], image.ndim - 2, generator)
    if bool(flips.any()):
        image, label = mirror(image, flips, inplace=True), mirror(label, flips, inplace=True)
    if int(label.min()) < 0:
        outside = label < 0
        if config.zero_outside_mask:
            image = image.masked_fill(outside.expand_as(image), 0.0)
        label = label.masked_fill(outside, 0)
    return {"image": image, "label": label}


def _intensity(image: Tensor, config: AugmentationConfig, generator: torch.Generator) -> Tensor:
    """The intensity chain on ``(B, C, *P)``; for 2.5D (``slice_stack`` k) on ``(B, C / k, k * P0, *P[1:])``, so
    each image channel's k slices share their parameters."""
    k = config.slice_stack
    if k == 1:
        return augment_intensity(image, config, generator, inplace=True)
    b, channels, *patch = image.shape
    if channels % k:
        raise ValueError(f"{channels} image channels are not stacks of slice_stack={k} slices")
    stacked = image.reshape(b, channels // k, k * patch[0], *patch[1:])
    return augment_intensity(stacked, config, generator, inplace=True).reshape(b, channels, *patch)


def _index(positions: Sequence[int], device: torch.device) -> Tensor:
    return torch.as_tensor(list(positions), dtype=torch.long, device=device)
