"""Validate a raw dataset: every problem becomes one line naming the file and the fix."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.data.layout import Case, Dataset, open_dataset
from medseg.errors import MedsegError
from medseg.io import Image, grid_differences, read_image
from medseg.parallel import map_cases


@dataclass(frozen=True)
class Problem:
    path: Path
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} (fix: {self.fix})"


@dataclass
class CheckReport:
    dataset: Path
    num_cases: int
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return f"{self.dataset}: {self.num_cases} cases checked, no problems"
        return f"{self.dataset}: {self.num_cases} cases checked, {len(self.problems)} problem(s)"


def check_dataset(root: str | Path, *, tolerance: float = 1e-4, workers: int | None = None,
                  progress: bool | None = None) -> CheckReport:
    """Check every case of the dataset at ``root``; the dataset.json itself must parse (else MedsegError)."""
    dataset = open_dataset(root)
    problems = [Problem(p, "file matches no case name pattern",
                        f"name images <case>_<CCCC>{dataset.spec.file_ending} and labels <case>{dataset.spec.file_ending}")
                for p in dataset.stray_files]
    if dataset.spec.num_training and dataset.spec.num_training != len(dataset.cases):
        problems.append(Problem(dataset.root / "dataset.json",
                                f"numTraining is {dataset.spec.num_training} but {len(dataset.cases)} cases were found",
                                "correct numTraining or add the missing cases"))
    check = functools.partial(check_case, dataset, tolerance=tolerance)
    for case_problems in map_cases(check, dataset.cases, workers=workers, description="checking",
                                   progress=progress):
        problems.extend(case_problems)
    return CheckReport(Path(root), len(dataset.cases), problems)


def check_case(dataset: Dataset, case: Case, *, tolerance: float = 1e-4) -> list[Problem]:
    """All problems of one case: missing/extra files, unreadable files, channels, grids, label values, NaN/Inf."""
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
                                "label file missing", "add the label or remove the case's images"))
    if not case.image_files:
        return problems

    images: list[tuple[Path, Image]] = []
    for path in case.image_files:
        image = _read_or_report(path, problems)
        if image is not None:
            images.append((path, image))
            _check_finite(path, image, problems)
    files_as_declared = dataset.layout == "msd" or case.channel_indices == list(range(expected))
    if len(images) == len(case.image_files) and files_as_declared:
        channels = sum(image.num_channels for _, image in images)
        if channels != len(spec.channel_names):
            problems.append(Problem(case.image_files[0], f"{channels} channel(s) read, dataset.json declares "
                                    f"{len(spec.channel_names)} ({', '.join(spec.channel_names)})",
                                    "re-export the image with the declared channels or fix channel_names"))
    reference = images[0] if images else None
    if reference is not None:
        for path, image in images[1:]:
            _check_grid(reference, path, image, tolerance, problems)
    if case.label_file is not None:
        label = _read_or_report(case.label_file, problems)
        if label is not None:
            if reference is not None:
                _check_grid(reference, case.label_file, label, tolerance, problems)
            _check_label_values(case.label_file, label, spec.label_values, problems)
    for path in case.extra_files.values():
        extra = _read_or_report(path, problems)
        if extra is not None and reference is not None:
            _check_grid(reference, path, extra, tolerance, problems)
    return problems


def _read_or_report(path: Path, problems: list[Problem]) -> Image | None:
    try:
        return read_image(path)
    except MedsegError as error:
        message = str(error).removeprefix(f"{path}: ")
        message, _, fix = message.partition(" (fix: ")
        problems.append(Problem(path, message, fix.rstrip(")") or "replace the file"))
        return None


def _check_grid(reference: tuple[Path, Image], path: Path, image: Image, tolerance: float,
                problems: list[Problem]) -> None:
    differences = grid_differences(reference[1], image, tolerance)
    if differences:
        problems.append(Problem(path, f"not on the grid of {reference[0].name}: {'; '.join(differences)}",
                                "resample or re-export it onto the image's grid (same shape, spacing, origin, "
                                "direction)"))


def _check_finite(path: Path, image: Image, problems: list[Problem]) -> None:
    # NIfTI readers (ITK) turn NaN into 0, so the reader counts them in the file and reports it in metadata.
    bad = int(image.metadata.get("nonfinite_voxels", 0))
    if np.issubdtype(image.array.dtype, np.floating):
        bad += int(np.count_nonzero(~np.isfinite(image.array)))
    if bad:
        problems.append(Problem(path, f"{bad} NaN/Inf voxel(s)", "replace them (e.g. by 0) before training"))


def _check_label_values(path: Path, label: Image, allowed: list[int], problems: list[Problem]) -> None:
    if label.num_channels != 1:
        problems.append(Problem(path, f"label has {label.num_channels} channels", "store one integer label map"))
        return
    array = label.array
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            problems.append(Problem(path, "label holds non-integer values", "store integer class indices"))
            return
    values = np.unique(array).astype(np.int64).tolist()
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        problems.append(Problem(path, f"label value(s) {unknown} not in dataset.json labels {allowed}",
                                "relabel those voxels or add the labels to dataset.json"))
