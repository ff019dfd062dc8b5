"""One training step, the same for the trainer and for the planner's timing of a planned network."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from medseg.compute.precision import autocast


class NonFiniteLoss(ArithmeticError):
    """The loss of a step was NaN or infinite; nothing was applied to the weights."""

    def __init__(self, value: float):
        super().__init__(f"the loss became {value}")
        self.value = value


def build_optimizer(parameters, name: str, learning_rate: float, weight_decay: float, device_type: str, *,
                    fused: bool = True) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum 0.99 (nnU-Net's) or AdamW; ``fused``: the fused implementation (one kernel over
    all parameters instead of several passes per tensor: measured 8 % of a 2D U-Net's CPU step) on CPU and CUDA."""
    fused = fused and device_type in ("cpu", "cuda")
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=learning_rate, momentum=0.99, nesterov=True,
                               weight_decay=weight_decay, fused=fused or None)
    return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay, fused=fused or None)


def training_step(network: nn.Module, optimizer: torch.optim.Optimizer, loss_of: Callable[[nn.Module], torch.Tensor],
                  *, precision: str, device_type: str, gradient_clip: float) -> torch.Tensor:
    """Zero the gradients, ``loss_of(network)`` (the forward pass and the loss) under ``precision``'s autocast,
    backward, clip the gradient norm to ``gradient_clip``, step the optimizer; the detached scalar loss.

    The loss itself is computed by ``loss_of`` (cast its logits to float32 before the loss: a loss in bfloat16
    loses the small terms). Raises ``NonFiniteLoss`` before backward when the loss is NaN or infinite."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(device_type, precision):
        loss = loss_of(network)
    if not torch.isfinite(loss):
        raise NonFiniteLoss(loss.item())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(network.parameters(), gradient_clip)
    optimizer.step()
    return loss.detach()
