"""Segment a target from a support set with a trained in-context model: ``InContextSession(model).predict(target,
support)``. The model is stateless; the session holds the network, its grid and the device.

A 2D target is segmented with ``k`` of the support examples. A 3D target ``(Z, Y, X)`` is segmented slice by slice
along its first array axis with slices of 3D support examples: the ``k`` support slices (slices holding the
structure) spread evenly over the support set, or with ``nearest=True`` the ``k`` whose relative position in
their volume is nearest the target slice's; target slices outside the support structures' relative extent are
left empty with ``nearest=True``. The probability is resized back to the target's own grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medseg.errors import MedsegError
from medseg.incontext.grid import grid_to_image, image_to_grid, mask_to_grid
from medseg.incontext.model import load_incontext_network
from medseg.incontext.support import SupportSet, SupportSlice
from medseg.io import Image
from medseg.nets.incontext_unet import InContextUNet


@dataclass
class InContextPrediction:
    """On the target's grid ``(*S)``: ``mask`` bool, ``probability`` float32 (the mean candidate's), and for a
    stochastic model ``candidates (K, *S)`` float32 probabilities and ``spread (*S)``, their pixel-wise standard
    deviation (0 everywhere for one candidate)."""

    mask: np.ndarray
    probability: np.ndarray
    candidates: np.ndarray
    spread: np.ndarray


def _target_array(target: Image | np.ndarray) -> np.ndarray:
    """``Image`` -> its ``(C, *S)`` array; a bare array is one channel ``(*S)`` -> ``(1, *S)``."""
    if isinstance(target, Image):
        return target.array.astype(np.float32)
    array = np.asarray(target, np.float32)
    if array.ndim not in (2, 3):
        raise MedsegError(f"a target array must be (Y, X) or (Z, Y, X), got shape {array.shape}",
                          fix="pass an Image for a multi-channel target")
    return array[None]


def check_support_fits(support: SupportSet, target_dims: int, path: str | Path | None = None) -> None:
    """A support set of other dimensions than the target is a ``MedsegError`` (naming ``path``, the support)."""
    if support.spatial_dims != target_dims:
        raise MedsegError(f"a {support.spatial_dims}D support set for a {target_dims}D target: the model segments "
                          "2D images (a 3D target slice by slice, with slices of 3D support examples)", path=path,
                          fix=f"give {target_dims}D support examples, as the target")


def _spread_choice(count: int, k: int) -> np.ndarray:
    """``k`` indices spread evenly over ``range(count)`` (all of them when ``k >= count``)."""
    if k >= count:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, k).round().astype(int))


class InContextSession:
    """``InContextSession(model)``: ``model`` is a model folder, None (the shipped model) or an ``InContextUNet``.
    ``batch`` target slices run through the network at once."""

    def __init__(self, model: str | Path | InContextUNet | None = None, *, device: str = "cpu", batch: int = 4):
        from medseg.devices import require_device

        require_device(device)
        if isinstance(model, InContextUNet):
            self.network, self.info = model.eval().to(device), {}
        else:
            self.network, spec = load_incontext_network(model, device=device)
            self.info = {**spec.extra, "card": spec.card.to_dict()}
        self.device, self.batch = torch.device(device), max(1, batch)

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.network.config.grid)

    @property
    def stochastic(self) -> bool:
        return bool(self.network.config.stochastic)

    def _support_tensors(self, slices: Sequence[SupportSlice], channel: int | None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> ``images (k, 1, *grid)``, ``masks (k, 1, *grid)``."""
        images = torch.stack([image_to_grid(s.image, self.grid, channel) for s in slices])
        masks = torch.stack([mask_to_grid(s.mask, self.grid) for s in slices])
        return images, masks

    @torch.inference_mode()
    def _run(self, targets: list[np.ndarray], supports: list[list[SupportSlice]], candidates: int, seed: int,
             channel: int | None) -> list[np.ndarray]:
        """2D ``targets[i] (C, H, W)`` with their support slices -> ``[(K, H, W)]`` probabilities."""
        generator = torch.Generator().manual_seed(seed)
        out = []
        for start in range(0, len(targets), self.batch):
            chunk = range(start, min(start + self.batch, len(targets)))
            target = torch.stack([image_to_grid(targets[i], self.grid, channel) for i in chunk]).to(self.device)
            pairs = [self._support_tensors(supports[i], channel) for i in chunk]
            images = torch.stack([p[0] for p in pairs]).to(self.device)
            masks = torch.stack([p[1] for p in pairs]).to(self.device)
            logits = self.network(target, images, masks, candidates=candidates, generator=generator)
            probability = torch.sigmoid(logits.float())
            out += [grid_to_image(p, targets[i].shape[1:]) for p, i in zip(probability, chunk)]
        return out

    def predict(self, target: Image | np.ndarray, support: SupportSet, *, k: int | None = None,
                candidates: int = 1, nearest: bool = False, seed: int = 0, channel: int | None = None
                ) -> InContextPrediction:
        """Segment ``target`` (an ``Image`` or a one-channel ``(Y, X)`` / ``(Z, Y, X)`` array) as ``support`` shows.

        ``k``: support examples (2D) or slices per target slice (3D) to use, all when None (at most 64 slices for
        3D); ``candidates``: masks to draw (a stochastic model only); ``channel``: the image channel the model
        reads (default: the mean of RGB, else the first)."""
        array = _target_array(target)
        dims = array.ndim - 1
        if k is not None and k < 1:
            raise MedsegError(f"-k {k}: the support size must be at least 1")
        if candidates < 1 or (candidates > 1 and not self.stochastic):
            raise MedsegError(f"{candidates} candidates asked of a deterministic in-context model",
                              fix="ask for 1 candidate, or use a stochastic model (medseg train-incontext "
                                  "--stochastic)")
        check_support_fits(support, dims)
        slices = support.slices(channel)
        if dims == 2:
            chosen = [slices[i] for i in _spread_choice(len(slices), k or len(slices))]
            probability = self._run([array], [chosen], candidates, seed, channel)[0]
        else:
            probability = self._predict_volume(array, slices, k or 64, candidates, nearest, seed, channel)
        mean = probability.mean(0)
        return InContextPrediction(mean >= 0.5, mean, probability, probability.std(0))

    def _predict_volume(self, volume: np.ndarray, slices: list[SupportSlice], k: int, candidates: int,
                        nearest: bool, seed: int, channel: int | None) -> np.ndarray:
        """``volume (C, Z, Y, X)`` -> ``(K, Z, Y, X)`` probabilities, slice by slice."""
        depth = volume.shape[1]
        positions = np.array([s.position for s in slices])
        low, high = positions.min() - 1.0 / max(depth - 1, 1), positions.max() + 1.0 / max(depth - 1, 1)
        out = np.zeros((candidates, *volume.shape[1:]), np.float32)
        todo, supports = [], []
        for z in range(depth):
            where = z / max(depth - 1, 1)
            if nearest:
                if not low <= where <= high:
                    continue
                order = np.argsort(np.abs(positions - where), kind="stable")[:k]
                supports.append([slices[i] for i in sorted(order)])
            else:
                supports.append([slices[i] for i in _spread_choice(len(slices), k)])
            todo.append(z)
        results = self._run([volume[:, z] for z in todo], supports, candidates, seed, channel)
        for z, probability in zip(todo, results):
            out[:, z] = probability
        return out
