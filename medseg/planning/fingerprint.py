"""Dataset fingerprint: shapes and spacings before/after the crop to content (non-zero, or not a constant
background), foreground intensity statistics, class frequencies. One case in memory per worker at a time."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.config import CaseFingerprint, Fingerprint, IntensityStats, write_json_atomic
from medseg.data.layout import Case, Dataset, open_dataset
from medseg.data.validate import Problem, dataset_problems, problems_error, read_case
from medseg.metrics.surface import bounding_box
from medseg.parallel import map_cases

DEFAULT_SAMPLES_PER_CASE = 10_000


@dataclass
class _CaseResult:
    record: CaseFingerprint | None  # None when the case has problems
    foreground_samples: list[np.ndarray]  # per channel, at most samples_per_case values
    problems: list[Problem] = field(default_factory=list)


def background_values(image: np.ndarray) -> np.ndarray:
    """Per channel of ``(C, *spatial)``, the value of a constant background: the corners' value where all the
    corners of that channel hold exactly the same value, else 0 (nnU-Net's crop-to-nonzero). A skull-stripped MRI
    that was z-scored before release has a constant non-zero background (BraTS: -3.8); cropping to non-zero would
    keep all of it."""
    corner_indices = [tuple(-bit for bit in bits) for bits in np.ndindex(*(2,) * (image.ndim - 1))]
    corners = np.stack([image[(slice(None),) + index] for index in corner_indices], axis=1)  # (C, 2**ndim)
    constant = np.all(corners == corners[:, :1], axis=1)
    return np.where(constant, corners[:, 0], 0).astype(image.dtype)


def content_mask(image: np.ndarray) -> np.ndarray:
    """``(*spatial)`` bool: voxels where any channel of ``(C, *spatial)`` differs from its background value."""
    background = background_values(image).reshape((-1,) + (1,) * (image.ndim - 1))
    return np.any(image != background, axis=0)


def mask_bbox(mask: np.ndarray) -> list[list[int]]:
    """Bounding box ``[[start, stop], ...]`` of a ``(*spatial)`` mask; an empty mask keeps its full extent."""
    box = bounding_box(mask)
    if box is None:
        return [[0, int(n)] for n in mask.shape]
    return [[s.start, s.stop] for s in box]


def content_bbox(image: np.ndarray) -> list[list[int]]:
    """The crop that preprocessing applies to ``(C, *spatial)``: the bounding box of ``content_mask(image)``
    (outside it every channel holds its background value). An image with no content keeps its full extent."""
    return mask_bbox(content_mask(image))


def fingerprint_case(dataset: Dataset, case: Case, *, samples_per_case: int = DEFAULT_SAMPLES_PER_CASE,
                     seed: int = 0, case_index: int = 0) -> _CaseResult:
    """One case's record and foreground samples; the case is read once and checked as ``medseg check`` does, and
    a case with problems gives only its problems."""
    reading = read_case(dataset, case)
    if reading.problems:
        return _CaseResult(None, [], reading.problems)
    assert reading.image is not None and reading.label is not None
    image, label = reading.image, reading.label.array[0]
    bbox = content_bbox(image.array)
    shape_after = [stop - start for start, stop in bbox]
    values, counts = np.unique(label, return_counts=True)
    foreground = label > 0
    rng = np.random.default_rng([seed, case_index])
    flat_index = np.flatnonzero(foreground)
    if flat_index.size > samples_per_case:
        flat_index = rng.choice(flat_index, size=samples_per_case, replace=False)
    samples = [channel.ravel()[flat_index].astype(np.float64) for channel in image.array]
    record = CaseFingerprint(
        case_id=case.case_id,
        spacing=list(image.spacing),
        shape_before_crop=list(image.spatial_shape),
        shape_after_crop=shape_after,
        crop_bbox=bbox,
        relative_size_after_crop=float(np.prod(shape_after) / np.prod(image.spatial_shape)),
        class_voxels={str(int(v)): int(c) for v, c in zip(values, counts)},
    )
    return _CaseResult(record, samples)


def intensity_stats(values: np.ndarray) -> IntensityStats:
    if values.size == 0:
        nan = float("nan")
        return IntensityStats(nan, nan, nan, nan, nan, nan, nan, 0)
    return IntensityStats(
        mean=float(np.mean(values)), std=float(np.std(values)), min=float(np.min(values)),
        max=float(np.max(values)), median=float(np.median(values)),
        percentile_00_5=float(np.percentile(values, 0.5)), percentile_99_5=float(np.percentile(values, 99.5)),
        num_samples=int(values.size),
    )


def compute_fingerprint(root: str | Path, *, samples_per_case: int = DEFAULT_SAMPLES_PER_CASE, seed: int = 0,
                        workers: int | None = None, progress: bool | None = None) -> Fingerprint:
    """Fingerprint of the dataset at ``root``.

    Intensity statistics pool up to ``samples_per_case`` foreground voxels (label > 0) per case, drawn without
    replacement with a generator seeded by ``(seed, case index)``, so the result does not depend on ``workers``.
    Every case is checked as it is read (``medseg.data.validate.read_case``); any problem is a ``MedsegError``
    naming the file and the fix, raised after all cases were read and before anything is returned.
    """
    dataset = open_dataset(root).require_cases()
    indexed = list(enumerate(dataset.cases))
    worker = functools.partial(_fingerprint_indexed, dataset, samples_per_case=samples_per_case, seed=seed)
    results = map_cases(worker, indexed, workers=workers, description="fingerprint", progress=progress)
    problems = dataset_problems(dataset) + [problem for r in results for problem in r.problems]
    if problems:
        raise problems_error(problems, dataset.root)
    records = [r.record for r in results]
    spacings = np.array([r.spacing for r in records])
    median_spacing = np.median(spacings, axis=0)
    channels = len(dataset.spec.channel_names)
    intensity = {}
    for c in range(channels):
        pooled = np.concatenate([r.foreground_samples[c] for r in results if len(r.foreground_samples) > c])
        intensity[str(c)] = intensity_stats(pooled)
    total_voxels = sum(int(np.prod(r.shape_before_crop)) for r in records)
    class_totals: dict[str, int] = {}
    cases_with: dict[str, int] = {}
    for r in records:
        for value, count in r.class_voxels.items():
            class_totals[value] = class_totals.get(value, 0) + count
            cases_with[value] = cases_with.get(value, 0) + (count > 0)
    order = sorted(class_totals, key=int)
    return Fingerprint(
        dataset_name=dataset.spec.name,
        channel_names=list(dataset.spec.channel_names),
        labels=dict(dataset.spec.labels),
        num_cases=len(records),
        cases=records,
        median_spacing=median_spacing.tolist(),
        spacing_percentile_10=np.percentile(spacings, 10, axis=0).tolist(),
        spacing_percentile_90=np.percentile(spacings, 90, axis=0).tolist(),
        median_shape_after_crop=np.median(np.array([r.shape_after_crop for r in records]), axis=0).tolist(),
        median_relative_size_after_crop=float(np.median([r.relative_size_after_crop for r in records])),
        anisotropy=float(median_spacing.max() / median_spacing.min()),
        intensity=intensity,
        class_voxel_fraction={v: class_totals[v] / total_voxels for v in order},
        cases_with_class={v: cases_with[v] for v in order},
        samples_per_case=samples_per_case,
        seed=seed,
    )


def _fingerprint_indexed(dataset: Dataset, item: tuple[int, Case], **kwargs) -> _CaseResult:
    index, case = item
    return fingerprint_case(dataset, case, case_index=index, **kwargs)


def write_fingerprint(fingerprint: Fingerprint, path: str | Path) -> Path:
    return write_json_atomic(fingerprint.to_dict(), path)
