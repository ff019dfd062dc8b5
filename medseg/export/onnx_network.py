"""One torch network -> one ONNX file (``torch.onnx.export`` with the dynamo-based exporter, the one PyTorch
maintains), checked by ``onnx.checker`` and by comparing onnxruntime's logits with torch's on a random patch."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from medseg.errors import MedsegError

logger = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "image", "logits"
DEFAULT_TOLERANCE = 1e-3
DYNAMIC_EXAMPLE_BATCH = 2  # torch.export specialises sizes 0 and 1, so a dynamic batch is traced with 2


@dataclass
class ExportedNetwork:
    """What ``export_network`` wrote: the file, its opset, whether its spatial size is dynamic, and why not."""

    path: Path
    opset: int
    dynamic_spatial: bool
    note: str = ""


class LogitsOnly(nn.Module):
    """``network`` with a tensor output: networks that return a list (deep supervision) give their first,
    full-resolution entry."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.network(x)
        return out[0] if isinstance(out, (list, tuple)) else out


def _onnx_export(network: nn.Module, example: torch.Tensor, path: Path, dynamic_axes: Sequence[int],
                 opset: int | None) -> None:
    dims: dict[int, object] = {}
    for axis in dynamic_axes:
        dims[axis] = torch.export.Dim("batch", min=1) if axis == 0 else torch.export.Dim.AUTO
    torch.onnx.export(network, (example,), str(path), dynamo=True, input_names=[INPUT_NAME],
                      output_names=[OUTPUT_NAME], dynamic_shapes=(dims,) if dims else None, opset_version=opset,
                      external_data=False, optimize=True, verbose=False)


def export_network(network: nn.Module, input_shape: Sequence[int], path: str | Path, *, dynamic: bool = False,
                   opset: int | None = None, seed: int = 0) -> ExportedNetwork:
    """Export ``network`` (eval mode) for inputs ``(B, C, *patch)`` = ``input_shape`` to the self-contained ONNX
    file ``path``. ``dynamic``: the batch axis is dynamic, and the spatial axes too where the exporter can trace
    them symbolically (else they stay fixed, said in ``note``). ``opset``: None for the exporter's default."""
    path = Path(path)
    module = LogitsOnly(network).eval()
    shape = [int(s) for s in input_shape]
    if dynamic:
        shape[0] = max(shape[0], DYNAMIC_EXAMPLE_BATCH)
    example = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    spatial = list(range(2, len(shape)))
    attempts = [[0, *spatial], [0]] if dynamic else [[]]
    note = ""
    for index, axes in enumerate(attempts):
        try:
            _onnx_export(module, example, path, axes, opset)
            break
        except Exception as error:  # the exporter raises many types (torch.export, onnxscript, onnx)
            reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200] if str(error) else ''}"
            if index + 1 < len(attempts):
                note = f"spatial axes fixed: the exporter cannot trace them symbolically ({reason})"
                logger.info(note)
                continue
            raise MedsegError(f"torch.onnx.export failed ({reason})", path=path,
                              fix="report the network and this message; --opset N or no --dynamic may help") from None
    import onnx

    proto = onnx.load(str(path))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as error:  # onnx.checker.ValidationError, onnx.shape_inference.InferenceError
        raise MedsegError(f"the exported file fails onnx.checker ({str(error).strip().splitlines()[0][:200]})",
                          path=path, fix="report the network; a different --opset may help") from None
    used = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    symbolic = [bool(d.dim_param) for d in proto.graph.input[0].type.tensor_type.shape.dim]
    if dynamic and not symbolic[0]:
        raise MedsegError("the exporter fixed the batch size of a --dynamic export", path=path,
                          fix="export without --dynamic (a fixed --batch)")
    if dynamic and not note and not all(symbolic[2:]):  # Dim.AUTO: the exporter kept a spatial size fixed
        note = "spatial axes fixed: the network's graph depends on the spatial size"
    return ExportedNetwork(path, int(used), bool(dynamic and all(symbolic[2:])), note)


def logits_difference(network: nn.Module, session, input_shape: Sequence[int], *, seed: int = 1) -> tuple[float, float]:
    """``(max |onnxruntime - torch|, max |torch|)`` of the logits of ``network`` and ``session`` (an
    ``OnnxNetwork``) on one standard-normal input of ``input_shape``."""
    x = torch.randn([int(s) for s in input_shape], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = LogitsOnly(network).eval()(x).float()
    got = session(x)
    if tuple(got.shape) != tuple(expected.shape):
        raise MedsegError(f"the ONNX network gives logits of shape {tuple(got.shape)}, torch {tuple(expected.shape)}",
                          fix="report the network; export without --dynamic")
    return float((got - expected).abs().max()), float(expected.abs().max())


def check_agreement(difference: float, scale: float, tolerance: float, path: Path) -> None:
    """Refuse an export whose logits differ from torch's by more than ``tolerance * max(1, max |logits|)``."""
    if not np.isfinite(difference) or difference > tolerance * max(1.0, scale):
        raise MedsegError(f"onnxruntime's logits differ from torch's by up to {difference:.3g} (largest torch logit "
                          f"{scale:.3g}; tolerance {tolerance:g} relative)", path=path,
                          fix="report the network; a different --opset may help")
