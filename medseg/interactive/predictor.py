"""The learned promptable model as a ``Segmenter``: image and prompts mapped onto the model's grid, the embedding
computed once per slice, and the probability mapped back to the slice's own grid. Model folders are
``interactive.json`` (the network's configuration and what it was trained on) + ``model.safetensors``; loading
never unpickles anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from medseg.config import read_json, write_json_atomic
from medseg.errors import MedsegError
from medseg.interactive.model import PromptableConfig, PromptableUNet
from medseg.interactive.prompts import PromptSet, encode_prompts, grid_factor

MODEL_JSON = "interactive.json"
WEIGHTS = "model.safetensors"
KIND = "medseg-interactive"


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


def save_model(network: PromptableUNet, folder: str | Path, info: dict[str, Any] | None = None) -> Path:
    """Write ``folder/model.safetensors`` and then ``folder/interactive.json`` (each atomically), which records
    the weights' sha256 as ``weights_sha256``. A previous description loses its hash before the new weights are
    written, so a run killed in between leaves unverified weights (a warning at load), never a false error."""
    from medseg.weights_file import save_weights

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    description = folder / MODEL_JSON
    if description.is_file():
        previous = read_json(description)
        if isinstance(previous, dict) and previous.pop("weights_sha256", None) is not None:
            write_json_atomic(previous, description)
    digest = save_weights(network.state_dict(), folder / WEIGHTS)
    write_json_atomic({"kind": KIND, "schema_version": 1, "network": network.config.to_dict(), **(info or {}),
                       "weights_sha256": digest}, description)
    return folder


def load_network(folder: str | Path) -> tuple[PromptableUNet, dict[str, Any]]:
    """``folder`` -> the trained network (eval mode not set) and its ``interactive.json``; the weights are
    checked against the recorded ``weights_sha256`` (folders from before it load with a logged warning)."""
    from medseg.weights_file import load_weights

    folder = Path(folder)
    description = folder / MODEL_JSON
    if not description.is_file():
        raise MedsegError("not an interactive model folder (no interactive.json)", path=folder,
                          fix="pass the folder written by `medseg train-interactive`")
    info = read_json(description)
    if not isinstance(info, dict) or info.get("kind") != KIND:
        raise MedsegError(f"interactive.json is not a {KIND} description", path=description)
    network = PromptableUNet(PromptableConfig.from_dict(info["network"]))
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise MedsegError("weights are missing", path=weights, fix="train the model again or copy the whole folder")
    expected = info.get("weights_sha256")
    state = load_weights(weights, expected if isinstance(expected, str) else None,
                         fix="train the model again or restore the file")
    try:
        network.load_state_dict(state)
    except Exception as error:
        raise MedsegError(f"the weights do not fit the network ({str(error).splitlines()[0][:200]})", path=weights,
                          fix="train the model again or copy the whole folder") from None
    return network, info


def load_segmenter(folder: str | Path, device: str = "cpu", display_channel: int = 0) -> PromptableSegmenter:
    """A trained interactive model folder -> a ``Segmenter``."""
    network, info = load_network(folder)
    return PromptableSegmenter(network, device=device, display_channel=display_channel, info=info)
