"""The segmentation task of the trainer: patches from the preprocessed cache (foreground oversampling, nnU-Net's
augmentation, in loader workers), a registry loss under deep supervision, and nnU-Net's online pseudo-Dice on
fixed, unaugmented validation patches, counted with ``medseg.metrics``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from medseg.config import Configuration
from medseg.config.train_config import record_from_dict
from medseg.metrics import Confusion, confusion, dice


DISTANCE_WEIGHT = 1.0  # an instance head's distance-map MSE beside the segmentation loss (HoVer-Net weighs it 1)
PRIOR_KL_WEIGHT = 1.0  # a probabilistic U-Net: the KL term that fits the prior to the posterior
POSTERIOR_KL_WEIGHT = 0.05  # ... and the one that keeps the posterior near the prior (small: samples stay varied)
CASCADE_MORPHOLOGY_P = 0.4  # nnU-Net's cascade: a random binary operator on each first-stage channel
RANK_SEED_STRIDE = 2**40  # rank r's loader seeds sit r * this above rank 0's (no epoch or seed reaches it)


@dataclass
class SegmentationOptions:
    """The segmentation task's part of ``TrainConfig.task_options``.

    ``loss``: a name from ``medseg.losses.list_losses()``, applied at every deep-supervision level (nnU-Net drops
    the coarsest one when there is more than one). ``augmentation``: ``AugmentationConfig`` fields; None: the
    defaults for the patch. ``validation_batches``: fixed validation patches per epoch. ``semi``: a
    semi-supervised run's ``medseg.training.semi_supervised.SemiOptions`` (None: labelled cases only).
    """

    configuration: str
    fold: str = "0"
    loss: str = "nnunet_dice_ce"
    validation_batches: int = 8
    augmentation: dict[str, Any] | None = None
    semi: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SegmentationOptions":
        return record_from_dict(cls, data, "segmentation option")


def image_augmentation(configuration: Configuration, augmentation: dict[str, Any] | None = None):
    """The ``AugmentationConfig`` of a configuration's image patches: ``augmentation`` (its fields) or the defaults
    for the patch; for 2.5D the neighbouring slices of each image channel share its intensity changes. What every
    task that draws image patches of a plan (segmentation, pretraining, the unlabelled ones of semi-supervised
    training) starts from."""
    from medseg.transforms.config import AugmentationConfig

    config = (AugmentationConfig.from_dict(augmentation) if augmentation
              else AugmentationConfig.for_patch(configuration.patch_size))
    if configuration.slice_context:
        config = config.with_changes(slice_stack=1 + 2 * configuration.slice_context)
    return config


def label_lookup(label_values: list[int]) -> torch.Tensor:
    """``lut[value % 256]`` = output channel of a label value (int8 cache values wrap), ``(256,)`` int64."""
    lut = np.zeros(256, dtype=np.int64)
    for index, value in enumerate(label_values):
        lut[value % 256] = index
    return torch.from_numpy(lut)


class SegmentationTask:
    """Batches and loss for one fold of one plan configuration, read from ``cache_dir``."""

    def __init__(self, *, configuration: Configuration, cache_dir: str | Path, train_cases: list[str],
                 val_cases: list[str], label_values: list[int], options: SegmentationOptions, seed: int = 0,
                 num_workers: int = 1, device: str = "cpu"):
        from medseg.losses import DeepSupervisionLoss, create

        self.configuration, self.cache_dir, self.options = configuration, Path(cache_dir), options
        self.train_cases, self.val_cases = train_cases, val_cases
        self.seed, self.num_workers, self.device = seed, num_workers, torch.device(device)
        self.name = f"train {configuration.name} fold {options.fold}"
        self.default_iterations = int(configuration.num_iterations)
        self.label_lut = label_lookup(label_values)
        self.num_classes = len(label_values)
        self.criterion = create(options.loss)
        self.deep_criterion = DeepSupervisionLoss(self.criterion, zero_coarsest=True)
        self.raters = int(configuration.raters)
        # the last data channels that are training targets: an instance model's distance map, or each rater's
        # foreground labels one-hot
        self.target_channels = 1 if configuration.instances else self.raters * (self.num_classes - 1)

    def batches(self, epoch: int, count: int) -> Iterator[dict[str, Any]]:
        return self.shard_batches(epoch, count, 0, 1)

    def shard_batches(self, epoch: int, count: int, rank: int, world_size: int) -> Iterator[dict[str, Any]]:
        """Rank ``rank``'s ``count`` batches of epoch ``epoch`` (each of the plan's batch size): its own patch
        stream, seeded by the seed, the epoch and the rank; rank 0's is the one-process stream."""
        from medseg.data.loader import PatchLoader

        augmentation = image_augmentation(self.configuration, self.options.augmentation)
        if self.configuration.previous_stage:  # the first stage's one-hot channels: morphology, not intensity
            image_channels = int(self.configuration.network["in_channels"]) - (self.num_classes - 1)
            augmentation = augmentation.with_changes(
                intensity_channels=image_channels,
                p_previous_stage_morphology=(CASCADE_MORPHOLOGY_P if not self.options.augmentation
                                             else augmentation.p_previous_stage_morphology))
        if self.target_channels:  # the cached distance map or raters' maps are targets, not inputs
            augmentation = augmentation.with_changes(target_channels=self.target_channels)
        yield from PatchLoader(self.cache_dir, self.configuration.patch_size, self.configuration.batch_size,
                               augmentation=augmentation, num_workers=self.num_workers,
                               seed=self.seed * 1_000_003 + epoch + rank * RANK_SEED_STRIDE,
                               progress=False, num_batches=count,
                               case_ids=self.train_cases, slice_context=self.configuration.slice_context)

    def loss(self, network: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Deep-supervision loss when the network gives a list of outputs (fine -> coarse), else the plain loss.
        An instance configuration adds the mean squared error of its last output channel (through a sigmoid)
        against the batch's distance map ``(B, 1, *P)``, the image's last channel, at full resolution; a
        probabilistic one trains on one rater per patch (``_rater_loss``)."""
        image = batch["image"].to(self.device, non_blocking=True)
        if self.raters:
            return self._rater_loss(network, image)
        target = self.label_lut[batch["label"].long()].to(self.device, non_blocking=True)
        distance = None
        if self.configuration.instances:
            image, distance = image[:, :-1], image[:, -1:]
        core = network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network
        if hasattr(core, "deep_supervision"):
            core.deep_supervision = True
        outputs = network(image)
        deep = isinstance(outputs, (list, tuple))
        levels = list(outputs) if deep else [outputs]
        classes = [o[:, :self.num_classes].float() for o in levels]
        loss = self.deep_criterion(classes, target) if deep else self.criterion(classes[0], target)
        if distance is not None:
            loss = loss + DISTANCE_WEIGHT * nn.functional.mse_loss(torch.sigmoid(levels[0][:, -1:].float()),
                                                                   distance)
        return loss

    def _rater_loss(self, network: nn.Module, image: torch.Tensor) -> torch.Tensor:
        """A probabilistic configuration: each patch's target is one of its raters' maps, drawn at random, which
        the posterior net sees; the segmentation loss at the posterior's sample plus the two KL terms."""
        image, maps = image[:, :-self.target_channels], image[:, -self.target_channels:]
        foreground = self.num_classes - 1
        maps = maps.reshape(maps.shape[0], self.raters, foreground, *maps.shape[2:])
        drawn = torch.randint(self.raters, (maps.shape[0],), device=maps.device)
        chosen = maps[torch.arange(maps.shape[0], device=maps.device), drawn]  # (B, F, *P), warped: not 0/1
        best, index = chosen.max(1, keepdim=True)
        target = torch.where(best > 0.5, index + 1, torch.zeros_like(index))  # (B, 1, *P) class indices
        onehot = nn.functional.one_hot(target[:, 0], self.num_classes).movedim(-1, 1).float()
        logits, to_prior, of_posterior = network(image, onehot)
        return (self.criterion(logits.float(), target) + PRIOR_KL_WEIGHT * to_prior.mean()
                + POSTERIOR_KL_WEIGHT * of_posterior.mean())

    def validate(self, network: nn.Module) -> dict[str, list[float]]:
        """``{"val_dice": [Dice of class 1, 2, ...]}`` over all validation patches pooled (nnU-Net's pseudo-Dice);
        a class absent from both prediction and reference scores 1 (``medseg.metrics`` convention)."""
        from medseg.data.loader import PatchLoader
        from medseg.transforms.config import AugmentationConfig

        loader = PatchLoader(self.cache_dir, self.configuration.patch_size, self.configuration.batch_size,
                             augmentation=AugmentationConfig.disabled(), num_workers=0, seed=self.seed + 7,
                             progress=False, num_batches=self.options.validation_batches, case_ids=self.val_cases,
                             slice_context=self.configuration.slice_context)
        network.eval()
        if hasattr(network, "deep_supervision"):
            network.deep_supervision = False
        totals = [Confusion(0, 0, 0, 0) for _ in range(self.num_classes)]
        for batch in loader:
            image = batch["image"][:, :-self.target_channels] if self.target_channels else batch["image"]
            logits = network(image.to(self.device))[:, :self.num_classes]
            prediction = logits.argmax(1).cpu().numpy()
            target = self.label_lut[batch["label"].long()][:, 0].numpy()
            for c in range(1, self.num_classes):
                totals[c] = totals[c] + confusion(prediction == c, target == c)
        if hasattr(network, "deep_supervision"):
            network.deep_supervision = True
        return {"val_dice": [round(dice(totals[c]), 4) for c in range(1, self.num_classes)]}
