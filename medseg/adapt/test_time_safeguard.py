"""The safeguard of test-time adaptation: figures of a network's predictions on fixed target tiles, the rule that
calls them degenerate relative to the unadapted network's, and the trainer callback that rolls back and stops.

Degenerate (any one):
  * the mean entropy is not finite;
  * a foreground class's predicted fraction of the tiles' voxels collapses below ``f0 / max_fraction_ratio -
    fraction_slack`` or explodes above ``f0 * max_fraction_ratio + fraction_slack`` (``f0``: the unadapted
    network's fraction; the slack keeps a class that is rare in the tiles from tripping the rule by a few voxels);
  * the mask left the trust region: the mean Dice over foreground classes between the adapted and the unadapted
    masks fell below ``min_mask_agreement`` (adaptation without labels may correct a prediction, not replace it;
    on cxr_lungs a batch-norm re-estimation that changed the mask to Dice 0.85 with the unadapted one cost 0.1
    Dice against the labels, and no label-free figure told it from one that changed it to 0.80 and gained 0.06);
  * the entropy fell below ``entropy_floor`` times the unadapted entropy while the mask changed a lot (that Dice
    below ``min_mask_dice``): the network has become confident in a different answer, the way entropy
    minimisation fails (what remains of the trust region when ``min_mask_agreement`` is lowered to 0).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.metrics import Confusion, confusion, dice


@dataclass
class SafeguardLimits:
    """Thresholds of the degeneracy rule (see the module docstring)."""

    max_fraction_ratio: float = 2.0
    fraction_slack: float = 0.005
    min_mask_agreement: float = 0.9
    entropy_floor: float = 0.05
    min_mask_dice: float = 0.7

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def mean_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Mean over voxels of the Shannon entropy (nats) of ``(B, K, *S)`` class probabilities; a scalar tensor."""
    return -(probabilities * torch.log(probabilities.clamp_min(1e-12))).sum(1).mean()


@torch.no_grad()
def tile_figures(network: nn.Module, tiles: torch.Tensor, num_classes: int, reference: np.ndarray | None = None,
                 batch_size: int = 8) -> tuple[dict[str, Any], np.ndarray]:
    """Figures of ``network`` (``(B, C, *patch)`` -> probabilities ``(B, K, *patch)``, eval mode) on ``tiles``:
    ``entropy`` (mean, nats), ``foreground_fraction`` (per foreground class, of all tile voxels) and, given the
    unadapted ``reference`` labels ``(N, *patch)``, ``mask_dice_vs_unadapted`` (mean over foreground classes,
    ``medseg.metrics`` Dice pooled over the tiles); and the argmax labels ``(N, *patch)`` uint8."""
    network.eval()
    entropies, labels = [], []
    for start in range(0, len(tiles), batch_size):
        probabilities = network(tiles[start:start + batch_size])
        entropies.append(float(mean_entropy(probabilities)) * len(probabilities))
        labels.append(probabilities.argmax(1).to(torch.uint8).numpy())
    predicted = np.concatenate(labels)
    figures: dict[str, Any] = {
        "entropy": sum(entropies) / len(tiles),
        "foreground_fraction": [float(np.mean(predicted == c)) for c in range(1, num_classes)],
    }
    if reference is not None:
        scores = []
        for c in range(1, num_classes):
            total = Confusion(0, 0, 0, 0)
            for mine, theirs in zip(predicted, reference):
                total = total + confusion(mine == c, theirs == c)
            scores.append(dice(total))
        figures["mask_dice_vs_unadapted"] = float(np.mean(scores)) if scores else 1.0
    return figures, predicted


def degeneracy(before: dict[str, Any], now: dict[str, Any], limits: SafeguardLimits) -> str | None:
    """Why ``now``'s figures are degenerate relative to the unadapted ``before`` (one line), or None."""
    if not math.isfinite(now["entropy"]):
        return f"the entropy is not finite ({now['entropy']})"
    ratio, slack = limits.max_fraction_ratio, limits.fraction_slack
    for c, (f0, f) in enumerate(zip(before["foreground_fraction"], now["foreground_fraction"]), start=1):
        if f < f0 / ratio - slack:
            return f"class {c}'s predicted fraction collapsed from {f0:.4f} to {f:.4f} (below 1/{ratio:g} of it)"
        if f > f0 * ratio + slack:
            return f"class {c}'s predicted fraction exploded from {f0:.4f} to {f:.4f} (above {ratio:g}x)"
    agreement = now.get("mask_dice_vs_unadapted", 1.0)
    if agreement < limits.min_mask_agreement:
        return (f"the mask left the trust region (Dice {agreement:.3f} with the unadapted mask, below "
                f"{limits.min_mask_agreement:g})")
    if now["entropy"] < limits.entropy_floor * before["entropy"] and agreement < limits.min_mask_dice:
        return (f"the entropy fell from {before['entropy']:.4f} to {now['entropy']:.4f} while the mask changed "
                f"(Dice {agreement:.3f} with the unadapted mask, below {limits.min_mask_dice:g})")
    return None


def snapshot(parameters: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in parameters.items()}


def restore(parameters: dict[str, torch.Tensor], saved: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, value in parameters.items():
            value.copy_(saved[name])


class Safeguard:
    """Trainer callback: after each epoch, the task's figures (its ``validate``, the last history entry) against
    the unadapted ``before``; a degenerate epoch restores ``parameters`` to the last epoch that passed (the
    unadapted values if none did) and ends training (the trainer's step limit is lowered to the steps done).

    ``parameters``: name -> the adapted tensors (affine parameters of the norm layers). ``events`` records the
    roll-back (``{"step", "reason", "restored_step"}``), None while none happened.
    """

    def __init__(self, parameters: dict[str, torch.Tensor], before: dict[str, Any], limits: SafeguardLimits):
        self.parameters, self.before, self.limits = parameters, before, limits
        self.good = snapshot(parameters)
        self.good_step = 0
        self.rollback: dict[str, Any] | None = None

    def on_epoch_end(self, trainer: Any) -> None:
        entry = trainer.state.history[-1]
        reason = degeneracy(self.before, entry, self.limits)
        entry["degenerate"] = reason
        if reason is None:
            self.good, self.good_step = snapshot(self.parameters), trainer.state.iteration
            return
        restore(self.parameters, self.good)
        self.rollback = {"step": trainer.state.iteration, "reason": reason, "restored_step": self.good_step}
        trainer.max_iterations = trainer.state.iteration  # ends the trainer's loop after this epoch

    def on_train_end(self, trainer: Any) -> None:
        pass
