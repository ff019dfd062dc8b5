"""The network's input read window by window from the cropped input image, normalised voxel by voxel as it is read:
where preprocessing for prediction does not resample, this equals the preprocessed array bit for bit without its
whole float32 copy beside the input (315 MB for a 512 x 512 x 300 CT)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from medseg.preprocess.normalize import Pointwise


class VoxelwiseInput:
    """``(C, *S)`` float32 as ``sliding_window`` reads it (``shape``, ``ndim``, ``volume[:, region]`` -> a new
    tensor): ``source`` ``(C, *S)`` (any dtype; the cropped image) through each channel's ``transforms[c]``."""

    def __init__(self, source: np.ndarray, transforms: Sequence[Pointwise]):
        if len(transforms) != source.shape[0]:
            raise ValueError(f"{len(transforms)} normalisations for {source.shape[0]} channels")
        self.source, self.transforms = source, list(transforms)
        self.shape = torch.Size(source.shape)
        self.ndim = source.ndim

    def __getitem__(self, index: tuple) -> torch.Tensor:
        if not isinstance(index, tuple) or index[:1] != (slice(None),):
            raise IndexError("index all channels and then the spatial axes: volume[:, z0:z1, ...]")
        region = index[1:]
        return torch.from_numpy(np.stack([transform(self.source[(c, *region)].astype(np.float32, copy=False), None)
                                          for c, transform in enumerate(self.transforms)]))
