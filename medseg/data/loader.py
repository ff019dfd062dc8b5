"""PatchLoader: augmented training batches from a preprocessed cache, made in background worker processes.

Batch ``k`` is built from its own random streams, seeded by ``(seed, k)``, so the batches are the same for
any number of workers (and on any device, up to floating-point rounding). Workers are ``torch.utils.data``
processes (fork, shared-memory hand-over); at most ``num_workers * prefetch`` batches are in flight, and
cases are read through memory maps, so memory stays bounded whatever the dataset size.

Example::

    loader = PatchLoader("preprocessed/3d_fullres", patch_size=(128, 128, 128), batch_size=2, num_batches=250)
    for batch in loader:            # {"image": (B, C, Z, Y, X) float32, "label": (B, 1, Z, Y, X) int8, "case_ids"}
        logits = net(batch["image"]); loss = loss_fn(logits, batch["label"].long())
"""

from __future__ import annotations

import functools
import itertools
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from medseg.data.sampler import PatchSampler
from medseg.errors import MedsegError
from medseg.progress import track
from medseg.transforms.config import AugmentationConfig
from medseg.transforms.pipeline import SampledBatch, augment
from medseg.transforms.random import sample_spatial
from medseg.workers import init_loader_worker

Batch = dict[str, Any]


class BatchMaker:
    """Builds batch ``k`` (sampling + reading + optionally augmentation) in whichever process calls it."""

    def __init__(self, sampler: PatchSampler, batch_size: int, config: AugmentationConfig, seed: int):
        self.sampler, self.batch_size, self.config, self.seed = sampler, batch_size, config, seed

    def streams(self, index: int) -> tuple[np.random.Generator, torch.Generator]:
        rng = np.random.default_rng([self.seed, index])
        generator = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        return rng, generator

    def sample(self, index: int) -> tuple[SampledBatch, torch.Generator]:
        """Patch locations, spatial parameters and the patches/regions read for batch ``index``."""
        rng, generator = self.streams(index)
        picks = self.sampler.choose(self.batch_size, rng)
        spatial = sample_spatial(self.config, self.batch_size, self.sampler.patch_size, generator)
        return self.sampler.extract(picks, spatial), generator

    def make(self, index: int, device: torch.device | str = "cpu") -> Batch:
        """The finished batch ``index`` on ``device``."""
        sampled, generator = self.sample(index)
        return finish(sampled, self.config, generator, device)


def finish(sampled: SampledBatch, config: AugmentationConfig, generator: torch.Generator,
           device: torch.device | str) -> Batch:
    out = augment(sampled.to(device), config, generator)
    return {"image": out["image"], "label": out["label"], "case_ids": sampled.case_ids}


class _BatchStream(IterableDataset):
    """Worker side: worker ``w`` of ``W`` makes batches ``w, w + W, ...`` (the DataLoader interleaves them in
    order). With ``augment_in_worker`` False it hands over the sampled regions and the generator state."""

    def __init__(self, maker: BatchMaker, num_batches: int | None, augment_in_worker: bool):
        self.maker, self.num_batches, self.augment_in_worker = maker, num_batches, augment_in_worker

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if info is not None:
            torch.set_num_threads(1)  # one core per worker, as nnU-Net's augmenter does
        stop = self.num_batches
        indices = itertools.count(worker, workers) if stop is None else range(worker, stop, workers)
        for index in indices:
            if self.augment_in_worker:
                yield self.maker.make(index)
            else:
                sampled, generator = self.maker.sample(index)
                yield sampled, generator.get_state()


class PatchLoader:
    """Iterable of augmented batches ``{"image": (B, C, *P) float32, "label": (B, 1, *P) int8, "case_ids"}``.

    ``augmentation``: an :class:`AugmentationConfig` (default: nnU-Net v2's for this patch size;
    ``AugmentationConfig.disabled()`` for plain crops). ``num_workers`` background processes (0: in this
    process). ``device``: None augments in the workers on their CPU; a device (``"cuda"``, or ``"cpu"``)
    makes workers only sample and read, and runs the batched augmentation on that device in this process.
    ``num_batches``: stop after that many (with a progress bar when ``progress`` is not False); None: endless.
    Labels are int8 (cheap to hand over); call ``.long()`` for a loss that needs int64. ``slice_context``: 2.5D
    patches, the neighbouring slices of a 2D patch of 3D data as channels (``PatchSampler``).
    """

    def __init__(self, folder: str | Path, patch_size: Sequence[int], batch_size: int, *,
                 augmentation: AugmentationConfig | None = None, num_workers: int = 2, seed: int = 0,
                 device: torch.device | str | None = None, num_batches: int | None = None,
                 foreground_fraction: float = 1 / 3, case_ids: Sequence[str] | None = None,
                 prefetch: int = 2, progress: bool | None = None, slice_context: int = 0):
        if batch_size < 1 or num_workers < 0 or prefetch < 1:
            raise MedsegError(f"batch_size={batch_size}, num_workers={num_workers}, prefetch={prefetch} invalid",
                              fix="use batch_size >= 1, num_workers >= 0, prefetch >= 1")
        sampler = PatchSampler(folder, patch_size, case_ids=case_ids, foreground_fraction=foreground_fraction,
                               slice_context=slice_context)
        config = augmentation if augmentation is not None else AugmentationConfig.for_patch(patch_size)
        self.maker = BatchMaker(sampler, batch_size, config, seed)
        self.num_workers, self.prefetch, self.progress = num_workers, prefetch, progress
        self.device = None if device is None else torch.device(device)
        self.num_batches = num_batches

    @property
    def sampler(self) -> PatchSampler:
        return self.maker.sampler

    @property
    def config(self) -> AugmentationConfig:
        return self.maker.config

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("an endless PatchLoader (num_batches=None) has no length")
        return self.num_batches

    def __iter__(self) -> Iterator[Batch]:
        stream = _BatchStream(self.maker, self.num_batches, augment_in_worker=self.device is None)
        if self.num_workers == 0:
            items: Any = iter(stream)
        else:
            items = DataLoader(stream, batch_size=None, num_workers=self.num_workers, prefetch_factor=self.prefetch,
                               pin_memory=self.device is not None and self.device.type == "cuda",
                               multiprocessing_context="fork" if _can_fork() else None,
                               worker_init_fn=functools.partial(init_loader_worker, os.getpid()))  # die with us
        if self.num_batches is not None:
            items = track(items, "batches", total=self.num_batches, enabled=self.progress)
        for item in items:
            yield item if self.device is None else self._finish(*item)

    def _finish(self, sampled: SampledBatch, state: torch.Tensor) -> Batch:
        generator = torch.Generator()
        generator.set_state(state)
        return finish(sampled, self.config, generator, self.device)


def _can_fork() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()
