"""The trainer task of ``medseg pretrain``: masked image modelling for a CNN U-Net (SimMIM / SparK's objective on
dense convolutions).

A patch is cut into blocks of the network's total stride (one bottleneck voxel each, as SparK masks), a share
``mask_ratio`` of the blocks is set to 0 (the normalised intensity mean) and the network, its head giving one
channel per image channel, reconstructs the patch; the loss is the mean squared error on the masked voxels only.
Patches come from the preprocessed cache of unlabelled images with the segmentation training's augmentation, so
what the encoder learns is what it will see when fine-tuned. Masks are drawn per epoch from the seed (a resumed
run draws what an uninterrupted one would have).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from medseg.config import Configuration
from medseg.config.train_config import record_from_dict
from medseg.errors import MedsegError

METHODS = ("mae",)  # masked-image modelling; the CLI's --method


@dataclass
class MaskedImageOptions:
    """``TrainConfig.task_options`` of a pretraining run. ``block``: the masked block's edge per axis (None: the
    network's total stride along each axis, capped at half the patch); ``validation_batches``: fixed patches,
    with fixed masks, whose reconstruction error is the epoch's validation figure."""

    configuration: str
    method: str = "mae"
    mask_ratio: float = 0.6
    block: list[int] | None = None
    validation_batches: int = 4

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MaskedImageOptions":
        return record_from_dict(cls, data, "pretraining option")


def network_stride(config: Configuration) -> list[int]:
    """The product of the plan network's strides along each axis, ``(ndim,)``."""
    dims = len(config.patch_size)
    total = [1] * dims
    for stride in config.network.get("strides", ()):
        per_axis = [int(stride)] * dims if isinstance(stride, (int, float)) else [int(s) for s in stride]
        total = [t * s for t, s in zip(total, per_axis)]
    return total


def mask_block(config: Configuration, block: Sequence[int] | None = None) -> list[int]:
    """The masked block's edge per axis: ``block`` or the network's total stride, at most half the patch. A
    ``block`` of another dimension than the patch, or with an edge below 1, is one error."""
    if block and (len(block) != len(config.patch_size) or min(int(b) for b in block) < 1):
        raise MedsegError(f"mask block {'x'.join(map(str, block))} for the {len(config.patch_size)}D patch "
                          f"{'x'.join(map(str, config.patch_size))} of {config.name}",
                          fix=f"give one edge of at least 1 per axis, e.g. {'x'.join(['16'] * len(config.patch_size))}"
                              " (default: the network's total stride)")
    chosen = list(block) if block else network_stride(config)
    return [max(1, min(int(b), int(p) // 2)) for b, p in zip(chosen, config.patch_size)]


def block_masks(count: int, patch: Sequence[int], block: Sequence[int], ratio: float,
                generator: torch.Generator) -> torch.Tensor:
    """``count`` masks ``(count, 1, *patch)`` float32, 1 where masked: in each, ``round(ratio * blocks)`` of the
    patch's blocks (a grid of ``block``-sized cells, the last ones cut at the patch's edge) drawn at random."""
    grid = [math.ceil(p / b) for p, b in zip(patch, block)]
    cells = int(np.prod(grid))
    masked = min(cells, max(1, round(ratio * cells)))
    order = torch.rand(count, cells, generator=generator).argsort(dim=1)
    flat = torch.zeros(count, cells)
    flat.scatter_(1, order[:, :masked], 1.0)
    masks = flat.reshape(count, *grid)
    for axis, size in enumerate(block):
        masks = masks.repeat_interleave(int(size), dim=axis + 1)
    crop = (slice(None),) + tuple(slice(0, int(p)) for p in patch)
    return masks[crop].unsqueeze(1).contiguous()


class MaskedImageTask:
    """Batches of augmented unlabelled patches with their masks, the masked reconstruction loss, and the
    validation reconstruction error (``val_masked_mse``; lower is better) on fixed patches and masks."""

    def __init__(self, *, configuration: Configuration, cache_dir: str | Path, train_cases: list[str],
                 val_cases: list[str], options: MaskedImageOptions, seed: int = 0, num_workers: int = 1,
                 device: str = "cpu"):
        self.configuration, self.cache_dir, self.options = configuration, Path(cache_dir), options
        self.train_cases, self.val_cases = train_cases, val_cases
        self.seed, self.num_workers, self.device = seed, num_workers, torch.device(device)
        self.name = f"pretrain {configuration.name} ({options.method})"
        self.default_iterations = int(configuration.num_iterations)
        self.block = mask_block(configuration, options.block)

    def batches(self, epoch: int, count: int) -> Iterator[dict[str, Any]]:
        from medseg.data.loader import PatchLoader
        from medseg.training.segmentation_task import image_augmentation

        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        loader = PatchLoader(self.cache_dir, self.configuration.patch_size, self.configuration.batch_size,
                             augmentation=image_augmentation(self.configuration),
                             num_workers=self.num_workers, seed=self.seed * 1_000_003 + epoch, progress=False,
                             num_batches=count, case_ids=self.train_cases, foreground_fraction=0.0,
                             slice_context=self.configuration.slice_context)
        for batch in loader:
            image = batch["image"]
            yield {"image": image, "mask": block_masks(image.shape[0], image.shape[2:], self.block,
                                                       self.options.mask_ratio, generator)}

    def loss(self, network: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Mean squared error of the reconstruction ``(B, C, *P)`` on the masked voxels of every channel."""
        image = batch["image"].to(self.device, non_blocking=True)
        mask = batch["mask"].to(self.device, non_blocking=True)
        core = network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network
        if hasattr(core, "deep_supervision"):
            core.deep_supervision = False
        reconstruction = network(image * (1.0 - mask))
        return masked_mse(reconstruction.float(), image, mask)

    def validate(self, network: nn.Module) -> dict[str, float]:
        from medseg.data.loader import PatchLoader
        from medseg.transforms.config import AugmentationConfig

        generator = torch.Generator().manual_seed(self.seed + 7)
        loader = PatchLoader(self.cache_dir, self.configuration.patch_size, self.configuration.batch_size,
                             augmentation=AugmentationConfig.disabled(), num_workers=0, seed=self.seed + 7,
                             progress=False, num_batches=self.options.validation_batches, case_ids=self.val_cases,
                             foreground_fraction=0.0, slice_context=self.configuration.slice_context)
        network.eval()
        if hasattr(network, "deep_supervision"):
            network.deep_supervision = False
        errors = []
        for batch in loader:
            image = batch["image"].to(self.device)
            mask = block_masks(image.shape[0], image.shape[2:], self.block, self.options.mask_ratio,
                               generator).to(self.device)
            errors.append(float(masked_mse(network(image * (1.0 - mask)).float(), image, mask)))
        return {"val_masked_mse": round(float(np.mean(errors)), 5)}


def masked_mse(reconstruction: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``reconstruction``, ``image`` ``(B, C, *P)``, ``mask`` ``(B, 1, *P)`` (1 = masked): the squared error
    averaged over the masked voxels of every channel."""
    squared = (reconstruction - image) ** 2 * mask
    return squared.sum() / (mask.sum() * image.shape[1]).clamp_min(1.0)
