"""PatchLoader: batch shapes on real 2D and 3D caches, determinism across worker counts and devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.data.loader import PatchLoader
from medseg.errors import MedsegError
from medseg.transforms import AugmentationConfig


def collect(loader: PatchLoader) -> list[dict]:
    return list(loader)


@pytest.mark.parametrize("cache, patch, channels, labels", [
    ("brats_cache", (32, 40, 40), 2, {0, 1, 2, 3, 4}),
    ("isbi_cache", (96, 128), 1, {0, 1}),
])
def test_batches_have_the_promised_shapes_and_values(request, cache, patch, channels, labels):
    folder = request.getfixturevalue(cache)
    loader = PatchLoader(folder, patch, 3, num_workers=2, num_batches=4, seed=0, progress=False)
    batches = collect(loader)
    assert len(batches) == len(loader) == 4
    for batch in batches:
        assert batch["image"].shape == (3, channels, *patch) and batch["image"].dtype == torch.float32
        assert batch["label"].shape == (3, 1, *patch) and batch["label"].dtype == torch.int8
        assert set(torch.unique(batch["label"]).tolist()) <= labels
        assert torch.isfinite(batch["image"]).all() and len(batch["case_ids"]) == 3
    assert any((b["label"] > 0).any() for b in batches)


def test_same_seed_same_batches_for_any_worker_count(brats_cache):
    options = dict(patch_size=(24, 32, 32), batch_size=2, seed=7, num_batches=5, progress=False)
    one = collect(PatchLoader(brats_cache, num_workers=1, **options))
    two = collect(PatchLoader(brats_cache, num_workers=2, **options))
    for a, b in zip(one, two):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
        assert a["case_ids"] == b["case_ids"]
    other = collect(PatchLoader(brats_cache, num_workers=2, **{**options, "seed": 8}))
    assert not all(torch.equal(a["image"], b["image"]) for a, b in zip(one, other))


def test_device_path_gives_the_worker_path_batches(isbi_cache):
    options = dict(patch_size=(64, 64), batch_size=4, seed=3, num_batches=3, num_workers=1, progress=False)
    in_workers = collect(PatchLoader(isbi_cache, **options))
    on_device = collect(PatchLoader(isbi_cache, device="cpu", **options))
    for a, b in zip(in_workers, on_device):
        assert torch.allclose(a["image"], b["image"], atol=1e-4)
        assert torch.equal(a["label"], b["label"])


def test_augmentation_changes_patches_but_not_their_pairing(synthetic_cache):
    """Image == label map in this cache, so after any augmentation the image still matches its label."""
    config = AugmentationConfig.for_patch((16, 16, 16), p_rotation=1, p_scaling=1, p_elastic=0.5,
                                          label_interpolation="linear")
    loader = PatchLoader(synthetic_cache, (16, 16, 16), 4, augmentation=config, num_workers=0, num_batches=3,
                         case_ids=["case_0", "case_1"], seed=1)
    for batch in loader:
        agree = (batch["image"].round() == batch["label"].float()).float().mean()
        assert agree > 0.97
        assert not torch.equal(batch["image"], batch["image"].round())  # really resampled


def test_workers_read_memory_maps_not_copies(brats_cache):
    loader = PatchLoader(brats_cache, (16, 16, 16), 1, num_workers=0)
    case = loader.sampler.case(loader.sampler.case_ids[0])
    assert isinstance(case.data, np.memmap) and isinstance(case.seg, np.memmap)
    assert "_cases" in loader.sampler.__getstate__() and loader.sampler.__getstate__()["_cases"] == {}


def test_invalid_settings_raise(brats_cache):
    with pytest.raises(MedsegError):
        PatchLoader(brats_cache, (16, 16, 16), 0)
    with pytest.raises(TypeError):
        len(PatchLoader(brats_cache, (16, 16, 16), 2))
