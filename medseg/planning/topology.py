"""Network topology from spacing and patch size (nnU-Net's pooling rules), and the cost of a topology."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Topology:
    """Per-stage kernels and strides for a patch; ``divisor[d]`` = product of strides along axis ``d``."""

    patch_size: list[int]
    kernel_sizes: list[list[int]]
    strides: list[list[int]]
    divisor: list[int]

    @property
    def num_stages(self) -> int:
        return len(self.strides)


def pooling_topology(spacing: list[float], patch_size: list[int], *, min_feature_map: int = 4,
                     max_stages: int = 8) -> Topology:
    """Pool an axis while its feature map stays >= ``2 * min_feature_map`` and its spacing is within 2x of the
    finest pooled spacing (so anisotropic axes wait until the others have caught up); kernels are 3 along axes
    within 2x of the finest spacing, 1 otherwise; the bottleneck conv is always 3. The patch is then padded up
    to a multiple of the strides. Same rules as nnU-Net's ``get_pool_and_conv_props``.
    """
    dim = len(spacing)
    current_spacing = [float(s) for s in spacing]
    current_size = [float(p) for p in patch_size]
    kernel = [1] * dim
    kernels: list[list[int]] = []
    strides: list[list[int]] = [[1] * dim]
    pools = [0] * dim
    while len(strides) < max_stages:
        valid = [d for d in range(dim) if current_size[d] >= 2 * min_feature_map]
        if not valid:
            break
        finest = min(current_spacing[d] for d in valid)
        valid = [d for d in valid if current_spacing[d] / finest < 2]
        if len(valid) == 1 and current_size[valid[0]] < 3 * min_feature_map:
            break
        if not valid:
            break
        for d in range(dim):
            if kernel[d] != 3 and current_spacing[d] / min(current_spacing) < 2:
                kernel[d] = 3
        stride = [1] * dim
        for d in valid:
            stride[d] = 2
            pools[d] += 1
            current_spacing[d] *= 2
            current_size[d] = math.ceil(current_size[d] / 2)
        kernels.append(list(kernel))
        strides.append(stride)
    kernels.append([3] * dim)
    divisor = [2**p for p in pools]
    padded = [int(math.ceil(p / k) * k) for p, k in zip(patch_size, divisor)]
    return Topology(padded, kernels, strides, divisor)


def features_per_stage(num_stages: int, base: int, maximum: int) -> list[int]:
    return [min(base * 2**s, maximum) for s in range(num_stages)]


def forward_flops(topology: Topology, features: list[int], in_channels: int, num_classes: int,
                  n_conv: int = 2) -> float:
    """Multiply-adds x2 of one forward pass of the plain PlanUNet at ``topology.patch_size`` (convolutions only).

    Encoder stage ``s``: ``n_conv`` convs at that stage's resolution; decoder: a transposed conv up, then
    ``n_conv`` convs on the concatenated skip; one 1x1 head. Norms and activations are not counted.
    """
    size = np.array(topology.patch_size, dtype=np.float64)
    voxels = []
    channels = in_channels
    flops = 0.0
    for s, (stride, kernel) in enumerate(zip(topology.strides, topology.kernel_sizes)):
        size = size / np.array(stride)
        v = float(np.prod(size))
        voxels.append(v)
        k = float(np.prod(kernel))
        flops += 2 * v * k * (channels * features[s] + (n_conv - 1) * features[s] ** 2)
        channels = features[s]
    for s in range(len(features) - 2, -1, -1):
        up_k = float(np.prod(topology.strides[s + 1]))
        flops += 2 * voxels[s + 1] * features[s + 1] * features[s] * up_k
        k = float(np.prod(topology.kernel_sizes[s]))
        flops += 2 * voxels[s] * k * (2 * features[s] * features[s] + (n_conv - 1) * features[s] ** 2)
    flops += 2 * voxels[0] * features[0] * num_classes
    return flops
