"""The promptable network (registered as ``promptable_unet``): a 2D U-Net from the zoo's blocks, split into a heavy image part run once per image
(``embed``) and a light prompt part run once per interaction (``decode``).

Two ways to bring the prompt maps (``PROMPT_CHANNELS`` maps from ``encode_prompts``) into the network:

- ``fusion="decoder"`` (default): the encoder sees the image only; its skip features are the embedding. A small
  prompt encoder (one strided conv per level) turns the prompt maps into features of the same shapes that are
  added to the skips, and the decoder runs per interaction. ``decode`` costs the prompt encoder plus the decoder.
- ``fusion="input"``: the prompt maps are extra input channels (ScribblePrompt-UNet); the embedding is only the
  normalised image and every interaction runs the whole network.

``output_stride`` 2 ends the decoder at half resolution and upsamples the logits bilinearly (as SAM's mask
decoder does at 1/4): the full-resolution decoder level is the most expensive one per interaction.
``bench/interactive.py`` measures both fusions; BENCHMARKS.md says which one is the default and why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from medseg.errors import MedsegError
from medseg.nets.blocks.conv import ConvNormAct, StackedConvs, UpConv
from medseg.nets.blocks.factory import conv_layer

FUSIONS = ("decoder", "input")
PROMPT_CHANNELS = 6  # the prompt maps of medseg.interactive.prompts.encode_prompts (its CHANNEL_NAMES)


@dataclass
class PromptableConfig:
    """Constructor arguments of ``PromptableUNet`` (saved beside the weights as JSON)."""

    image_channels: int = 3
    features: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    fusion: str = "decoder"
    output_stride: int = 1
    norm: str = "instance"  # measured better than batch norm across mixed datasets (BENCHMARKS.md)
    grid: list[int] = field(default_factory=lambda: [128, 128])  # the model grid images are resized to

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PromptableConfig":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class PromptableUNet(nn.Module):
    """``forward(image (B, Ci, H, W), prompts (B, PROMPT_CHANNELS, H, W)) -> logits (B, 1, H, W)``.

    ``H`` and ``W`` must be divisible by ``2 ** (len(features) - 1)``. Equivalent to
    ``decode(embed(image), prompts)``.
    """

    def __init__(self, config: PromptableConfig | None = None):
        super().__init__()
        self.config = config = config or PromptableConfig()
        if config.fusion not in FUSIONS:
            raise MedsegError(f"unknown fusion {config.fusion!r}", fix=f"use one of {', '.join(FUSIONS)}")
        if config.output_stride not in (1, 2):
            raise MedsegError(f"output_stride must be 1 or 2, not {config.output_stride}")
        features, norm = list(config.features), config.norm
        in_channels = config.image_channels + (PROMPT_CHANNELS if config.fusion == "input" else 0)
        self.encoder = nn.ModuleList()
        for level, width in enumerate(features):
            source = in_channels if level == 0 else features[level - 1]
            self.encoder.append(StackedConvs(2, source, width, 2, stride=1 if level == 0 else 2, norm=norm))
        self.prompt_encoder = nn.ModuleList()
        if config.fusion == "decoder":
            for level, width in enumerate(features):
                source = PROMPT_CHANNELS if level == 0 else features[level - 1]
                self.prompt_encoder.append(ConvNormAct(2, source, width, 3, stride=1 if level == 0 else 2, norm=norm))
        self.last_level = config.output_stride - 1  # the finest decoder level that runs
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in range(len(features) - 2, self.last_level - 1, -1):
            self.up.append(UpConv(2, features[level + 1], features[level], 2))
            self.decoder.append(StackedConvs(2, 2 * features[level], features[level], 2, norm=norm))
        self.head = conv_layer(2, features[self.last_level], 1, 1)

    @property
    def divisor(self) -> int:
        return 2 ** (len(self.config.features) - 1)

    def _check(self, tensor: torch.Tensor, channels: int, what: str) -> None:
        if tensor.ndim != 4 or tensor.shape[1] != channels:
            raise MedsegError(f"{what} must be (B, {channels}, H, W), got {tuple(tensor.shape)}")
        if any(s % self.divisor for s in tensor.shape[2:]):
            raise MedsegError(f"{what} spatial size {tuple(tensor.shape[2:])} is not divisible by {self.divisor}")

    def embed(self, image: torch.Tensor) -> list[torch.Tensor]:
        """``image (B, Ci, H, W)`` -> the embedding: skip features fine to coarse (``fusion="decoder"``) or
        ``[image]`` (``fusion="input"``)."""
        self._check(image, self.config.image_channels, "image")
        if self.config.fusion == "input":
            return [image]
        skips, x = [], image
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        return skips

    def decode(self, embedding: Sequence[torch.Tensor], prompts: torch.Tensor) -> torch.Tensor:
        """``embedding`` from ``embed`` and ``prompts (B, PROMPT_CHANNELS, H, W)`` -> logits ``(B, 1, H, W)``.

        A batch of prompt sets may share one image's embedding (embedding batch 1, prompts batch B)."""
        self._check(prompts, PROMPT_CHANNELS, "prompts")
        size = prompts.shape[2:]
        if self.config.fusion == "input":
            image = embedding[0].expand(prompts.shape[0], *embedding[0].shape[1:])
            skips, x = [], torch.cat([image, prompts], 1)
            for stage in self.encoder:
                x = stage(x)
                skips.append(x)
        else:
            skips, p = [], prompts
            for level, (feature, stage) in enumerate(zip(embedding, self.prompt_encoder)):
                p = stage(p)
                skips.append(feature + p)
        x = skips[-1]
        for index, (up, stage) in enumerate(zip(self.up, self.decoder)):
            skip = skips[len(skips) - 2 - index]
            x = stage(torch.cat([up(x), skip], 1))
        logits = self.head(x)
        if logits.shape[2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits

    def forward(self, image: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        return self.decode(self.embed(image), prompts)
