"""medseg's PlanUNet with weights mapped from dynamic_network_architectures' PlainConvUNet / ResidualEncoderUNet
gives the same logits as the nnU-Net network on random input (random weights, random norm affines), in 2D and 3D,
with anisotropic kernels/strides, a capped width (a strided residual block without projection) and nnU-Net's axis
transpose."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medseg.importers.nnunet_plan import network_arguments
from medseg.importers.nnunet_weights import map_state_dict
from medseg.nets.registry import create

unet = pytest.importorskip("dynamic_network_architectures.architectures.unet",
                           reason="dynamic_network_architectures (the bench extra) is not installed")


def _dna_network(arch: dict, in_channels: int, num_classes: int) -> torch.nn.Module:
    import pydoc

    kw = dict(arch["arch_kwargs"])
    for key in arch["_kw_requires_import"]:
        if kw[key] is not None:
            kw[key] = pydoc.locate(kw[key])
    cls = getattr(unet, arch["network_class_name"].rsplit(".", 1)[-1])
    network = cls(input_channels=in_channels, num_classes=num_classes, deep_supervision=False, **kw)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in network.parameters():  # norm affines away from (1, 0), so a mis-mapped norm shows
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return network.eval()


def _arch(dims: int, features: list[int], kernels: list, strides: list, residual: bool) -> dict:
    n = len(features)
    kw = {"n_stages": n, "features_per_stage": features, "conv_op": f"torch.nn.modules.conv.Conv{dims}d",
          "kernel_sizes": kernels, "strides": strides, "n_conv_per_stage_decoder": [1 if residual else 2] * (n - 1),
          "conv_bias": True, "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
          "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
          "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    kw["n_blocks_per_stage" if residual else "n_conv_per_stage"] = [1, 2, 2][:n] if residual else [2] * n
    name = "ResidualEncoderUNet" if residual else "PlainConvUNet"
    return {"network_class_name": f"dynamic_network_architectures.architectures.unet.{name}", "arch_kwargs": kw,
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}


CASES = {
    "plain-3d-anisotropic": (3, [4, 8, 16], [[1, 3, 3], [3, 3, 3], [3, 3, 3]], [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
                             False, (8, 16, 12)),
    "plain-2d": (2, [4, 8, 16], [[3, 3]] * 3, [[1, 1], [2, 2], [2, 2]], False, (16, 24)),
    "resenc-3d-capped": (3, [4, 8, 8], [[3, 3, 3]] * 3, [[1, 1, 1], [2, 2, 2], [1, 2, 2]], True, (8, 16, 16)),
    "resenc-2d": (2, [4, 8, 16], [[3, 3]] * 3, [[1, 1], [2, 2], [2, 2]], True, (16, 16)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_mapped_weights_give_nnunets_logits(case):
    dims, features, kernels, strides, residual, shape = CASES[case]
    arch = _arch(dims, features, kernels, strides, residual)
    reference = _dna_network(arch, 2, 3)
    name, arguments = network_arguments({"architecture": arch}, 2, 3, list(range(dims)), Path("plans.json"))
    assert name == ("plan_resenc_unet" if residual else "plan_unet")
    ours = create(name, dims, 2, 3, **{k: v for k, v in arguments.items()
                                        if k not in ("spatial_dims", "in_channels", "num_classes")}).eval()
    ours.load_state_dict(map_state_dict(reference.state_dict(), arguments, list(range(dims)), Path("ckpt")),
                         strict=True)
    x = torch.randn(2, 2, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert got.shape == expected.shape == (2, 3, *shape)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()


@pytest.mark.parametrize("residual", [False, True])
def test_transposed_nnunet_network_is_medseg_network_on_untransposed_input(residual):
    """nnU-Net runs its network on images whose axes are permuted by transpose_forward; the imported network takes
    the image in its own axis order and gives the same logits, permuted back."""
    transpose = [2, 0, 1]
    arch = _arch(3, [4, 8, 16], [[1, 3, 3], [3, 3, 3], [3, 3, 3]], [[1, 1, 1], [1, 2, 2], [2, 2, 2]], residual)
    reference = _dna_network(arch, 1, 2)
    name, arguments = network_arguments({"architecture": arch}, 1, 2, transpose, Path("plans.json"))
    ours = create(name, 3, 1, 2, **{k: v for k, v in arguments.items()
                                    if k not in ("spatial_dims", "in_channels", "num_classes")}).eval()
    ours.load_state_dict(map_state_dict(reference.state_dict(), arguments, transpose, Path("ckpt")), strict=True)
    image = torch.randn(1, 1, 16, 12, 8, generator=torch.Generator().manual_seed(2))  # (z, y, x) of the image
    transposed = image.permute(0, 1, *[2 + t for t in transpose])  # nnU-Net's network input: (x, z, y)
    backward = sorted(range(3), key=lambda i: transpose[i])
    with torch.no_grad():
        expected = reference(transposed).permute(0, 1, *[2 + b for b in backward])
        got = ours(image)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()


def test_a_mis_mapped_decoder_would_be_caught():
    """The check above can fail: without the decoder's channel swap the logits differ."""
    arch = _arch(2, [4, 8], [[3, 3]] * 2, [[1, 1], [2, 2]], False)
    reference = _dna_network(arch, 1, 2)
    name, arguments = network_arguments({"architecture": arch}, 1, 2, [0, 1], Path("plans.json"))
    ours = create(name, 2, 1, 2, **{k: v for k, v in arguments.items()
                                    if k not in ("spatial_dims", "in_channels", "num_classes")}).eval()
    state = map_state_dict(reference.state_dict(), arguments, [0, 1], Path("ckpt"))
    weight = state["decoder.0.0.conv.weight"]
    state["decoder.0.0.conv.weight"] = torch.cat([weight[:, 4:], weight[:, :4]], 1)  # undo the swap
    ours.load_state_dict(state, strict=True)
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(ours(x), reference(x), atol=1e-3)


@pytest.mark.parametrize("residual", [False, True])
def test_imported_folder_gives_nnunets_logits(tmp_path, nnunet, residual):
    """Through the whole import (plans.json + checkpoint -> model folder -> load_network): nnU-Net's logits."""
    from medseg.importers import import_nnunet
    from medseg.nets.from_folder import load_network

    plans = nnunet.plans_json([16, 16, 16], [4, 8, 16], residual=residual)
    reference = _dna_network(plans["configurations"]["3d_fullres"]["architecture"], 1, 3)
    folder = nnunet.write_folder(tmp_path / "results", plans, reference.state_dict())
    report = import_nnunet(folder, tmp_path / "model")
    assert report.network == ("plan_resenc_unet" if residual else "plan_unet")
    ours = load_network(tmp_path / "model", 0)
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(ours(x), reference(x), atol=1e-4, rtol=1e-4)
