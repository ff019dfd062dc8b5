"""The datasets a universal model learned from, and the view of the one network that each of them sees.

The network takes ``NETWORK_CHANNELS`` (3) input channels and gives ``1 + K`` logits: background and one per
vocabulary class (each class belongs to one dataset). A dataset with ``C`` channels feeds network channel ``i``
with its channel ``min(i, C - 1)``: RGB as it is, a grey image three times, FLAIR + T1c as (FLAIR, T1c, T1c).

Seen from one dataset, the output is the marginal distribution over that dataset's own classes: the background
logit becomes ``logsumexp`` of the background and every other dataset's classes (``merge_unannotated``, the
marginal partial-label loss of training), so that a dataset's image is labelled with its own label set only and
an ordinary ``medseg.inference.Predictor`` predicts it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
from torch import nn

from medseg.errors import MedsegError

NETWORK_CHANNELS = 3


@dataclass
class UniversalSource:
    """One training dataset: its name, channel count, and for each of its foreground label values the network's
    output channel (``classes[i]`` predicts ``label_values[i]``; channel 0 is the shared background)."""

    name: str
    channels: int
    label_values: list[int]
    classes: list[int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "UniversalSource":
        try:
            return cls(str(data["name"]), int(data["channels"]), [int(v) for v in data["label_values"]],
                       [int(c) for c in data["classes"]])
        except (KeyError, TypeError, ValueError) as error:
            raise MedsegError(f"a universal model's dataset record is malformed ({error})",
                              fix="pass a folder written by medseg train-universal") from None


def channel_indices(channels: int) -> list[int]:
    """The data channel that feeds each of the network's ``NETWORK_CHANNELS`` input channels."""
    return [min(i, channels - 1) for i in range(NETWORK_CHANNELS)]


def network_input(image: torch.Tensor, channels: int) -> torch.Tensor:
    """``(B, C, *S)`` -> ``(B, NETWORK_CHANNELS, *S)`` by ``channel_indices(C)``."""
    return image[:, channel_indices(channels)]


def annotated_flags(source: UniversalSource, num_outputs: int, batch: int, device: torch.device | str = "cpu"
                    ) -> torch.Tensor:
    """``(batch, num_outputs)`` bool: background and ``source``'s own classes are annotated, the rest not."""
    flags = torch.zeros(batch, num_outputs, dtype=torch.bool, device=device)
    flags[:, [0, *source.classes]] = True
    return flags


def global_lookup(source: UniversalSource) -> torch.Tensor:
    """``lut[value % 256]`` = output channel of a label value of ``source`` (background 0), ``(256,)`` int64."""
    lut = torch.zeros(256, dtype=torch.int64)
    for value, channel in zip(source.label_values, source.classes):
        lut[value % 256] = channel
    return lut


class SourceView(nn.Module):
    """The universal network as one dataset sees it: ``(B, C, *S)`` -> logits ``(B, 1 + F, *S)`` over background
    and the dataset's ``F`` classes (in ``source.label_values`` order), the other datasets' classes pooled into
    the background. ``medseg_spec`` carries the input channels for ``medseg.inference.Predictor``."""

    def __init__(self, network: nn.Module, source: UniversalSource):
        super().__init__()
        self.network, self.source = network, source
        self.medseg_spec = {"in_channels": source.channels}

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.network(network_input(image, self.source.channels))
        if isinstance(logits, (list, tuple)):
            logits = logits[0]
        return source_logits(logits, self.source.classes)


def source_logits(logits: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """``(B, 1 + K, *S)`` -> ``(B, 1 + F, *S)``: ``[logsumexp(background and the classes not in classes),
    logits[classes]...]``."""
    own = list(classes)
    others = [c for c in range(logits.shape[1]) if c not in own]
    return torch.cat([torch.logsumexp(logits[:, others], 1, keepdim=True), logits[:, own]], 1)
