"""Read a case once and check it as ``medseg check`` does, so that every command that reads cases refuses the
data that ``check`` rejects (files, channels, grids, label values, NaN/Inf) before it writes anything.

``read_case`` is the one mechanism: ``check_case`` reports its problems, ``validated_case`` raises them as one
``MedsegError``, and fingerprint / preprocess / convert / the interactive readers use the arrays it read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.layout import RASTER_SUFFIXES, SOURCE_FILES, Case, Dataset, nonfinite_voxels
from medseg.errors import MedsegError
from medseg.io import Image, grid_differences, read_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """One problem of a dataset: the file it is in, what is wrong, and how to fix it."""

    path: Path
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} (fix: {self.fix})"


@dataclass
class CaseReading:
    """What ``read_case`` read: ``image`` ``(C, *spatial)`` (all channels, None when a file could not be read),
    ``label`` ``(1, *spatial)`` (None when missing or unreadable), extra masks by folder, and every problem."""

    case: Case
    image: Image | None
    label: Image | None
    extras: dict[str, Image] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def read_case(dataset: Dataset, case: Case, *, tolerance: float = 1e-4) -> CaseReading:
    """Read every file of ``case`` once and collect its problems: missing/extra files, unreadable files, channel
    count, grids (channels, label and extra masks on the first image's grid), label values, NaN/Inf."""
    problems = _file_problems(dataset, case)
    reading = CaseReading(case, None, None, problems=problems)
    if not case.image_files:
        return reading
    spec = dataset.spec
    images: list[tuple[Path, Image]] = []
    for path in case.image_files:
        image = _read_or_report(path, problems)
        if image is not None:
            images.append((path, image))
            check_finite(path, image, problems)
    expected = dataset.expected_files_per_case
    files_as_declared = dataset.layout == "msd" or case.channel_indices == list(range(expected))
    if len(images) == len(case.image_files) and files_as_declared:
        channels = sum(image.num_channels for _, image in images)
        if channels != len(spec.channel_names):
            problems.append(Problem(case.image_files[0], f"{channels} channel(s) read, dataset.json declares "
                                    f"{len(spec.channel_names)} ({', '.join(spec.channel_names)})",
                                    "re-export the image with the declared channels or fix channel_names"))
    if _rgb_raster(dataset):
        for path, image in images:
            check_8_bit(path, image, problems)
    reference = images[0] if images else None
    on_grid = True
    if reference is not None:
        for path, image in images[1:]:
            on_grid &= check_grid(reference, path, image, tolerance, problems)
    if len(images) == len(case.image_files) and on_grid:
        first = images[0][1]
        reading.image = first if len(images) == 1 else first.with_array(
            np.concatenate([image.array for _, image in images], axis=0))
        reading.image.metadata[SOURCE_FILES] = [str(path) for path in case.image_files]
    if case.label_file is not None:
        label = _read_or_report(case.label_file, problems)
        if label is not None:
            if reference is not None:
                check_grid(reference, case.label_file, label, tolerance, problems)
            check_label_values(case.label_file, label, spec.label_values, problems)
            reading.label = label
    _read_raters(dataset, case, reference, tolerance, reading)
    for name, path in case.extra_files.items():
        extra = _read_or_report(path, problems)
        if extra is not None:
            if reference is not None:
                check_grid(reference, path, extra, tolerance, problems)
            if name == INSTANCES_FOLDER:
                check_instances(path, extra, reading.label, problems)
            reading.extras[name] = extra
    return reading


RATERS = "raters"  # CaseReading.extras key: the raters' label maps, one channel each ``(K, *spatial)``


def _read_raters(dataset: Dataset, case: Case, reference: tuple[Path, Image] | None, tolerance: float,
                 reading: CaseReading) -> None:
    """Read the case's ``labelsTr/<case>_r<K>`` files: each one label map on the image's grid with the declared
    label values; when all are good, ``reading.extras[RATERS]`` stacks them in ``dataset.raters`` order."""
    maps = []
    for rater in sorted(case.rater_files):
        path = case.rater_files[rater]
        label = _read_or_report(path, reading.problems)
        if label is None:
            continue
        before = len(reading.problems)
        if label.num_channels != 1:
            reading.problems.append(Problem(path, f"a rater's label map with {label.num_channels} channels",
                                            "write one channel of label values per rater file"))
        if reference is not None:
            check_grid(reference, path, label, tolerance, reading.problems)
        check_label_values(path, label, dataset.spec.label_values, reading.problems)
        if len(reading.problems) == before:
            maps.append(label)
    if maps and len(maps) == dataset.num_raters:
        reading.extras[RATERS] = maps[0].with_array(np.concatenate([m.array for m in maps]))


INSTANCES_FOLDER = "instancesTr"  # instance maps of the labelled objects: 0 background, 1, 2, ... one per object


def check_instances(path: Path, instances: Image, label: Image | None, problems: list[Problem]) -> None:
    """An instance map: one channel of non-negative integers whose objects cover the label's foreground."""
    if instances.num_channels != 1:
        problems.append(Problem(path, f"instance map with {instances.num_channels} channels",
                                "write one channel: 0 background, 1, 2, ... one value per object"))
        return
    array = instances.array[0]
    whole = np.issubdtype(array.dtype, np.integer) or bool(np.all(array == np.round(array)))
    if not whole or array.min() < 0:
        problems.append(Problem(path, f"instance map of {array.dtype} values from {array.min()}, not ids >= 0",
                                "write integer ids: 0 background, 1, 2, ... one value per object"))
        return
    if label is not None and label.array.shape == instances.array.shape:
        differ = int(np.count_nonzero((array > 0) != (label.array[0] > 0)))
        if differ:
            problems.append(Problem(path, f"instance map and label disagree on the foreground at {differ} "
                                    "voxel(s)", "make every labelled voxel part of one object, and only those"))


def validated_case(dataset: Dataset, case: Case, *, tolerance: float = 1e-4) -> tuple[Image, Image, dict[str, Image]]:
    """``(image (C, *spatial), label (1, *spatial), extras)`` of a case that passes every check of ``read_case``;
    otherwise a ``MedsegError`` naming the first problem's file and fix (and how many more there are)."""
    reading = read_case(dataset, case, tolerance=tolerance)
    if reading.problems:
        raise problems_error(reading.problems, dataset.root)
    assert reading.image is not None and reading.label is not None
    return reading.image, reading.label, reading.extras


def problems_error(problems: list[Problem], dataset_root: Path) -> MedsegError:
    """One ``MedsegError`` (one line) for ``problems``: the first in full, the others counted."""
    first = problems[0]
    message = first.message
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problem(s))"
    return MedsegError(message, path=first.path,
                       fix=f"{first.fix}; `medseg check {dataset_root}` lists every problem")


