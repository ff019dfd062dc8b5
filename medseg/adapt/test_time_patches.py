"""Patches of unlabelled target images on a model's network grid, for test-time adaptation.

The images are preprocessed as prediction preprocesses them (``preprocess_arrays``: crop to content, normalise,
resample; a cascade's first-stage channels appended), then cut into network-sized patches: random ones (the
adaptation batches, zero-padded like the sliding window's) and a fixed set of sliding-window tiles (the windows
the predictor itself will see), on which the safeguard compares the adapted network with the unadapted one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from medseg.inference.sliding_window import pad_to_patch, window_grid
from medseg.io import Image


class TargetPatches:
    """Preprocessed target images and patches of them.

    Args:
        predictor: a ``medseg.inference.Predictor`` (its configuration, patch size and, for a cascade, its first
            stage); every image is checked with ``predictor.check_image`` first.
        images: the target images ``(C, *spatial)``; no labels.

    ``data[i]`` is ``(C', *S_i)`` float32; for a 2d configuration of 3D images ``S_i = (Z, Y, X)`` and patches are
    drawn from single slices. Patches are ``(B, C', *patch)`` with ``patch`` the configuration's patch size.
    """

    def __init__(self, predictor, images: Sequence[Image]):
        from medseg.preprocess.pipeline import preprocess_arrays

        self.patch_size = [int(p) for p in predictor.patch_size]
        self.spatial_dims = int(predictor.spatial_dims)
        self.data: list[torch.Tensor] = []
        for image in images:
            predictor.check_image(image)
            prepared = preprocess_arrays(image.array, None, list(image.spacing), predictor.config,
                                         previous=predictor.previous_stage_labels(image),
                                         previous_labels=predictor.previous_labels)
            self.data.append(torch.from_numpy(np.ascontiguousarray(prepared.data, dtype=np.float32)))

    def __len__(self) -> int:
        return len(self.data)

    def _plane(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        """Image ``index`` as ``(C', *S)`` with ``len(S) == spatial_dims`` (a random slice of a 2d model's volume)."""
        data = self.data[index]
        if data.ndim - 1 > self.spatial_dims:
            data = data[:, int(rng.integers(data.shape[1]))]
        return data

    def random_batch(self, batch_size: int, rng: np.random.Generator) -> torch.Tensor:
        """``(batch_size, C', *patch)``: each patch from a uniformly drawn image, at a uniformly drawn corner."""
        patches = []
        for _ in range(batch_size):
            plane, _ = pad_to_patch(self._plane(int(rng.integers(len(self.data))), rng), self.patch_size)
            corner = [int(rng.integers(s - p + 1)) for s, p in zip(plane.shape[1:], self.patch_size)]
            box = tuple(slice(c, c + p) for c, p in zip(corner, self.patch_size))
            patches.append(plane[(slice(None), *box)])
        return torch.stack(patches)

    def tiles(self, count: int, seed: int = 0) -> torch.Tensor:
        """``(N, C', *patch)``, ``N <= count``: sliding-window tiles (step 0.5) of every image (of a seeded random
        slice of each volume for a 2d model), evenly subsampled to ``count`` when there are more."""
        rng = np.random.default_rng(seed)
        tiles = []
        for index in range(len(self.data)):
            plane, _ = pad_to_patch(self._plane(index, rng), self.patch_size)
            for corner in window_grid(plane.shape[1:], self.patch_size):
                box = tuple(slice(c, c + p) for c, p in zip(corner, self.patch_size))
                tiles.append(plane[(slice(None), *box)])
        keep = np.unique(np.linspace(0, len(tiles) - 1, min(count, len(tiles))).round().astype(int))
        return torch.stack([tiles[i] for i in keep])
