"""Applying a model folder's probability calibration (``medseg.config.calibration``) to class probabilities."""

from __future__ import annotations

import torch

from medseg.config.calibration import LOG_FLOOR, CalibrationSpec


def calibrated_log_probabilities(log_probabilities: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                                 dim: int = 1) -> torch.Tensor:
    """``log softmax(scale * z + bias)`` along ``dim`` for ``z = log p`` (already floored); ``scale`` and
    ``bias`` ``(K,)``. The fit (``medseg.trust.calibration``) and the prediction both go through here."""
    shape = [1] * log_probabilities.ndim
    shape[dim] = -1
    z = log_probabilities * scale.reshape(shape) + bias.reshape(shape)
    return torch.log_softmax(z, dim)


def floored_log(probabilities: torch.Tensor) -> torch.Tensor:
    return torch.log(probabilities.clamp_min(LOG_FLOOR))


def apply_calibration(probabilities: torch.Tensor, spec: CalibrationSpec, dim: int = 1) -> torch.Tensor:
    """Calibrated probabilities of ``probabilities`` (``(B, K, *S)`` with ``dim=1``, or ``(K, *S)`` with
    ``dim=0``); float32 out."""
    scale = torch.tensor(spec.scale, dtype=torch.float32, device=probabilities.device)
    bias = torch.tensor(spec.bias, dtype=torch.float32, device=probabilities.device)
    return calibrated_log_probabilities(floored_log(probabilities.float()), scale, bias, dim).exp()
