"""Family-specific checks: published parameter counts, overlap-tile sizes, plan U-Net config and memory estimate,
UNet++ pruning, the SSD scan against its recurrence, Swin windows, layer specs, weights loading."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from medseg.errors import MedsegError
from medseg.nets import create
from medseg.nets.blocks import norm_layer
from medseg.nets.blocks.ssm import ssd_scan
from medseg.nets.blocks.swin import shift_mask, window_partition, window_reverse
from medseg.nets.plan_unet import PlanUNet
from medseg.nets.timm_unet import load_encoder_weights
from medseg.nets.unet import unet_valid_sizes


def _n_params(name: str, dims: int, in_channels: int, classes: int, **cfg) -> int:
    with torch.device("meta"):  # shapes only: no memory, instant
        model = create(name, dims, in_channels, classes, **cfg)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,dims,in_channels,classes,published", [
    ("unet_valid", 2, 1, 2, 31.03e6),  # Ronneberger 2015, the paper configuration (~31 M)
    ("unet3d_cicek", 3, 3, 3, 19_069_955),  # Cicek 2016: "19069955 parameters"
    ("unetpp", 2, 1, 1, 9.04e6),  # Zhou 2018, Table 2
    ("swin_unet", 2, 3, 9, 27.17e6),  # Cao 2021 (Synapse, 9 classes)
    ("unetr", 3, 1, 14, 92.58e6),  # Hatamizadeh 2022 (BTCV, 14 classes)
    ("swin_unetr", 3, 1, 14, 61.98e6),  # Hatamizadeh 2022 (BTCV); MONAI's implementation: 62,187,296
])
def test_parameter_counts_match_papers(name, dims, in_channels, classes, published):
    count = _n_params(name, dims, in_channels, classes)
    assert abs(count - published) / published < 0.01, f"{name}: {count} vs published {published:.0f}"


def test_overlap_tile_sizes():
    assert unet_valid_sizes(388, 5) == (572, 388)  # the paper's tile
    assert unet_valid_sizes(389, 5) == (588, 404)  # next valid output up
    model = create("unet_valid", 2, 1, 2)
    assert model.output_size((572, 572)) == (388, 388)
    assert model.valid_input_size((100, 388)) == (284, 572)
    assert model.output_size(model.valid_input_size((100, 101))) == (100, 116)
    with pytest.raises(MedsegError, match="does not fit"):
        model.output_size((570, 572))


def test_valid_unet_forward_matches_helper():
    model = create("unet_valid", 2, 1, 2, features=(4, 8, 16)).eval()
    size = model.valid_input_size((20, 30))
    y = model(torch.randn(1, 1, *size))
    assert tuple(y.shape[2:]) == model.output_size(size) and y.shape[2] >= 20 and y.shape[3] >= 30


_PLAN = dict(spatial_dims=3, in_channels=2, num_classes=3, features_per_stage=[4, 8, 16],
             kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]], strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]],
             norm=["instance", {"affine": True}], deep_supervision=True)


@pytest.mark.parametrize("encoder", ["plain", "residual"])
def test_plan_unet_anisotropic_and_rebuild(encoder):
    torch.manual_seed(0)
    model = PlanUNet(**_PLAN, encoder=encoder)
    assert model.divisor() == (2, 4, 4)
    outputs = model(torch.randn(2, 2, 4, 16, 16))
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 4, 16, 16), (2, 3, 4, 8, 8)]
    config = json.loads(json.dumps(model.config))  # what a model folder stores
    assert config["encoder"] == encoder and config["strides"][1] == [1, 2, 2]
    rebuilt = PlanUNet.from_config(config)
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(1, 2, 4, 16, 16)
    torch.testing.assert_close(rebuilt.eval()(x)[0], model.eval()(x)[0])


def _measured_saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Distinct storages autograd keeps for a real CPU forward, plus the outputs (independent of the estimator)."""
    storages: dict[int, int] = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    outputs = out if isinstance(out, list) else [out]
    for o in outputs:
        storages[o.untyped_storage().data_ptr()] = o.untyped_storage().nbytes()
    return sum(storages.values())


@pytest.mark.parametrize("encoder", ["plain", "residual"])
def test_activation_memory_estimate(encoder):
    model = PlanUNet(**_PLAN, encoder=encoder).train()
    patch = (8, 32, 32)
    estimate = model.estimate_activation_memory(patch, batch_size=2)
    measured = _measured_saved_bytes(model, torch.randn(2, 2, *patch))
    assert 0.8 < estimate / measured < 1.25, (estimate, measured)
    bigger = model.estimate_activation_memory((16, 64, 64), batch_size=2)
    assert 6 < bigger / estimate < 8.5  # ~linear in voxels (8x)
    assert model.estimate_activation_memory(patch, batch_size=4) == pytest.approx(2 * estimate, rel=0.05)


def test_activation_memory_grows_with_width():
    small = PlanUNet(**_PLAN).estimate_activation_memory((8, 32, 32))
    wide = PlanUNet(**{**_PLAN, "features_per_stage": [8, 16, 32]}).estimate_activation_memory((8, 32, 32))
    assert 1.7 < wide / small < 2.1


def test_unetpp_pruned_equals_subnetwork():
    torch.manual_seed(0)
    model = create("unetpp", 2, 1, 2, features=(4, 8, 16, 32), deep_supervision=True).eval()
    x = torch.randn(1, 1, 32, 32)
    full = model(x)  # X[0][3], X[0][2], X[0][1]
    for depth in (1, 2):
        model.prune_depth = depth
        pruned = model(x)
        torch.testing.assert_close(pruned[0], full[3 - depth])
        assert len(pruned) == depth
    model.deep_supervision, model.prune_depth = False, None
    torch.testing.assert_close(model(x), full[0])


