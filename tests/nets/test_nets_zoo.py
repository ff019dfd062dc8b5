"""Contract tests generated from the registry: every network x {2D, 3D} (tiny widths, tiny inputs)."""

from __future__ import annotations

import io
import warnings

import pytest
import torch

from medseg.errors import MedsegError
from medseg.nets import create, list_models, model_info

B, IN, K = 2, 1, 3
SIZES = {2: (32, 32), 3: (16, 16, 16)}


def _available(name: str) -> bool:
    requires = model_info(name).requires
    if requires is None:
        return True
    try:
        __import__(requires)
    except Exception:
        return False
    return True


def _cases(filter_fn=lambda info: True, dims_only: int | None = None):
    cases = []
    for name in list_models():
        info = model_info(name)
        if not filter_fn(info):
            continue
        marks = [] if _available(name) else [pytest.mark.skip(reason=f"{name} needs {info.requires}, which does "
                                                                      f"not import here (optional extra)")]
        cases += [pytest.param(name, dims, id=f"{name}-{dims}d", marks=marks) for dims in info.dims
                  if dims_only in (None, dims)]
    return cases


def _build(name: str, dims: int, seed: int = 0, **extra):
    torch.manual_seed(seed)
    return create(name, dims, IN, K, **{**model_info(name).tiny, **extra})


def _input(model, dims: int, seed: int = 1) -> torch.Tensor:
    size = SIZES[dims]
    if hasattr(model, "valid_input_size"):  # unpadded U-Net: overlap-tile input for the wanted output
        size = model.valid_input_size(size)
    return torch.randn(B, IN, *size, generator=torch.Generator().manual_seed(seed))


def _expected(model, x: torch.Tensor) -> tuple[int, ...]:
    spatial = model.output_size(x.shape[2:]) if hasattr(model, "output_size") else tuple(x.shape[2:])
    return (B, K, *spatial)


@pytest.mark.parametrize("name,dims", _cases())
def test_forward_backward_shape(name, dims):
    model = _build(name, dims).train()
    x = _input(model, dims)
    y = model(x)
    assert isinstance(y, torch.Tensor), "without deep supervision a network returns one tensor"
    assert tuple(y.shape) == _expected(model, x)
    assert tuple(y.shape[2:]) == SIZES[dims]  # the tiny configs are documented to keep these sizes
    loss = y.square().mean()
    if hasattr(model, "posterior"):  # a probabilistic U-Net trains through its posterior net (one rater's map)
        onehot = torch.nn.functional.one_hot(y.argmax(1), K).movedim(-1, 1).float()
        logits, to_prior, of_posterior = model(x, onehot)
        assert tuple(logits.shape) == tuple(y.shape) and tuple(to_prior.shape) == (B,)
        assert bool((to_prior >= 0).all()) and torch.equal(to_prior, of_posterior)
        loss = loss + logits.square().mean() + to_prior.mean() + of_posterior.mean()
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not dead, f"parameters without gradient: {dead[:5]}"


@pytest.mark.parametrize("name,dims", _cases(lambda info: info.deep_supervision))
def test_deep_supervision_outputs(name, dims):
    model = _build(name, dims, deep_supervision=True).eval()
    x = _input(model, dims)
    outputs = model(x)
    assert isinstance(outputs, list) and len(outputs) >= 2
    assert tuple(outputs[0].shape) == _expected(model, x)
    for finer, coarser in zip(outputs, outputs[1:]):
        assert coarser.shape[:2] == (B, K)
        assert all(c <= f for f, c in zip(finer.shape[2:], coarser.shape[2:])), "fine -> coarse order"
    if name != "unetpp":  # U-Net style: entry i is at 1 / 2^i of the input (tiny strides are 2)
        for i, out in enumerate(outputs):
            assert tuple(out.shape[2:]) == tuple(s // 2 ** i for s in x.shape[2:])
    sum(o.mean() for o in outputs).backward()
    model.deep_supervision = False
    single = model(x)
    assert isinstance(single, torch.Tensor)
    torch.testing.assert_close(single, outputs[0])


@pytest.mark.parametrize("name,dims", _cases())
def test_same_seed_same_output(name, dims):
    a, b, c = _build(name, dims, seed=3).eval(), _build(name, dims, seed=3).eval(), _build(name, dims, seed=4).eval()
    x = _input(a, dims)
    with torch.no_grad():
        ya, yb, yc = a(x), b(x), c(x)
    torch.testing.assert_close(ya, yb, rtol=0, atol=0)
    assert not torch.allclose(ya, yc), "a different seed must give different weights"


@pytest.mark.slow
@pytest.mark.parametrize("name,dims", _cases(dims_only=2))  # 3D traces the same code path
def test_compile_fullgraph(name, dims):
    model = _build(name, dims).eval()
    x = _input(model, dims)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # fullgraph: no graph break anywhere
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,dims", _cases(lambda info: info.exportable, dims_only=2))  # 3D: same layers
def test_onnx_export_matches(name, dims):
    ort = pytest.importorskip("onnxruntime", reason="ONNX export test needs onnx + onnxruntime (dev extra)")
    pytest.importorskip("onnx", reason="ONNX export test needs onnx + onnxruntime (dev extra)")
    model = _build(name, dims).eval()
    x = _input(model, dims)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buffer, dynamo=False, input_names=["image"], output_names=["logits"])
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), model(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name,dims", _cases())
def test_rebuild_from_spec(name, dims):
    model = _build(name, dims)
    spec = model.medseg_spec
    rebuilt = create(spec["name"], spec["spatial_dims"], spec["in_channels"], spec["num_classes"], **spec["cfg"])
    rebuilt.load_state_dict(model.state_dict())  # same architecture: every key and shape matches
    x = _input(model, dims)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x))


def test_unknown_name_lists_valid_ones():
    with pytest.raises(MedsegError, match="unknown network 'unet_xl'.*plan_unet.*vnet"):
        create("unet_xl", 2, 1, 2)


def test_unknown_option_lists_options():
    with pytest.raises(MedsegError, match="no option featurez.*features"):
        create("unet", 2, 1, 2, featurez=(4, 8))


def test_none_options_keep_defaults():
    with_none = create("unet", 2, 1, 2, features=None, norm=None)
    plain = create("unet", 2, 1, 2)
    assert sum(p.numel() for p in with_none.parameters()) == sum(p.numel() for p in plain.parameters())
    assert with_none.medseg_spec["cfg"] == {}


def test_dims_checked():
    with pytest.raises(MedsegError, match="2D only"):
        create("timm_unet", 3, 1, 2)


def test_list_models_filters():
    assert "timm_unet" in list_models(spatial_dims=2) and "timm_unet" not in list_models(spatial_dims=3)
    assert set(list_models(family="plan_unet")) == {"plan_unet", "plan_resenc_unet"}
    assert len(list_models()) >= 15
