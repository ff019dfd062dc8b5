"""The promptable network (both fusions), its model folder, and the trained model behind the Segmenter protocol."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medseg.errors import MedsegError
from medseg.interactive import Click, PromptSet, Segmenter
from medseg.nets.promptable_unet import PromptableConfig, PromptableUNet
from medseg.interactive.predictor import (PromptableSegmenter, load_segmenter, normalize_channels, save_model)

TINY = [4, 8, 16]


@pytest.mark.parametrize("fusion", ["decoder", "input"])
@pytest.mark.parametrize("output_stride", [1, 2])
def test_decode_of_embed_is_forward_and_prompt_batches_share_one_embedding(fusion, output_stride):
    torch.manual_seed(0)
    net = PromptableUNet(PromptableConfig(features=TINY, fusion=fusion, output_stride=output_stride)).eval()
    image, prompts = torch.rand(1, 3, 32, 48), torch.rand(3, 6, 32, 48)
    with torch.no_grad():
        embedding = net.embed(image)
        shared = net.decode(embedding, prompts)
        one_by_one = torch.cat([net(image, p[None]) for p in prompts])
    assert shared.shape == (3, 1, 32, 48)
    torch.testing.assert_close(shared, one_by_one, rtol=1e-5, atol=1e-5)


def test_the_output_depends_on_the_prompts():
    torch.manual_seed(0)
    net = PromptableUNet(PromptableConfig(features=TINY)).eval()
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a = net(image, torch.zeros(1, 6, 32, 32))
        b = net(image, torch.ones(1, 6, 32, 32))
    assert (a - b).abs().max() > 1e-3


def test_bad_shapes_and_options_are_clear_errors():
    net = PromptableUNet(PromptableConfig(features=TINY))
    with pytest.raises(MedsegError, match="divisible by 4"):
        net.embed(torch.rand(1, 3, 30, 32))
    with pytest.raises(MedsegError, match=r"\(B, 3, H, W\)"):
        net.embed(torch.rand(1, 1, 32, 32))
    with pytest.raises(MedsegError, match="unknown fusion"):
        PromptableUNet(PromptableConfig(fusion="late"))


def test_normalize_channels_windows_and_repeats():
    rng = np.random.default_rng(0)
    grey = rng.normal(100, 20, (1, 40, 30))
    out = normalize_channels(grey)
    assert out.shape == (3, 40, 30) and out.min() == 0 and out.max() == 1
    np.testing.assert_array_equal(out[0], out[2])
    mri = np.stack([rng.normal(0, 1, (40, 30)), rng.normal(5, 1, (40, 30))])
    np.testing.assert_array_equal(normalize_channels(mri, display_channel=1)[0], normalize_channels(mri[1:])[0])
    with pytest.raises(MedsegError, match="display channel 3"):
        normalize_channels(mri, display_channel=3)


def test_model_folder_round_trip_gives_the_same_probabilities(tmp_path):
    torch.manual_seed(0)
    net = PromptableUNet(PromptableConfig(features=TINY, grid=[32, 32]))
    net.eval()
    save_model(net, tmp_path / "model", {"note": "test"})
    segmenter = load_segmenter(tmp_path / "model")
    assert isinstance(segmenter, Segmenter) and segmenter.info["note"] == "test"
    image = np.random.default_rng(1).random((3, 50, 70)).astype(np.float32)  # not the grid's shape
    prompts = PromptSet([Click((25, 35))])
    reference = PromptableSegmenter(net)
    a = segmenter.predict(segmenter.embed(image), prompts)
    b = reference.predict(reference.embed(image), prompts, previous=None)
    assert a.shape == (50, 70) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    np.testing.assert_allclose(a, b, atol=1e-6)
    c = segmenter.predict(segmenter.embed(image), prompts, previous=a)
    assert c.shape == (50, 70)
    assert not segmenter.predict(segmenter.embed(image), PromptSet()).any()  # no prompt, no object


def test_loading_refuses_folders_that_are_not_models(tmp_path):
    with pytest.raises(MedsegError, match="no model.json"):
        load_segmenter(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"schema_version": 2, "task": "segmentation"}))
    with pytest.raises(MedsegError, match="incomplete or malformed"):
        load_segmenter(tmp_path)
    save_model(PromptableUNet(PromptableConfig(features=[4, 8], grid=[32, 32])), tmp_path)
    (tmp_path / "fold_all" / "weights.safetensors").unlink()
    with pytest.raises(MedsegError, match="fold all has no weights"):
        load_segmenter(tmp_path)
    legacy = tmp_path / "legacy"  # the layout before the one model-folder contract
    legacy.mkdir()
    (legacy / "interactive.json").write_text(json.dumps({"kind": "medseg-interactive", "network": {}}))
    with pytest.raises(MedsegError, match="medseg model upgrade"):
        load_segmenter(legacy)