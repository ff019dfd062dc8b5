"""Activation memory of any network, measured on PyTorch's ``meta`` device (shapes only: no memory, no compute, no
GPU), so the planner and the predictor ask the network instead of guessing from a formula.

Weights, gradients and optimiser state are not included (``sum(p.numel() for p in model.parameters())`` gives
those).
"""

from __future__ import annotations

import copy
import weakref
from typing import Sequence

import torch
from torch import nn


def on_meta(network: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A shape-only copy of ``network`` (parameters on the meta device); ``network`` is untouched."""
    if next(network.parameters(), torch.empty(0)).device.type == "meta":
        return network.to(dtype)
    shadow = copy.deepcopy(network)
    return shadow.to(device="meta", dtype=dtype)


def _outputs(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _outputs(item)]
    if isinstance(out, dict):
        return [t for item in out.values() for t in _outputs(item)]
    return []


def training_activation_bytes(network: nn.Module, input_shape: Sequence[int],
                              dtype: torch.dtype = torch.float32) -> int:
    """Bytes of the tensors a training step keeps for backward (autograd's saved tensors) plus the outputs, for
    an input of ``input_shape`` ``(B, C, *spatial)``. Follows the real graph of the network in train mode."""
    shadow = on_meta(network, dtype)
    shadow.train()
    x = torch.empty(tuple(int(s) for s in input_shape), device="meta", dtype=dtype, requires_grad=True)
    saved: dict[int, int] = {}  # id -> bytes; autograd keeps the tensors alive, so ids stay unique

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved[id(tensor)] = tensor.nelement() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = shadow(x)
    return int(sum(saved.values()) + sum(o.nelement() * o.element_size() for o in _outputs(out)))


def inference_activation_bytes(network: nn.Module, input_shape: Sequence[int],
                               dtype: torch.dtype = torch.float32) -> int:
    """Peak bytes of the live tensors of one forward pass in eval mode without gradients (what prediction holds
    at once): every module's outputs are counted from the moment they are made until they are freed, plus the
    input. An estimate from below for networks with large temporaries inside one module (attention scores are
    counted when the attention is a module of its own)."""
    shadow = on_meta(network, dtype).eval()
    x = torch.empty(tuple(int(s) for s in input_shape), device="meta", dtype=dtype)
    live = [x.nelement() * x.element_size()]
    peak = [live[0]]
    counted: set[int] = set()

    def release(key: int, size: int) -> None:
        counted.discard(key)
        live[0] -= size

    def hook(module, inputs, output) -> None:
        for tensor in _outputs(output):
            key = id(tensor)
            if key in counted:
                continue
            size = tensor.nelement() * tensor.element_size()
            counted.add(key)
            live[0] += size
            weakref.finalize(tensor, release, key, size)
        peak[0] = max(peak[0], live[0])

    handles = [module.register_forward_hook(hook) for module in shadow.modules()]
    try:
        with torch.no_grad():
            out = shadow(x)
        del out
    finally:
        for handle in handles:
            handle.remove()
    return int(peak[0])
