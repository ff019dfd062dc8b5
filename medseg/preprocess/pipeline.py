"""Preprocess a dataset for one configuration: crop to content (non-zero, or not a constant background),
normalise, resample, cache (resumable)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from medseg.atomic import remove_stale_temporaries
from medseg.config import Configuration, Plan, write_json_atomic
from medseg.data.layout import Case, Dataset, open_dataset
from medseg.data.validate import check_plan_record, validate_cases, validated_case
from medseg.errors import MedsegError
from medseg.parallel import map_cases
from medseg.planning.fingerprint import content_mask, mask_bbox
from medseg.data import cache
from medseg.preprocess.normalize import Pointwise, channel_transforms, normalize
from medseg.preprocess.previous_stage import PreviousStage, check_previous_stage, previous_stage_channels
from medseg.preprocess.resample import new_shape, resample_image, resample_label

MAX_LOCATIONS_PER_CLASS = 10_000


@dataclass
class PreprocessedCase:
    data: np.ndarray  # (C, *spatial) float32
    seg: np.ndarray | None  # (1, *spatial) int8; None when no label was given (prediction)
    class_locations: dict[int, np.ndarray]
    properties: dict


def class_locations(seg: np.ndarray, rng: np.random.Generator,
                    limit: int = MAX_LOCATIONS_PER_CLASS) -> dict[int, np.ndarray]:
    """Foreground label value -> up to ``limit`` voxel coordinates ``(N, ndim)`` (sorted) in ``seg`` ``(1, *S)``;
    what the patch sampler centres foreground patches on."""
    locations = {}
    for value in np.unique(seg):
        if value <= 0:
            continue
        where = np.argwhere(seg[0] == value)
        if len(where) > limit:
            where = where[np.sort(rng.choice(len(where), limit, replace=False))]
        locations[int(value)] = where.astype(np.int32)
    return locations


def preprocess_arrays(image: np.ndarray, label: np.ndarray | None, spacing: list[float],
                      config: Configuration, *, seed: int = 0, previous: np.ndarray | None = None,
                      previous_labels: Sequence[int] = (), instances: np.ndarray | None = None,
                      raters: np.ndarray | None = None, rater_labels: Sequence[int] = ()) -> PreprocessedCase:
    """``image`` ``(C, *spatial)``, ``label`` ``(1, *spatial)`` or None, ``spacing`` in array order.

    For a 2d configuration of 3D data the volume stays 3D: only the in-plane axes are resampled and the
    training sampler draws slices. ``previous`` ``(1, *spatial)``: a previous stage's label map on the image's
    grid (a cascade configuration), appended to ``data`` as one-hot channels of ``previous_labels``
    (``(C + F, *S)``; see ``previous_stage_channels``). ``instances`` ``(1, *spatial)``: an instance map (an
    instance configuration's training case), resampled nearest and appended as its distance-map target
    (``medseg.transforms.instance_distance``), the last channel of ``data``. ``raters`` ``(K, *spatial)``: the
    raters' label maps (a probabilistic configuration's training case), each resampled as the label and appended
    one-hot over ``rater_labels`` (the foreground values): ``K * len(rater_labels)`` last channels of ``data``.
    """
    if previous is not None:
        check_previous_stage(previous, image.shape[1:])
    bbox, mask, target, shape = _crop_and_target(image, spacing, config)
    crop = (slice(None),) + tuple(slice(a, b) for a, b in bbox)
    image = image[crop]
    label = label[crop] if label is not None else None
    data = normalize(image, config.normalization, mask)
    del mask
    separate_z = bool(config.resampling.get("separate_z", False))
    data = resample_image(data, shape, order=int(config.resampling.get("image_order", 3)), separate_z=separate_z,
                          z_order=int(config.resampling.get("z_order", 0)))
    seg = resample_label(label, shape, separate_z=separate_z).astype(np.int8) if label is not None else None
    if previous is not None:
        data = np.concatenate([data, previous_stage_channels(previous, bbox, shape, previous_labels,
                                                             separate_z=separate_z)])
    if instances is not None:
        from medseg.transforms.instance_distance import distance_target

        objects = instances[crop].astype(np.float32)
        if tuple(objects.shape[1:]) != tuple(shape):
            objects = resample_image(objects, shape, order=0, separate_z=separate_z, z_order=0)
        distance = distance_target(np.rint(objects[0]).astype(np.int64), spacing=tuple(target))
        data = np.concatenate([data, distance[None]])
    if raters is not None:
        channels = []
        for rater in raters[crop]:
            resampled = resample_label(rater[None], shape, separate_z=separate_z)[0]
            channels += [(resampled == value).astype(np.float32) for value in rater_labels]
        data = np.concatenate([data, np.stack(channels)])
    locations = class_locations(seg, np.random.default_rng(seed)) if seg is not None else {}
    return PreprocessedCase(data, seg, locations, _properties(spacing, target, bbox, shape, sorted(locations)))


def _crop_and_target(image: np.ndarray, spacing: list[float], config: Configuration
                     ) -> tuple[list[list[int]], np.ndarray, list[float], tuple[int, ...]]:
    """The content crop of ``image`` ``(C, *spatial)`` (its bounding box ``[[start, stop], ...]`` and the content
    mask inside it), the target spacing and the spatial shape after resampling to it."""
    mask = content_mask(image)  # on the whole image: the crop's corners may lie inside the content
    bbox = mask_bbox(mask)
    mask = mask[tuple(slice(a, b) for a, b in bbox)]
    target = list(config.target_spacing)
    if len(target) < len(spacing):  # 2d configuration of 3D data: keep the slice axis
        target = [spacing[0]] + target
    return bbox, mask, target, new_shape(mask.shape, spacing, target)


def _properties(spacing: list[float], target: list[float], bbox: list[list[int]], shape: Sequence[int],
                classes_present: list[int]) -> dict:
    return {
        "spacing": [float(s) for s in spacing],
        "target_spacing": [float(t) for t in target],
        "crop_bbox": bbox,
        "shape_after_crop": [int(b - a) for a, b in bbox],
        "shape_after_resample": [int(s) for s in shape],
        "classes_present": classes_present,
    }


def voxelwise_prediction_input(image: np.ndarray, spacing: list[float], config: Configuration
                               ) -> tuple[np.ndarray, list[Pointwise], dict] | None:
    """Where preprocessing ``image`` ``(C, *spatial)`` for prediction is voxel-wise (no resampling, no masked
    z-score): the cropped image (a view), each channel's normalisation (``normalize``'s, statistics included) and
    the properties ``preprocess_arrays`` gives; so the network's input can be normalised window by window, equal
    to ``preprocess_arrays(...).data`` without its whole float32 copy. None where it is not voxel-wise."""
    if any(scheme.scheme == "zscore" and scheme.use_mask for scheme in config.normalization):
        return None
    bbox, mask, target, shape = _crop_and_target(image, spacing, config)
    if tuple(shape) != tuple(mask.shape):
        return None
    del mask
    cropped = image[(slice(None),) + tuple(slice(a, b) for a, b in bbox)]
    return cropped, channel_transforms(cropped, config.normalization), _properties(spacing, target, bbox, shape, [])


def preprocess_case(dataset: Dataset, config: Configuration, folder: Path, item: tuple[int, Case],
                    previous_stage: PreviousStage | None = None) -> str:
    """Preprocess one case into ``folder`` unless it is already complete there (for a cascade: from the same
    previous-stage file as now); returns 'done' or 'skipped'."""
    index, case = item
    source = previous_stage.record(case.case_id) if previous_stage is not None else None
    if cache.is_complete(folder, case.case_id) and (
            source is None or cache.read_properties(folder, case.case_id).get("previous_stage") == source):
        return "skipped"
    image, label, extras = validated_case(dataset, case)  # checked again as read: nothing is cached from a bad case
    previous = previous_stage.read(case.case_id) if previous_stage is not None else None
    instances = instance_map(label.array, extras) if config.instances else None
    raters = rater_maps(dataset, case, config, extras) if config.raters else None
    result = preprocess_arrays(image.array, label.array, list(image.spacing), config, seed=index, previous=previous,
                               previous_labels=previous_stage.labels if previous_stage is not None else (),
                               instances=instances, raters=raters,
                               rater_labels=dataset.spec.predicted_label_values[1:])
    result.properties.update(case_id=case.case_id, shape_before_crop=list(image.spatial_shape),
                             origin=list(image.origin), direction=image.direction.tolist())
    if source is not None:
        result.properties["previous_stage"] = source
    seg = result.seg if result.seg is not None else np.zeros((1, *result.data.shape[1:]), dtype=np.int8)
    cache.write_case(folder, case.case_id, result.data, seg, result.class_locations, result.properties)
    return "done"


def instance_map(label: np.ndarray, extras: dict) -> np.ndarray:
    """A training case's objects ``(1, *spatial)``: its ``instancesTr/`` file, else the connected components of
    its labelled foreground (each class's objects apart)."""
    from medseg.data.validate import INSTANCES_FOLDER
    from medseg.metrics import label_instances

    if INSTANCES_FOLDER in extras:
        return np.asarray(extras[INSTANCES_FOLDER].array)
    objects = np.zeros(label.shape, dtype=np.int64)
    for value in np.unique(label[label > 0]):
        components = label_instances(label[0] == value).astype(np.int64)
        objects[0] = np.where(components > 0, components + objects.max(), objects[0])
    return objects


def rater_maps(dataset: Dataset, case: Case, config: Configuration, extras: dict) -> np.ndarray:
    """A probabilistic configuration's training case: its raters' label maps ``(K, *spatial)``, as many as the
    configuration was planned for."""
    from medseg.data.validate import RATERS

    found = extras[RATERS].num_channels if RATERS in extras else 0
    if found != config.raters:
        raise MedsegError(f"case {case.case_id} has {found} raters' label maps, the {config.name} configuration "
                          f"was planned for {config.raters}", path=dataset.root / "labelsTr",
                          fix=f"give every case labelsTr/{case.case_id}_r1 .. _r{config.raters}, or plan again")
    return np.asarray(extras[RATERS].array)


def check_dataset_for_plan(dataset: Dataset, plan: Plan, *, plans_path: Path | None = None,
                           workers: int | None = None, progress: bool | None = None) -> None:
    """Before anything is written: refuse a plan made for another dataset, and check every case as ``medseg
    check`` does unless the plan records that these very files were checked when it was made (its fingerprint read
    and checked every case, and no file changed since)."""
    if not check_plan_record(plan.dataset, dataset, plans_path):
        validate_cases(dataset, workers=workers, progress=progress)


def preprocess_dataset(root: str | Path, plan: Plan, configuration: str, output: str | Path, *,
                       workers: int | None = None, progress: bool | None = None, plans_path: Path | None = None,
                       checked: bool = False, previous_stage: PreviousStage | None = None) -> dict[str, int]:
    """Fill ``output/<configuration>/`` with the cache of every training case; cases already there are skipped,
    so an interrupted run resumes. Returns counts of 'done' and 'skipped' cases.

    The dataset is checked against the plan first (``check_dataset_for_plan``; skipped when ``checked``: the
    caller did it), so a bad case or a plan for another dataset stops the run before anything is written.
    A cascade configuration needs ``previous_stage``: the first stage's prediction of every case."""
    if configuration not in plan.configurations:
        raise MedsegError(f"no configuration {configuration!r} in the plan", path=plans_path,
                          fix=f"use one of {', '.join(plan.configurations)}")
    config = plan.configurations[configuration]
    if config.previous_stage and previous_stage is None:
        raise MedsegError(f"{configuration} reads the {config.previous_stage} stage's predictions of every case",
                          path=plans_path, fix=f"train the {config.previous_stage} folds first and pass that model "
                          "folder (medseg train ... --previous-stage MODEL)")
    dataset = open_dataset(root)
    if not checked:
        check_dataset_for_plan(dataset, plan, plans_path=plans_path, workers=workers, progress=progress)
    folder = Path(output) / configuration
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output, recursive=True)  # a killed run's temporaries (only those whose writer is gone)
    write_json_atomic(plan.to_dict(), Path(output) / "plans.json")
    write_json_atomic(dataset.spec.to_dict(), Path(output) / "dataset_spec.json")
    worker = functools.partial(preprocess_case, dataset, config, folder, previous_stage=previous_stage)
    outcomes = map_cases(worker, list(enumerate(dataset.cases)), workers=workers,
                         description=f"preprocess {configuration}", progress=progress)
    return {"done": outcomes.count("done"), "skipped": outcomes.count("skipped")}
