"""The learned promptable model as a ``Segmenter``: image and prompts mapped onto the model's grid, the embedding
computed once per slice, and the probability mapped back to the slice's own grid. Model folders follow the one
contract (``medseg.config.model_folder``): ``model.json`` with task ``interactive`` (the ``promptable_unet``
network's arguments, the weights card, what it was trained on) + ``fold_all/weights.safetensors``; loading verifies
the weights' sha256 and never unpickles anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from medseg.config.model_folder import (MODEL_JSON, ModelSpec, NetworkSpec, WeightsCard, fold_folder,
                                        read_model_spec, write_fold_weights, write_model_spec)
from medseg.errors import MedsegError
from medseg.interactive.prompts import PromptSet, encode_prompts, grid_factor
from medseg.nets.promptable_unet import PromptableConfig, PromptableUNet

FOLD = "all"  # an interactive model is trained on all its training slices: one fold
SHIPPED = Path(__file__).resolve().parent / "weights"


def normalize_channels(image: np.ndarray, channels: int = 3, display_channel: int = 0) -> np.ndarray:
    """``image (C, H, W)`` -> ``(channels, H, W)`` float32 in [0, 1]: each channel windowed to its 0.5-99.5th
    percentiles. One channel is repeated; three are kept (RGB); any other count uses ``display_channel`` repeated
    (e.g. FLAIR of a FLAIR + T1c MRI)."""
    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise MedsegError(f"expected one 2D slice (C, H, W), got an array of shape {image.shape}")
    if image.shape[0] != channels:
        index = 0 if image.shape[0] == 1 else display_channel
        if index >= image.shape[0]:
            raise MedsegError(f"display channel {index} does not exist: the image has {image.shape[0]} channels")
        image = np.repeat(image[index:index + 1], channels, axis=0)
    low, high = np.percentile(image.reshape(image.shape[0], -1), [0.5, 99.5], axis=1)
    scale = np.where(high > low, high - low, 1.0)
    return np.clip((image - low[:, None, None]) / scale[:, None, None], 0.0, 1.0).astype(np.float32)


def resize(array: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of ``(B, C, H, W)`` to ``size`` (antialiased when shrinking)."""
    if tuple(array.shape[2:]) == tuple(size):
        return array
    shrinking = any(s < a for s, a in zip(size, array.shape[2:]))
    return F.interpolate(array, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrinking)


@dataclass
class SliceEmbedding:
    """What ``embed`` caches for one slice: the network's embedding on the model grid and the slice's shape."""

    features: list[torch.Tensor]
    shape: tuple[int, int]


class PromptableSegmenter:
    """A trained ``PromptableUNet`` behind the ``Segmenter`` protocol (``medseg.interactive.segmenter``)."""

    name = "medseg"

    def __init__(self, network: PromptableUNet, *, device: str = "cpu", display_channel: int = 0,
                 info: dict[str, Any] | None = None):
        self.network = network.eval().to(device)
        self.device = torch.device(device)
        self.display_channel = display_channel
        self.info = info or {}

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.network.config.grid)

    def model_input(self, image: np.ndarray) -> torch.Tensor:
        """``image (C, H, W)`` -> ``(1, Ci, *grid)`` on the device."""
        array = normalize_channels(image, self.network.config.image_channels, self.display_channel)
        return resize(torch.from_numpy(array)[None], self.grid).to(self.device)

    @torch.inference_mode()
    def embed(self, image: np.ndarray) -> SliceEmbedding:
        image = np.asarray(image)
        shape = tuple(image.shape[-2:])
        return SliceEmbedding(self.network.embed(self.model_input(image)), shape)

    def prompt_maps(self, prompts: PromptSet, shape: Sequence[int], previous: np.ndarray | None) -> torch.Tensor:
        """Prompts and the previous probability on the slice's grid -> ``(1, PROMPT_CHANNELS, *grid)``."""
        on_grid = prompts.scaled(grid_factor(shape, self.grid))
        previous_grid = None
        if previous is not None:
            previous = torch.from_numpy(np.asarray(previous, np.float32))[None, None]
            previous_grid = resize(previous, self.grid)[0, 0].numpy()
        return torch.from_numpy(encode_prompts(on_grid, self.grid, previous_grid))[None].to(self.device)

    @torch.inference_mode()
    def predict(self, embedding: SliceEmbedding, prompts: PromptSet, previous: np.ndarray | None = None) -> np.ndarray:
        if len(prompts) == 0:
            return np.zeros(embedding.shape, np.float32)
        logits = self.network.decode(embedding.features, self.prompt_maps(prompts, embedding.shape, previous))
        logits = F.interpolate(logits.float(), size=embedding.shape, mode="bilinear", align_corners=False)
        return torch.sigmoid(logits)[0, 0].cpu().numpy()


def interactive_spec(config: PromptableConfig, info: dict[str, Any] | None = None,
                     card: WeightsCard | None = None) -> ModelSpec:
    """The ``ModelSpec`` of an interactive model: ``promptable_unet`` with ``config``'s arguments, one object
    (label values 0, 1), ``info`` (datasets, train/held-out cases, ...) as its extra."""
    options = config.to_dict()
    network = NetworkSpec("promptable_unet", 2, int(options.pop("image_channels")), 1, options)
    return ModelSpec("interactive", network, [0, 1], card=card or WeightsCard.now(), extra=dict(info or {}))


def save_model(network: PromptableUNet, folder: str | Path, info: dict[str, Any] | None = None,
               card: WeightsCard | None = None) -> Path:
    """Write the interactive model folder: ``fold_all/weights.safetensors`` with its sha256 record, then
    ``model.json``."""
    folder = Path(folder)
    write_fold_weights(fold_folder(folder, FOLD), network.state_dict())
    write_model_spec(folder, interactive_spec(network.config, info, card))
    return folder


def shipped_model_folder() -> Path:
    """The promptable model that ships with medseg (``bench/train_shipped.py --interactive``); a ``MedsegError``
    saying what to do when this install has none."""
    if not (SHIPPED / MODEL_JSON).is_file():
        raise MedsegError("this medseg install has no shipped promptable model", path=SHIPPED,
                          fix="pass --model MODEL_FOLDER (medseg train-interactive DATASETS... -o MODEL_FOLDER), or "
                              "--baseline random_walker to work without a trained model")
    return SHIPPED


def load_segmenter(folder: str | Path | None = None, device: str = "cpu", display_channel: int = 0
                   ) -> PromptableSegmenter:
    """A trained interactive model folder (None: the shipped model) -> a ``Segmenter``; ``info`` holds the
    folder's extra (datasets, train and held-out cases) and its weights card."""
    from medseg.devices import require_device
    from medseg.nets.from_folder import load_network

    require_device(device)
    folder = shipped_model_folder() if folder is None else folder
    spec = read_model_spec(folder)
    if spec.task != "interactive":
        raise MedsegError(f"a {spec.task} model, not an interactive one", path=folder,
                          fix="pass a folder written by medseg train-interactive")
    network = load_network(folder, FOLD, device=device, spec=spec)
    info = {**spec.extra, "steps": spec.card.steps, "train_seconds": spec.card.train_seconds,
            "card": spec.card.to_dict()}
    return PromptableSegmenter(network, device=device, display_channel=display_channel, info=info)