def dataset_problems(dataset: Dataset) -> list[Problem]:
    """The problems of the dataset as a whole (not of one case): files that match no case name, and a
    ``numTraining`` that differs from the cases found."""
    ending = dataset.spec.file_ending
    problems = [] if dataset.cases else [Problem(dataset.root / "imagesTr", "the dataset has no training cases",
                                                 "put the training images in imagesTr/ and their labels in labelsTr/")]
    problems += [Problem(p, "file matches no case name pattern",
                        f"name images <case>_<CCCC>{ending} and labels <case>{ending}, or move the file out")
                for p in dataset.stray_files]
    if dataset.spec.num_training and dataset.spec.num_training != len(dataset.cases):
        problems.append(Problem(dataset.root / "dataset.json",
                                f"numTraining is {dataset.spec.num_training} but {len(dataset.cases)} cases were found",
                                "correct numTraining or add the missing cases"))
    return problems


def validate_cases(dataset: Dataset, *, workers: int | None = None, progress: bool | None = None) -> None:
    """Check the dataset as a whole, then read and check every case (in ``workers`` processes); a
    ``MedsegError`` if anything has a problem."""
    from medseg.parallel import map_cases

    problems: list[Problem] = dataset_problems(dataset)
    for reading_problems in map_cases(_case_problems, [(dataset, c) for c in dataset.cases], workers=workers,
                                      description="validating", progress=progress):
        problems.extend(reading_problems)
    if problems:
        raise problems_error(problems, dataset.root)


