"""Semi-supervised training on the one trainer: the segmentation task's labelled batches plus a consistency term on
unlabelled patches, against a mean teacher (an exponential moving average of the network's weights).

``mean-teacher`` (Tarvainen & Valpola 2017, as Yu et al. 2019 use it for medical images): the squared difference
of the student's and the teacher's softmax on the same unlabelled patch, each under its own Gaussian noise
(std 0.1, clipped at 0.2), weighted by ``weight * exp(-5 (1 - t)^2)`` for the first ``rampup`` share of the run
(t rising 0 -> 1), then ``weight``. ``fixmatch`` (Sohn et al. 2020, with the mean teacher as the labeller): the
teacher's argmax on the clean patch is the target of a cross-entropy on the student's prediction of the perturbed
patch (noise plus a random brightness and contrast change), counted only where the teacher's probability is at
least ``threshold``.

The teacher starts as a copy of the network and follows it by ``decay`` = min(1 - 1 / (step + 1), ``ema``) after
every step; it is not in the checkpoint, so a resumed run restarts it from the network it resumes.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from medseg.config.train_config import record_from_dict
from medseg.errors import MedsegError

SEMI_METHODS = ("mean-teacher", "fixmatch")
NOISE_STD, NOISE_CLIP = 0.1, 0.2


@dataclass
class SemiOptions:
    """``SegmentationOptions.semi``: the method, the unlabelled images' cache (``cache``, the ids in it) and the
    weights of the consistency term."""

    method: str = "mean-teacher"
    cache: str = ""
    cases: list[str] | None = None
    weight: float | None = None  # default: 1.0 (mean-teacher's MSE is small), 1.0 (fixmatch)
    rampup: float = 0.3
    ema: float = 0.99
    threshold: float = 0.95

    def __post_init__(self) -> None:
        if self.method not in SEMI_METHODS:
            raise MedsegError(f"unknown semi-supervised method {self.method!r}",
                              fix=f"use one of {', '.join(SEMI_METHODS)}")
        if not 0.0 <= self.rampup <= 1.0 or not 0.0 < self.ema < 1.0 or not 0.0 < self.threshold < 1.0:
            raise MedsegError(f"semi-supervised rampup {self.rampup}, ema {self.ema}, threshold {self.threshold}",
                              fix="use 0 <= rampup <= 1, 0 < ema < 1, 0 < threshold < 1")

    @property
    def consistency_weight(self) -> float:
        return 1.0 if self.weight is None else float(self.weight)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SemiOptions":
        return record_from_dict(cls, data, "semi-supervised option")


def rampup_factor(fraction: float, rampup: float) -> float:
    """``exp(-5 (1 - fraction / rampup)^2)`` while ``fraction < rampup``, then 1 (Laine & Aila's sigmoid ramp)."""
    if rampup <= 0 or fraction >= rampup:
        return 1.0
    return math.exp(-5.0 * (1.0 - fraction / rampup) ** 2)


class SemiSupervisedTask:
    """``supervised`` (a ``SegmentationTask``) plus the consistency term on patches of the unlabelled cache.

    The trainer tells the task its schedule's fraction before each step (``set_fraction``), which drives the
    ramp-up. Validation is the supervised task's (the student's pseudo-Dice)."""

    def __init__(self, supervised: Any, options: SemiOptions):
        if not options.cases:
            raise MedsegError("semi-supervised training without unlabelled images", fix="pass --unlabelled DIR")
        self.supervised, self.options = supervised, options
        self.name = f"{supervised.name} + {options.method}"
        self.default_iterations = supervised.default_iterations
        self.teacher: nn.Module | None = None
        self.fraction, self.steps = 0.0, 0
        self.last_terms: dict[str, float] = {}

    def set_fraction(self, fraction: float) -> None:
        self.fraction = float(fraction)

    def batches(self, epoch: int, count: int) -> Iterator[dict[str, Any]]:
        from medseg.data.loader import PatchLoader
        from medseg.training.segmentation_task import image_augmentation

        config = self.supervised.configuration
        unlabelled = PatchLoader(Path(self.options.cache), config.patch_size, config.batch_size,
                                 augmentation=image_augmentation(config, self.supervised.options.augmentation),
                                 num_workers=self.supervised.num_workers,
                                 seed=self.supervised.seed * 1_000_003 + epoch + 500_009, progress=False,
                                 num_batches=count, case_ids=self.options.cases, foreground_fraction=0.0,
                                 slice_context=config.slice_context)
        for labelled, other in zip(self.supervised.batches(epoch, count), unlabelled):
            yield {"labelled": labelled, "unlabelled": other["image"]}

    def loss(self, network: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        core = network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network
        teacher = self._follow(core)
        supervised = self.supervised.loss(network, batch["labelled"])
        image = batch["unlabelled"].to(self.supervised.device, non_blocking=True)
        classes = self.supervised.num_classes
        with torch.no_grad():
            teacher_input = image if self.options.method == "fixmatch" else _noisy(image)
            teacher_probabilities = torch.softmax(_full_resolution(teacher(teacher_input))[:, :classes].float(), 1)
        student_input = _strong(image) if self.options.method == "fixmatch" else _noisy(image)
        student_logits = _full_resolution(network(student_input))[:, :classes].float()
        if self.options.method == "fixmatch":
            confidence, pseudo = teacher_probabilities.max(1)
            kept = (confidence >= self.options.threshold).float()
            per_voxel = nn.functional.cross_entropy(student_logits, pseudo, reduction="none")
            consistency = (per_voxel * kept).mean()
        else:
            consistency = ((torch.softmax(student_logits, 1) - teacher_probabilities) ** 2).mean()
        weight = self.options.consistency_weight * rampup_factor(self.fraction, self.options.rampup)
        self.last_terms = {"supervised": float(supervised.detach()), "consistency": float(consistency.detach()),
                           "weight": weight}
        return supervised + weight * consistency

    def validate(self, network: nn.Module) -> dict[str, Any]:
        figures = self.supervised.validate(network)
        if self.last_terms:
            figures["consistency"] = round(self.last_terms["consistency"], 6)
        return figures

    def _follow(self, network: nn.Module) -> nn.Module:
        """The teacher, moved towards the network's current weights (made from it at the first step)."""
        if self.teacher is None:
            self.teacher = copy.deepcopy(network).eval()
            for parameter in self.teacher.parameters():
                parameter.requires_grad_(False)
        else:
            decay = min(1.0 - 1.0 / (self.steps + 1), self.options.ema)
            with torch.no_grad():
                for mine, theirs in zip(self.teacher.parameters(), network.parameters()):
                    mine.mul_(decay).add_(theirs.detach(), alpha=1.0 - decay)
                for mine, theirs in zip(self.teacher.buffers(), network.buffers()):
                    mine.copy_(theirs)
        self.steps += 1
        if hasattr(self.teacher, "deep_supervision"):
            self.teacher.deep_supervision = False
        return self.teacher


def _full_resolution(outputs: Any) -> torch.Tensor:
    """A deep-supervised network's finest output, else the output."""
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


def _noisy(image: torch.Tensor) -> torch.Tensor:
    return image + (torch.randn_like(image) * NOISE_STD).clamp(-NOISE_CLIP, NOISE_CLIP)


def _strong(image: torch.Tensor) -> torch.Tensor:
    """Noise plus a per-sample brightness shift and contrast scale (about the patch mean)."""
    shape = (image.shape[0], image.shape[1]) + (1,) * (image.ndim - 2)
    mean = image.mean(dim=tuple(range(2, image.ndim)), keepdim=True)
    contrast = torch.empty(shape, device=image.device).uniform_(0.75, 1.25)
    brightness = torch.empty(shape, device=image.device).uniform_(-0.2, 0.2)
    return _noisy((image - mean) * contrast + mean + brightness)
