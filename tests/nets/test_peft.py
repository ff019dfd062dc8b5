"""LoRA and adapters of medseg.nets.peft on the zoo's networks: they start as the identity, LoRA folds into the
weights exactly, the transformer U-Nets get LoRA on their attention projections, and the head / first convolution
are found by their shapes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medseg.config.model_folder import NetworkSpec
from medseg.nets import create, model_info
from medseg.nets.adapted import changing_keys, channel_mean_stem
from medseg.nets.peft import (
    Bottleneck,
    LowRankDelta,
    PeftOptions,
    add_structure,
    has_adapters,
    merge_lora,
)

NETWORKS = [("plan_unet", 2), ("unetr", 2), ("transunet", 2), ("swin_unetr", 2), ("plan_unet", 3)]


def tiny(name: str, dims: int, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    network = create(name, dims, 1, 3, **model_info(name).tiny).eval()
    size = 32 if dims == 2 else 16
    return network, torch.randn(1, 1, *[size] * dims)


def perturb(network: nn.Module, seed: int = 1) -> None:
    """Move every LoRA B and adapter up-projection off zero, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, LowRankDelta):
                module.lora_b.copy_(0.05 * torch.randn(module.lora_b.shape, generator=generator))
            if isinstance(module, Bottleneck):
                module.up.weight.copy_(0.05 * torch.randn(module.up.weight.shape, generator=generator))


@pytest.mark.parametrize("name, dims", NETWORKS)
@pytest.mark.parametrize("structure", ["lora", "adapter", "spatial-adapter"])
def test_a_new_structure_starts_as_the_identity_and_then_changes_the_output(name, dims, structure):
    network, x = tiny(name, dims)
    with torch.no_grad():
        before = network(x)
        layers = add_structure(network, structure, PeftOptions(rank=2, reduction=2))
        assert layers
        assert torch.allclose(network(x), before, atol=1e-6)
        perturb(network)
        assert not torch.allclose(network(x), before, atol=1e-4)


@pytest.mark.parametrize("name, dims", NETWORKS)
def test_merged_lora_gives_the_parametrised_networks_logits(name, dims):
    network, x = tiny(name, dims)
    add_structure(network, "lora", PeftOptions(rank=2))
    perturb(network)
    with torch.no_grad():
        parametrised = network(x)
        merged = merge_lora(network)
        assert not any(isinstance(m, LowRankDelta) for m in merged.modules())
        assert (merged(x) - parametrised).abs().max() < 1e-5
    assert all(".lora_" not in k and ".parametrizations." not in k for k in merged.state_dict())


def test_lora_factorises_a_convolution_weight_at_rank_r():
    conv = nn.Conv2d(16, 32, 3)
    delta = LowRankDelta(conv.weight.shape, rank=3, alpha=6.0)
    nn.init.normal_(delta.lora_b)
    change = (delta(conv.weight) - conv.weight).detach()
    assert change.shape == conv.weight.shape
    assert torch.linalg.matrix_rank(change.reshape(32, -1)) == 3
    assert delta.lora_a.numel() + delta.lora_b.numel() == 3 * (16 * 9 + 32)


@pytest.mark.parametrize("name", ["unetr", "transunet"])
def test_the_transformer_unets_get_lora_on_attention_and_adapters_on_square_projections(name):
    network, _ = tiny(name, 2)
    lora = add_structure(network, "lora", PeftOptions(rank=2))
    assert any(layer.endswith("attn.qkv") for layer in lora) and any(layer.endswith("attn.proj") for layer in lora)
    network, _ = tiny(name, 2)
    adapted = add_structure(network, "adapter", PeftOptions(reduction=2))
    assert any(layer.endswith("attn.proj") for layer in adapted)
    assert has_adapters(network)


def test_lora_skips_layers_it_would_not_make_smaller_and_the_named_ones():
    network, _ = tiny("plan_unet", 2)
    rank = 4
    layers = add_structure(network, "lora", PeftOptions(rank=rank), skip={"heads.0.conv"})
    assert "heads.0.conv" not in layers
    for name, module in network.named_modules():
        if isinstance(module, nn.Conv2d):
            shape = module.parametrizations.weight.original.shape if name in layers else module.weight.shape
            assert (name in layers) == (rank * (shape[0] + math.prod(shape[1:])) < math.prod(shape)
                                        and name != "heads.0.conv")


def test_the_head_and_first_convolution_are_found_by_their_shapes():
    spec = NetworkSpec("plan_unet", 2, 1, 3, {**model_info("plan_unet").tiny, "deep_supervision": True})
    head = changing_keys(spec, "num_classes")
    assert head and all(k.startswith("heads.") for k in head)
    network = create(spec.name, 2, 1, 3, **spec.options)
    assert head == {f"heads.{i}.conv.{p}" for i in range(len(network.heads)) for p in ("weight", "bias")}
    assert changing_keys(spec, "in_channels") == {"encoder.0.0.conv.weight"}


def test_a_first_convolution_for_more_channels_sees_their_mean_as_the_base_saw_its_input():
    conv = nn.Conv2d(1, 4, 3, padding=1)
    grey = torch.randn(1, 1, 8, 8)
    rgb = grey.expand(1, 3, 8, 8) + torch.randn(1, 3, 8, 8) * torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1)
    new = nn.Conv2d(3, 4, 3, padding=1)
    with torch.no_grad():
        new.weight.copy_(channel_mean_stem(conv.weight, 3))
        new.bias.copy_(conv.bias)
        assert torch.allclose(new(rgb), conv(rgb.mean(1, keepdim=True)), atol=1e-5)