def _case_problems(item: tuple[Dataset, Case]) -> list[Problem]:
    return read_case(*item).problems


def _file_problems(dataset: Dataset, case: Case) -> list[Problem]:
    """Problems visible from the file names alone: missing channels, channel indices not declared, no label."""
    spec = dataset.spec
    problems: list[Problem] = []
    images_dir = dataset.root / "imagesTr"
    expected = dataset.expected_files_per_case
    if dataset.layout == "nnunet":
        for index in range(expected):
            if index not in case.channel_indices:
                name = spec.channel_names[index] if expected == len(spec.channel_names) else "image"
                problems.append(Problem(images_dir / f"{case.case_id}_{index:04d}{spec.file_ending}",
                                        f"missing channel {index} ({name})", "add the file or remove the case"))
        for index, path in zip(case.channel_indices, case.image_files):
            if index >= expected:
                problems.append(Problem(path, f"channel index {index} but dataset.json declares "
                                        f"{len(spec.channel_names)} channel(s)",
                                        "remove the file or add the channel to channel_names"))
    if case.label_file is None:
        problems.append(Problem(dataset.root / "labelsTr" / f"{case.case_id}{spec.file_ending}",
                                "label file missing (the raters' consensus)" if case.rater_files else
                                "label file missing",
                                f"run `medseg raters consensus {dataset.root}` (the raters' majority vote)"
                                if case.rater_files else "add the label or remove the case's images"))
    for rater in dataset.raters:
        if rater not in case.rater_files:
            problems.append(Problem(dataset.root / "labelsTr" / f"{case.case_id}_r{rater}{spec.file_ending}",
                                    f"rater {rater}'s label map missing (other cases have it)",
                                    f"add labelsTr/{case.case_id}_r{rater}{spec.file_ending}, or remove rater "
                                    f"{rater}'s files from every case"))
    for name in dataset.extra_folders:
        if name not in case.extra_files:
            problems.append(Problem(dataset.root / name / f"{case.case_id}{spec.file_ending}",
                                    f"{name} file missing (the folder has other cases')",
                                    f"add {name}/{case.case_id}{spec.file_ending} or remove the case"))
    return problems


def _read_or_report(path: Path, problems: list[Problem]) -> Image | None:
    try:
        return read_image(path)
    except MedsegError as error:
        message = str(error).removeprefix(f"{path}: ")
        message, _, fix = message.partition(" (fix: ")
        problems.append(Problem(path, message, fix.rstrip(")") or "replace the file"))
        return None


def check_grid(reference: tuple[Path, Image], path: Path, image: Image, tolerance: float,
               problems: list[Problem]) -> bool:
    """Report ``image`` at ``path`` unless it lies on the grid of ``reference`` ``(path, image)``; True if it does."""
    differences = grid_differences(reference[1], image, tolerance)
    if differences:
        problems.append(Problem(path, f"not on the grid of {reference[0].name}: {'; '.join(differences)}",
                                "resample or re-export it onto the image's grid (same shape, spacing, origin, "
                                "direction)"))
    return not differences


def _rgb_raster(dataset: Dataset) -> bool:
    """Images are RGB(A) raster files (one file holds the 3 or 4 channels), whose values the plan scales from
    0..255 to 0..1."""
    spec = dataset.spec
    return spec.file_ending.lower() in RASTER_SUFFIXES and len(spec.channel_names) in (3, 4)


def check_8_bit(path: Path, image: Image, problems: list[Problem]) -> None:
    """An RGB raster with values above 255 (a 16-bit file in an 8-bit set) would be scaled as if 8-bit."""
    if image.array.dtype != np.uint8 and image.array.size and float(image.array.max()) > 255:
        problems.append(Problem(path, f"RGB values up to {float(image.array.max()):g} ({image.array.dtype}): RGB "
                                "images are scaled from 0..255", "save it as 8-bit RGB like the other images"))


