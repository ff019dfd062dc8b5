"""Deterministic spatial transforms on batches: affine + elastic sampling grids, resampling, mirroring.

Coordinates are voxel indices in array order, ``(z, y, x)`` in 3D and ``(y, x)`` in 2D (``d`` = 3 or 2).
A *grid* ``(B, *P, d)`` holds, for every voxel of the output patch ``P``, the voxel coordinate in the input
where it is sampled. Image and label map of a sample are resampled with the same grid, so they stay aligned
by construction. Rotation and scaling act in voxel space (as in nnU-Net): with anisotropic spacing a rotation
out of the (y, x) plane shears physical space, which is why strongly anisotropic patches rotate in-plane only.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medseg.transforms.labels import resample_labels

Tensor = torch.Tensor


def rotation_axes_planes(ndim: int) -> list[tuple[int, int]]:
    """The plane ``(i, j)`` each rotation angle acts in: 2D one angle in (y, x); 3D about z, y, x in turn."""
    return [(0, 1)] if ndim == 2 else [(1, 2), (0, 2), (0, 1)]


def affine_matrices(angles: Tensor, scales: Tensor) -> Tensor:
    """Rotation-times-scaling matrices ``R @ diag(scales)``, ``(B, d, d)``, float64.

    ``angles``: ``(B, 1)`` in 2D or ``(B, 3)`` in 3D, radians; angle k rotates in plane
    ``rotation_axes_planes(d)[k]`` (3D: about axis 0 first, then 1, then 2). ``scales``: ``(B, d)``.
    """
    batch, ndim = scales.shape
    matrix = torch.diag_embed(scales.to(torch.float64))
    for k, (i, j) in enumerate(rotation_axes_planes(ndim)):
        cos, sin = torch.cos(angles[:, k].double()), torch.sin(angles[:, k].double())
        rotation = torch.eye(ndim, dtype=torch.float64).repeat(batch, 1, 1)
        rotation[:, i, i], rotation[:, i, j], rotation[:, j, i], rotation[:, j, j] = cos, -sin, sin, cos
        matrix = rotation @ matrix
    return matrix


def centered_coordinates(patch_size: Sequence[int], device: torch.device | str = "cpu") -> Tensor:
    """``(*P, d)`` float32 voxel offsets of the patch voxels from the patch centre ``(P - 1) / 2``."""
    axes = [torch.arange(p, dtype=torch.float32, device=device) - (p - 1) / 2 for p in patch_size]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def sampling_grid(matrices: Tensor, centers: Tensor, patch_size: Sequence[int],
                  displacement: Tensor | None = None) -> Tensor:
    """Input voxel coordinate of each output voxel: ``center + M @ (offset + displacement)``, ``(B, *P, d)``.

    ``matrices``: ``(B, d, d)``; ``centers``: ``(B, d)`` input coordinates the patch centre maps to;
    ``displacement``: optional elastic field ``(B, *P, d)`` in voxels, applied before the affine part.
    (Reference form of :func:`normalized_sampling_grid`, which the pipeline uses.)
    """
    device = centers.device
    offsets = centered_coordinates(patch_size, device).unsqueeze(0)
    if displacement is not None:
        offsets = offsets + displacement
    batch, ndim = centers.shape
    flat = offsets.reshape(offsets.shape[0], -1, ndim) @ matrices.to(device, torch.float32).transpose(1, 2)
    shift = centers.to(torch.float32).view(batch, *([1] * len(patch_size)), ndim)
    return flat.reshape(batch, *patch_size, ndim) + shift


def normalized_sampling_grid(matrices: Tensor, centers: Tensor, patch_size: Sequence[int],
                             input_shape: Sequence[int], displacement: Tensor | None = None) -> Tensor:
    """:func:`sampling_grid` already in ``grid_sample`` coordinates (``align_corners=True``, order x, y, z).

    The affine part is a sum of per-axis outer products (cheaper on the CPU than a per-voxel 3x3 product);
    the elastic part, ``M @ displacement``, is added only when given. ``input_shape``: the input's ``S``.
    """
    device = centers.device
    ndim = len(patch_size)
    to_input = 2.0 / torch.tensor([max(s - 1, 1) for s in input_shape], dtype=torch.float64)
    from_output = torch.tensor([(p - 1) / 2 for p in patch_size], dtype=torch.float64)
    matrices = matrices.double().cpu()
    linear = to_input.view(1, ndim, 1) * matrices * from_output.view(1, 1, ndim)
    shift = to_input * centers.double().cpu() - 1.0
    grid = _affine_grid(linear.to(device, torch.float32), shift.to(device, torch.float32), patch_size)
    if displacement is not None:
        scaled = (matrices * to_input.view(1, ndim, 1)).to(device, torch.float32)
        moved = torch.einsum("bij,b...j->b...i", scaled, displacement.to(torch.float32))
        grid = grid + moved.flip(-1)
    return grid


def _affine_grid(linear: Tensor, shift: Tensor, patch_size: Sequence[int]) -> Tensor:
    """``linear @ u + shift`` for output coordinates ``u`` in [-1, 1] per patch axis, as ``(B, *P, d)`` x-y-z."""
    batch, ndim = shift.shape
    grid = torch.empty((batch, *patch_size, ndim), dtype=torch.float32, device=shift.device)
    axes = [torch.linspace(-1.0, 1.0, p, device=shift.device) if p > 1 else torch.zeros(1, device=shift.device)
            for p in patch_size]
    for j in range(ndim):
        value = shift[:, j].view(batch, *([1] * ndim))
        for a, u in enumerate(axes):
            view = [batch] + [1] * ndim
            view[1 + a] = len(u)
            value = value + linear[:, j, a].view(batch, *([1] * ndim)) * u.view(1, *view[1:])
        grid[..., ndim - 1 - j] = value
    return grid


def grid_bounds(matrices: Tensor, centers: Tensor, patch_size: Sequence[int],
                max_displacement: Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Integer box ``[lo, hi)`` per sample, ``(B, d)`` each, holding every voxel a linear resampling reads.

    Exact for the affine part (the image of the patch's corner box); ``max_displacement`` ``(B, d)`` widens it
    by the largest elastic displacement, pushed through the matrix.
    """
    half = torch.tensor([(p - 1) / 2 for p in patch_size], dtype=torch.float64)
    if max_displacement is not None:
        half = half + max_displacement.double()
    extent = (matrices.double().abs() @ half.expand(matrices.shape[0], -1).unsqueeze(-1)).squeeze(-1)
    lo = torch.floor(centers.double() - extent - 1e-6).long()
    hi = torch.ceil(centers.double() + extent + 1e-6).long() + 1
    return lo.numpy(), hi.numpy()