def test_ssd_scan_matches_recurrence():
    g = torch.Generator().manual_seed(0)
    b, length, h, p, n = 2, 48, 3, 4, 5
    x, bb, cc = torch.randn(b, length, h, p, generator=g), torch.randn(b, length, h, n, generator=g), \
        torch.randn(b, length, h, n, generator=g)
    a = -torch.rand(b, length, h, generator=g)
    state, ys = torch.zeros(b, h, p, n), []
    for t in range(length):
        state = torch.exp(a[:, t])[..., None, None] * state + x[:, t, :, :, None] * bb[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", state, cc[:, t]))
    torch.testing.assert_close(ssd_scan(x, a, bb, cc, chunk=16), torch.stack(ys, 1), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("spatial,window", [((8, 12), (4, 4)), ((4, 6, 8), (2, 3, 4))])
def test_window_partition_round_trip(spatial, window):
    x = torch.randn(2, *spatial, 5)
    windows = window_partition(x, window)
    assert windows.shape[1:] == (torch.tensor(window).prod().item(), 5)
    torch.testing.assert_close(window_reverse(windows, window, spatial, 2), x)
    mask = shift_mask(spatial, window, [w // 2 for w in window], "cpu")
    assert mask.shape == (windows.shape[0] // 2, windows.shape[1], windows.shape[1])
    assert (mask[0] == 0).all() and (mask[-1] < 0).any()  # first window unshifted, last mixes regions


def test_layer_specs():
    assert isinstance(norm_layer(["instance", {"affine": True}], 3, 8), nn.InstanceNorm3d)
    assert norm_layer(("group", {"num_groups": 8}), 2, 12).num_groups == 4
    assert isinstance(norm_layer(None, 2, 4), nn.Identity)
    with pytest.raises(MedsegError, match="unknown norm 'bach'"):
        norm_layer("bach", 2, 4)
    with pytest.raises(MedsegError, match="unknown activation"):
        create("unet", 2, 1, 2, act="relux")


def test_weights_loading_is_tensor_only(tmp_path):
    from safetensors.torch import save_file

    source, target = nn.Conv2d(1, 2, 3), nn.Conv2d(1, 2, 3)
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    load_encoder_weights(target, tmp_path / "w.safetensors")
    torch.testing.assert_close(target.weight, source.weight)
    torch.save({"weight": source.weight, "code": nn.ReLU()}, tmp_path / "pickled.pt")  # needs unpickling a class
    with pytest.raises(MedsegError, match="cannot read weights"):
        load_encoder_weights(target, tmp_path / "pickled.pt")
    torch.save({"weight": source.weight}, tmp_path / "partial.pt")
    with pytest.raises(MedsegError, match="lack 1 encoder tensors"):
        load_encoder_weights(target, tmp_path / "partial.pt")


def test_timm_missing_is_a_clear_error():
    try:
        import timm  # noqa: F401
    except Exception:
        with pytest.raises(MedsegError, match="timm"):
            create("timm_unet", 2, 1, 2)
    else:
        pytest.skip("timm imports here; the timm_unet contract tests cover it")


class _FakeFeatureInfo:
    def __init__(self, channels, reductions):
        self._channels, self._reductions = channels, reductions

    def channels(self):
        return self._channels

    def reduction(self):
        return self._reductions


class _FakeTimmEncoder(nn.Module):
    """Stands in for ``timm.create_model(..., features_only=True)``: features at reductions 2, 4, 8, 16, 32."""

    def __init__(self, in_chans: int):
        super().__init__()
        channels = [4, 8, 8, 16, 16]
        self.stages = nn.ModuleList(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
                                    for c_in, c_out in zip([in_chans] + channels[:-1], channels))
        self.feature_info = _FakeFeatureInfo(channels, [2, 4, 8, 16, 32])

    def forward(self, x):
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def test_timm_unet_decoder_wiring(monkeypatch, tmp_path):
    """The decoder over a timm-like encoder (timm itself may not import here: it needs torchvision)."""
    import types

    calls = []

    def create_model(name, *, features_only, pretrained, in_chans):
        calls.append((name, features_only, pretrained))
        return _FakeTimmEncoder(in_chans)

    monkeypatch.setitem(__import__("sys").modules, "timm", types.SimpleNamespace(create_model=create_model))
    torch.manual_seed(0)
    model = create("timm_unet", 2, 3, 4, encoder="resnet18", decoder_features=(16, 8, 8, 8, 4))
    assert calls == [("resnet18", True, False)]  # never downloads: pretrained=False always
    y = model(torch.randn(2, 3, 64, 96))
    assert y.shape == (2, 4, 64, 96)
    y.mean().backward()
    from safetensors.torch import save_file

    save_file(model.encoder.state_dict(), str(tmp_path / "encoder.safetensors"))
    reloaded = create("timm_unet", 2, 3, 4, encoder="resnet18", weights=str(tmp_path / "encoder.safetensors"))
    torch.testing.assert_close(reloaded.encoder.stages[0].weight, model.encoder.stages[0].weight)


def test_indivisible_input_is_a_clear_error():
    with pytest.raises(MedsegError, match=r"multiples of \(4, 4\), got \(30, 32\)"):
        create("unet", 2, 1, 2, features=(4, 8, 16))(torch.randn(1, 1, 30, 32))
    with pytest.raises(MedsegError, match=r"multiples of \(2, 4, 4\)"):
        PlanUNet(**_PLAN)(torch.randn(1, 2, 4, 16, 18))
    with pytest.raises(MedsegError, match="valid_input_size"):
        create("unet_valid", 2, 1, 2, features=(4, 8, 16))(torch.randn(1, 1, 33, 33))