def check_finite(path: Path, image: Image, problems: list[Problem]) -> None:
    """Report NaN/Inf voxels, also those a reader turned into 0 (``nonfinite_voxels``)."""
    bad = nonfinite_voxels(image)
    if bad:
        problems.append(Problem(path, f"{bad} NaN/Inf voxel(s)", "replace them (e.g. by 0) before training"))


def check_label_values(path: Path, label: Image, allowed: list[int], problems: list[Problem]) -> None:
    """A label map has one channel of integer values, all declared in dataset.json (NaN read as 0 included)."""
    if label.num_channels != 1:
        problems.append(Problem(path, f"label has {label.num_channels} channels", "store one integer label map"))
        return
    array = label.array
    if nonfinite_voxels(label) or (np.issubdtype(array.dtype, np.floating) and np.any(array != np.round(array))):
        problems.append(Problem(path, "label holds non-integer values (or NaN/Inf)", "store integer class indices"))
        return
    values = np.unique(array).astype(np.int64).tolist()
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        problems.append(Problem(path, f"label value(s) {unknown} not in dataset.json labels {allowed}",
                                "relabel those voxels or add the labels to dataset.json"))


# --- which dataset a plan was made for -------------------------------------------------------------------------

def dataset_record(dataset: Dataset, *, validated: bool) -> dict[str, Any]:
    """What a plan records of its dataset: name, channels, labels, a digest of the case ids, and (``validated``:
    every case was just read and checked) a digest of the case files' names, sizes and modification times, which
    lets preprocessing skip a second validation pass while the files are unchanged."""
    spec = dataset.spec
    record: dict[str, Any] = {
        "name": spec.name,
        "channel_names": list(spec.channel_names),
        "labels": dict(spec.labels),
        "num_cases": len(dataset.cases),
        "cases_digest": _digest(sorted(c.case_id for c in dataset.cases)),
    }
    if validated:
        record["files_digest"] = files_digest(dataset)
    return record


def files_digest(dataset: Dataset) -> str:
    """sha256 over (name, size, mtime) of every case file: changes when a file is replaced or edited."""
    entries = []
    for case in dataset.cases:
        paths = [*case.image_files, *([case.label_file] if case.label_file else []), *case.extra_files.values(),
                 *[case.rater_files[k] for k in sorted(case.rater_files)]]
        for path in paths:
            try:
                stat = path.stat()
            except OSError as error:  # a dangling or looping link: the case cannot be read
                raise MedsegError(f"cannot be read ({error.strerror})", path=path,
                                  fix="replace it by the file itself") from None
            entries.append([str(path.relative_to(dataset.root)) if path.is_relative_to(dataset.root) else str(path),
                            stat.st_size, stat.st_mtime_ns])
    return _digest(entries)


def check_plan_record(record: dict[str, Any] | None, dataset: Dataset, plans_path: Path | None) -> bool:
    """Refuse a plan made for another dataset (``MedsegError`` naming ``plans_path``); True when the plan's record
    shows that these very files were validated when it was made. A plan without a record (written before plans
    recorded their dataset) is accepted with a warning."""
    where = plans_path if plans_path is not None else "the plan"
    if not record:
        log.warning("%s does not record which dataset it was made for (an older plan); using it for %s",
                    where, dataset.root)
        return False
    fix = f"run medseg plan on this dataset ({dataset.root})"
    current = dataset_record(dataset, validated=False)
    for key in ("name", "channel_names", "labels"):
        if key in record and _normal(record[key]) != _normal(current[key]):
            raise MedsegError(f"the plan was made for another dataset: {key} {record[key]!r}, this dataset has "
                              f"{current[key]!r}", path=plans_path, fix=fix)
    if record.get("cases_digest") not in (None, current["cases_digest"]):
        raise MedsegError(f"the plan was made for another set of cases ({record.get('num_cases')} cases, this "
                          f"dataset has {current['num_cases']})", path=plans_path, fix=fix)
    return record.get("files_digest") is not None and record["files_digest"] == files_digest(dataset)


def _normal(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
