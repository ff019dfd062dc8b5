"""The support set: pairs found in either folder layout, each refusal one MedsegError naming the example, and 2D /
3D targets segmented in their own geometry (3D slice by slice, support slices nearest in position)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.errors import MedsegError
from medseg.incontext.session import InContextSession
from medseg.incontext.support import SupportSet, support_pairs
from medseg.io import Image, write_image
from medseg.nets.incontext_unet import InContextConfig, InContextUNet
from tests.conftest import shared_dataset


def _network(stochastic: bool = False) -> InContextUNet:
    torch.manual_seed(0)
    return InContextUNet(InContextConfig(features=[4, 8], grid=[32, 32], stochastic=stochastic))


def _disc(shape, centre, radius):
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius**2


def test_refusals_are_one_error_each():
    image, mask = np.random.default_rng(0).random((40, 30)), _disc((40, 30), (20, 15), 6)
    with pytest.raises(MedsegError, match="different grid than its image"):
        SupportSet.from_arrays([image], [mask[:30]])
    with pytest.raises(MedsegError, match="the support set is empty"):
        SupportSet.from_arrays([], [])
    with pytest.raises(MedsegError, match="has no foreground"):
        SupportSet.from_arrays([image, image], [mask, np.zeros_like(mask)])
    volume_support = SupportSet.from_arrays([np.random.default_rng(1).random((5, 40, 30))],
                                            [np.broadcast_to(mask, (5, 40, 30))])
    with pytest.raises(MedsegError, match="a 3D support set for a 2D target"):
        InContextSession(_network()).predict(image, volume_support)


def test_geometry_is_compared_not_only_the_shape():
    image = Image.from_array(np.zeros((20, 20), np.float32), spacing=(1.0, 1.0))
    mask = Image.from_array(_disc((20, 20), (10, 10), 4).astype(np.uint8), spacing=(0.5, 0.5))
    with pytest.raises(MedsegError, match="different grid.*spacing"):
        SupportSet.from_images([image], [mask])


def test_a_dataset_folder_is_a_support_folder_and_a_stray_mask_is_named(tmp_path):
    pairs = support_pairs(shared_dataset("isbi2012_em"))
    assert len(pairs) == 24 and pairs[0][0].name.endswith("_0000.png") and pairs[0][1].parent.name == "labelsTr"
    folder = tmp_path / "support"
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_image(Image.from_array((rng.random((24, 24)) * 255).astype(np.uint8)), folder / "images" / f"{name}.png")
        write_image(Image.from_array(_disc((24, 24), (12, 12), 5).astype(np.uint8)), folder / "masks" / f"{name}.png")
    support = SupportSet.from_folder(folder)
    assert len(support) == 2 and support.spatial_dims == 2
    write_image(Image.from_array(_disc((24, 24), (12, 12), 5).astype(np.uint8)), folder / "masks" / "c.png")
    with pytest.raises(MedsegError, match="c.png: support mask without its image"):
        SupportSet.from_folder(folder)


def test_a_2d_target_of_any_size_gets_a_mask_and_candidates_on_its_own_grid():
    rng = np.random.default_rng(0)
    support = SupportSet.from_arrays([rng.random((3, 50, 70)), rng.random((3, 64, 64))],
                                     [_disc((50, 70), (25, 35), 8), _disc((64, 64), (30, 30), 9)])
    prediction = InContextSession(_network(stochastic=True)).predict(rng.random((37, 45)), support, candidates=3)
    assert prediction.mask.shape == (37, 45) and prediction.mask.dtype == bool
    assert prediction.candidates.shape == (3, 37, 45) and prediction.spread.shape == (37, 45)
    np.testing.assert_allclose(prediction.spread, prediction.candidates.std(0), atol=1e-6)
    with pytest.raises(MedsegError, match="deterministic"):
        InContextSession(_network()).predict(rng.random((37, 45)), support, candidates=3)


def test_a_3d_target_is_segmented_slice_by_slice_with_the_nearest_support_slices():
    rng = np.random.default_rng(0)
    structure = np.zeros((10, 20, 20), bool)
    structure[3:7] = _disc((20, 20), (10, 10), 5)
    support = SupportSet.from_arrays([rng.random((10, 20, 20))], [structure])
    assert [round(s.position, 3) for s in support.slices()] == [round(z / 9, 3) for z in range(3, 7)]
    prediction = InContextSession(_network()).predict(rng.random((12, 16, 16)), support, k=2, nearest=True)
    assert prediction.mask.shape == (12, 16, 16)
    outside = [z for z in range(12) if not 3 / 9 - 1 / 11 <= z / 11 <= 6 / 9 + 1 / 11]
    assert outside and not prediction.probability[outside].any()  # beyond the support structures' extent
