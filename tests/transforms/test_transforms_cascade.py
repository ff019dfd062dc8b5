"""The cascade's previous-stage channels: morphology that agrees with scipy, no intensity augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medseg.transforms.cascade import OPERATORS, apply_operator
from medseg.transforms.config import AugmentationConfig
from medseg.transforms.pipeline import SampledBatch, augment

SCIPY = {"dilation": ndimage.binary_dilation, "erosion": ndimage.binary_erosion,
         "opening": ndimage.binary_opening, "closing": ndimage.binary_closing}


@pytest.mark.parametrize("operator", OPERATORS)
@pytest.mark.parametrize("dims", [2, 3])
def test_morphology_matches_scipy_with_a_cube(operator: str, dims: int) -> None:
    rng = np.random.default_rng(3)
    shape = (40, 40) if dims == 2 else (20, 28, 28)
    smooth = ndimage.gaussian_filter(rng.random(shape), 2.0)
    mask = smooth > np.median(smooth)  # blobs a few voxels wide, not salt
    radius = 2
    ours = apply_operator(torch.from_numpy(mask.astype(np.float32))[None], operator, radius)[0].numpy() > 0.5
    structure = np.ones((2 * radius + 1,) * dims, dtype=bool)
    expected = SCIPY[operator](mask, structure)
    inner = (slice(2 * radius, -2 * radius),) * dims  # the border conventions differ: compare away from it
    np.testing.assert_array_equal(ours[inner], expected[inner])
    assert ours[inner].any() and not ours[inner].all()


def test_previous_stage_channels_take_morphology_not_intensity() -> None:
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(4, 1, 8, 16, 16)
    onehot = torch.zeros(4, 2, 8, 16, 16)
    onehot[:, 0, 2:6, 4:12, 4:12] = 1.0
    onehot[:, 1, 3:5, 6:10, 6:10] = 1.0
    stacked = torch.cat([image, onehot], 1)
    label = torch.zeros(4, 1, 8, 16, 16, dtype=torch.int8)
    loud = AugmentationConfig.disabled().with_changes(p_noise=1.0, noise_std=(0.5, 0.5), p_brightness=1.0,
                                                      intensity_channels=1)
    out = augment(SampledBatch(["a"] * 4, (8, 16, 16), stacked.clone(), label, [0, 1, 2, 3]), loud, generator)
    assert not torch.equal(out["image"][:, :1], image)  # the image channel was changed
    torch.testing.assert_close(out["image"][:, 1:], onehot)  # the first stage's channels were not
    changed = loud.with_changes(p_previous_stage_morphology=1.0, previous_stage_morphology_radius=(1, 1))
    out = augment(SampledBatch(["a"] * 4, (8, 16, 16), stacked.clone(), label, [0, 1, 2, 3]), changed, generator)
    extra = out["image"][:, 1:]
    assert set(extra.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(extra, onehot)
    grown_or_shrunk = [(extra[b, c].sum() - onehot[b, c].sum()).item() for b in range(4) for c in range(2)]
    assert any(v != 0 for v in grown_or_shrunk)
