"""Training a universal model as a task of the one trainer (``medseg.training.Trainer``).

Each step is one batch of one dataset, the dataset drawn uniformly (so a dataset of 20 images weighs as much as
one of 600), at that dataset's own patch and batch size from its plan's 2D configuration, read from its
preprocessed cache by the segmentation pipeline's ``PatchLoader`` (foreground oversampling, the class drawn
uniformly among those present: balanced across classes). The labels are mapped to the network's classes; the
loss is ``PartialLabelLoss(mode="marginal")`` under deep supervision, so a voxel of dataset A is never penalised
for a class that A does not annotate (its probability is pooled with A's background).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from medseg.config import Configuration
from medseg.config.train_config import record_from_dict
from medseg.metrics import Confusion, confusion, dice
from medseg.universal.sources import (SourceView, UniversalSource, annotated_flags, global_lookup,
                                      network_input)


@dataclass
class UniversalOptions:
    """The universal task's part of ``TrainConfig.task_options``: a softmax loss from ``medseg.losses`` (each of
    its terms evaluated unreduced by the partial-label loss) and the fixed validation batches per dataset."""

    loss: str = "nnunet_dice_ce"
    validation_batches: int = 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "UniversalOptions":
        return record_from_dict(cls, data, "universal option")


class UniversalTask:
    """Batches and loss over ``sources`` (dataset ``d``: ``configurations[d]``, cache ``cache_dirs[d]``, training
    cases ``train_cases[d]``) for a network with ``num_outputs`` = 1 + vocabulary classes."""

    def __init__(self, *, sources: Sequence[UniversalSource], configurations: Sequence[Configuration],
                 cache_dirs: Sequence[str | Path], train_cases: Sequence[list[str]], num_outputs: int,
                 options: UniversalOptions, seed: int = 0, num_workers: int = 1, device: str = "cpu"):
        from medseg.losses import DeepSupervisionLoss, PartialLabelLoss, create

        self.sources, self.configurations = list(sources), list(configurations)
        self.cache_dirs, self.train_cases = [Path(c) for c in cache_dirs], [list(c) for c in train_cases]
        self.num_outputs, self.options = int(num_outputs), options
        self.seed, self.num_workers, self.device = seed, num_workers, torch.device(device)
        self.name = f"train universal ({len(self.sources)} datasets)"
        self.default_iterations = int(sum(c.num_iterations for c in self.configurations))
        self.lookups = [global_lookup(s) for s in self.sources]
        self.criterion = PartialLabelLoss(create(options.loss), mode="marginal")
        self.deep_criterion = DeepSupervisionLoss(self.criterion, zero_coarsest=True)

    def _loader(self, d: int, count: int, seed: int, *, augment: bool, workers: int):
        from medseg.data.loader import PatchLoader
        from medseg.transforms.config import AugmentationConfig

        config = self.configurations[d]
        augmentation = (AugmentationConfig.for_patch(config.patch_size) if augment
                        else AugmentationConfig.disabled())
        return PatchLoader(self.cache_dirs[d], config.patch_size, config.batch_size, augmentation=augmentation,
                           num_workers=workers, seed=seed, progress=False, num_batches=count,
                           case_ids=self.train_cases[d])

    def batches(self, epoch: int, count: int) -> Iterator[dict[str, Any]]:
        """``count`` batches, each from one dataset drawn uniformly (seeded by the seed and the epoch), with the
        dataset's index under ``"source"``."""
        order = np.random.default_rng([self.seed, epoch]).integers(len(self.sources), size=count)
        streams = {int(d): iter(self._loader(int(d), int((order == d).sum()),
                                             self.seed * 1_000_003 + epoch * 101 + int(d), augment=True,
                                             workers=self.num_workers))
                   for d in np.unique(order)}
        for d in order:
            yield {**next(streams[int(d)]), "source": int(d)}

    def loss(self, network: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        d = batch["source"]
        image = network_input(batch["image"].to(self.device), self.sources[d].channels)
        target = self.lookups[d][batch["label"].long()].to(self.device)
        annotated = annotated_flags(self.sources[d], self.num_outputs, image.shape[0], self.device)
        core = network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network
        if hasattr(core, "deep_supervision"):
            core.deep_supervision = True
        outputs = network(image)
        if isinstance(outputs, (list, tuple)):
            return self.deep_criterion([o.float() for o in outputs], target, annotated=annotated)
        return self.criterion(outputs.float(), target, annotated=annotated)

    def validate(self, network: nn.Module) -> dict[str, list[float]]:
        """``{"train_patch_dice": [...]}``: per vocabulary class (in output order), the pooled Dice on fixed,
        unaugmented patches of its dataset's training cases (a learning curve, not a held-out figure)."""
        network.eval()
        if hasattr(network, "deep_supervision"):
            network.deep_supervision = False
        scores = [float("nan")] * (self.num_outputs - 1)
        for d, source in enumerate(self.sources):
            view = SourceView(network, source)
            totals = [Confusion(0, 0, 0, 0) for _ in source.classes]
            for batch in self._loader(d, self.options.validation_batches, self.seed + 7, augment=False,
                                      workers=0):
                prediction = view(batch["image"].to(self.device)).argmax(1).cpu().numpy()
                reference = batch["label"][:, 0].long().numpy() % 256  # int8 cache values wrap
                for i, value in enumerate(source.label_values):
                    totals[i] = totals[i] + confusion(prediction == i + 1, reference == value % 256)
            for i, channel in enumerate(source.classes):
                scores[channel - 1] = round(dice(totals[i]), 4)
        if hasattr(network, "deep_supervision"):
            network.deep_supervision = True
        return {"train_patch_dice": scores}