def normalize_grid(grid: Tensor, input_shape: Sequence[int]) -> Tensor:
    """Voxel coordinates ``(B, *P, d)`` -> ``grid_sample`` coordinates (``align_corners=True``, order x, y, z)."""
    size = torch.tensor([max(s - 1, 1) for s in input_shape], dtype=grid.dtype, device=grid.device)
    return (grid * (2.0 / size) - 1.0).flip(-1)


def elastic_displacement(noise: Tensor, sigmas: Tensor, magnitudes: Tensor) -> Tensor:
    """Smooth random displacement field ``(B, *P, d)`` in voxels from white noise ``(B, d, *P)``.

    Component k of sample b is the noise smoothed by a Gaussian of std ``sigmas[b, k]`` voxels (in Fourier
    space, periodic boundary, as nnU-Net does) and rescaled so that its largest absolute value is
    ``magnitudes[b, k]`` voxels.
    """
    spatial = noise.shape[2:]
    dims = tuple(range(2, noise.ndim))
    spectrum = torch.fft.rfftn(noise.float(), dim=dims)
    freqs = [torch.fft.fftfreq(n, device=noise.device) for n in spatial[:-1]]
    freqs.append(torch.fft.rfftfreq(spatial[-1], device=noise.device))
    squared = sum(f.view(*([1] * i), -1, *([1] * (len(spatial) - i - 1))) ** 2 for i, f in enumerate(freqs))
    sigma = sigmas.float().view(*sigmas.shape, *([1] * len(spatial)))
    field = torch.fft.irfftn(spectrum * torch.exp(-2 * math.pi ** 2 * sigma ** 2 * squared), s=spatial, dim=dims)
    peak = field.abs().amax(dim=dims, keepdim=True).clamp_min(1e-12)
    field = field / peak * magnitudes.float().view(*magnitudes.shape, *([1] * len(spatial)))
    return field.movedim(1, -1)


def warp(image: Tensor, label: Tensor, grid: Tensor, *, label_mode: str = "linear") -> tuple[Tensor, Tensor]:
    """Resample image ``(B, C, *S)`` and int8 label map ``(B, 1, *S)`` with one grid ``(B, *P, d)``.

    ``grid`` is in ``grid_sample`` coordinates (:func:`normalized_sampling_grid`, or
    ``normalize_grid(sampling_grid(...))``). The image is resampled (bi/tri)linearly, zero outside the input;
    labels as ``labels.resample_labels`` does (``"linear"``: one-hot linear + arg-max, ``"nearest"``).
    Returns image ``(B, C, *P)`` float32 and label ``(B, 1, *P)`` int8.
    """
    out = F.grid_sample(image.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out, resample_labels(label, grid, mode=label_mode)


def mirror(tensor: Tensor, flips: Tensor, *, inplace: bool = False) -> Tensor:
    """Flip sample b of ``(B, C, *S)`` along spatial axis k where ``flips[b, k]`` (bool ``(B, d)``)."""
    out = tensor if inplace else tensor.clone()
    for b, row in enumerate(flips.cpu().tolist()):
        axes = [1 + k for k, flip in enumerate(row) if flip]
        if axes:
            out[b].copy_(out[b].flip(axes))
    return out
