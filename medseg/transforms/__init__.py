"""Augmentation for training: deterministic batch transforms, random wrappers with explicit generators, config.

``spatial`` and ``intensity`` hold pure functions on ``(B, C, *S)`` tensors; ``random`` samples their
parameters from a ``torch.Generator``; ``pipeline.augment`` runs nnU-Net v2's default chain on a batch.
"""

from medseg.transforms.config import AugmentationConfig
from medseg.transforms.pipeline import SampledBatch, augment
from medseg.transforms.random import SpatialParams, sample_spatial

__all__ = ["AugmentationConfig", "SampledBatch", "SpatialParams", "augment", "sample_spatial"]
