"""The in-context networks: CrossConv is the pairwise convolution of UniverSeg, the support size is free, the
stochastic network's candidates differ and are reproducible, both are built from a model folder's spec."""

from __future__ import annotations

import pytest
import torch

from medseg.config.model_folder import read_model_spec
from medseg.errors import MedsegError
from medseg.incontext.model import load_incontext_network, save_incontext_model
from medseg.nets import create, model_info
from medseg.nets.incontext_unet import CrossConv, InContextConfig, InContextUNet


def _support(b: int, k: int, size: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((b, 1, size, size), generator=g), torch.rand((b, k, 1, size, size), generator=g),
            (torch.rand((b, k, 1, size, size), generator=g) > 0.5).float())


@pytest.mark.parametrize("norm", [None, "instance"])
def test_cross_conv_equals_a_convolution_of_every_concatenated_pair(norm):
    torch.manual_seed(0)
    cross = CrossConv(3, 5, 4, norm=norm)
    x, y = torch.randn(2, 2, 3, 8, 8), torch.randn(2, 3, 5, 8, 8)
    weight = torch.cat([cross.x_conv.weight, cross.y_conv.weight], 1)  # one conv over [x_i, y_j]
    out = cross(x, y)
    assert out.shape == (2, 2, 3, 4, 8, 8)
    for b in range(2):
        for i in range(2):
            for j in range(3):
                pair = torch.cat([x[b, i], y[b, j]], 0)[None]
                convolved = torch.nn.functional.conv2d(pair, weight, cross.x_conv.bias, padding=1)
                expected = torch.nn.functional.leaky_relu(cross.norm(convolved), 0.01)
                torch.testing.assert_close(out[b, i, j], expected[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["incontext_unet", "tyche_unet"])
def test_support_size_is_free_and_the_output_is_one_mask_per_candidate(name):
    network = create(name, 2, 1, 1, **model_info(name).tiny).eval()
    candidates = 3 if name == "tyche_unet" else 1
    for k in (1, 2, 5):
        target, images, masks = _support(2, k)
        logits = network(target, images, masks, candidates=candidates, generator=torch.Generator().manual_seed(0))
        assert logits.shape == (2, candidates, 32, 32) and torch.isfinite(logits).all()


def test_the_support_set_is_read_in_any_order():
    network = create("incontext_unet", 2, 1, 1, features=[4, 8], grid=[32, 32]).eval()
    target, images, masks = _support(1, 4)
    order = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        torch.testing.assert_close(network(target, images, masks), network(target, images[:, order], masks[:, order]),
                                   atol=1e-5, rtol=1e-5)


def test_stochastic_candidates_differ_and_repeat_with_the_seed():
    torch.manual_seed(0)
    network = InContextUNet(InContextConfig(features=[4, 8], stochastic=True, grid=[32, 32])).eval()
    target, images, masks = _support(1, 2)
    with torch.no_grad():
        first = network(target, images, masks, candidates=4, generator=torch.Generator().manual_seed(1))
        again = network(target, images, masks, candidates=4, generator=torch.Generator().manual_seed(1))
        other = network(target, images, masks, candidates=4, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(first, again)
    # noise per candidate: the candidates are not copies (their spread is a fair part of the pixels' spread)
    assert float(first.std(1).mean()) > 0.05 * float(first[:, 0].std())
    assert not torch.allclose(first, other)


def test_a_deterministic_network_refuses_several_candidates_and_an_empty_support():
    network = InContextUNet(InContextConfig(features=[4, 8], grid=[32, 32]))
    target, images, masks = _support(1, 2)
    with pytest.raises(MedsegError, match="deterministic"):
        network(target, images, masks, candidates=2)
    with pytest.raises(MedsegError, match="empty"):
        network(target, images[:, :0], masks[:, :0])


@pytest.mark.parametrize("stochastic", [False, True])
def test_a_model_folder_rebuilds_the_network_from_its_spec(tmp_path, stochastic):
    torch.manual_seed(0)
    network = InContextUNet(InContextConfig(features=[4, 8], stochastic=stochastic, grid=[32, 32])).eval()
    save_incontext_model(network, tmp_path / "model", info={"note": "test"})
    spec = read_model_spec(tmp_path / "model")
    assert spec.task == "incontext" and spec.network.name == ("tyche_unet" if stochastic else "incontext_unet")
    loaded, _ = load_incontext_network(tmp_path / "model")
    target, images, masks = _support(1, 3)
    generator = lambda: torch.Generator().manual_seed(0)
    with torch.no_grad():
        torch.testing.assert_close(loaded(target, images, masks, generator=generator()),
                                   network(target, images, masks, generator=generator()))


def test_the_default_size_is_a_cpu_sized_network():
    parameters = sum(p.numel() for p in InContextUNet().parameters())
    assert 0.5e6 < parameters < 3e6
