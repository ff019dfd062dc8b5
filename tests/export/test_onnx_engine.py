"""The onnxruntime adapter on a hand-built ONNX network (a 1x1 convolution with a fixed batch of 4): batches of any
size are split and padded, the meta device gives shapes only, and a damaged file is refused."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.errors import MedsegError
from medseg.inference.onnx_engine import OnnxNetwork, open_session
from medseg.nets.memory import inference_activation_bytes


def conv_onnx(path: Path, weight: np.ndarray, bias: np.ndarray, batch: int, size: int) -> Path:
    """An ONNX file of ``Conv(weight (K, C, 1, 1), bias)`` for inputs ``(batch, C, size, size)``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    classes, channels = weight.shape[:2]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w", "b"], ["logits"], kernel_shape=[1, 1])], "conv",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes, size, size])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture()
def conv(tmp_path: Path) -> tuple[torch.nn.Conv2d, Path]:
    torch.manual_seed(0)
    reference = torch.nn.Conv2d(2, 3, 1).eval()
    path = conv_onnx(tmp_path / "conv.onnx", reference.weight.detach().numpy(), reference.bias.detach().numpy(), 4, 8)
    return reference, path


def adapter(path: Path, batch: int | None, sha256: str | None = None) -> OnnxNetwork:
    return OnnxNetwork(open_session(path, sha256=sha256, threads=1), spatial_dims=2, in_channels=2, num_classes=3,
                       input_name="image", output_name="logits", batch=batch)


@pytest.mark.parametrize("size", [1, 3, 4, 6, 8])
def test_fixed_batch_session_takes_any_batch(conv, size: int) -> None:
    reference, path = conv
    x = torch.randn(size, 2, 8, 8, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        expected = reference(x)
    got = adapter(path, 4)(x)
    assert got.shape == (size, 3, 8, 8) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_without_splitting_a_fixed_batch_session_refuses_other_sizes(conv) -> None:
    _, path = conv
    with pytest.raises(Exception):  # what the adapter's splitting avoids: onnxruntime rejects batch 3
        adapter(path, None)(torch.zeros(3, 2, 8, 8))


def test_meta_device_and_deepcopy_give_shapes_without_running(conv) -> None:
    _, path = conv
    network = adapter(path, 4)
    twin = copy.deepcopy(network)
    assert twin.session is network.session  # shared, not copied
    out = twin.to("meta")(torch.empty(5, 2, 8, 8, device="meta"))
    assert out.device.type == "meta" and out.shape == (5, 3, 8, 8)
    assert inference_activation_bytes(network, (1, 2, 8, 8)) == (2 + 3) * 64 * 4  # input + logits, float32


def test_a_damaged_or_invalid_file_is_refused(conv, tmp_path: Path) -> None:
    from medseg.weights_file import sha256_file

    _, path = conv
    digest = sha256_file(path)
    adapter(path, 4, sha256=digest)
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(MedsegError, match="sha256"):
        open_session(path, sha256=digest)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(MedsegError, match="onnxruntime cannot load it"):
        open_session(tmp_path / "junk.onnx")
