"""The held-out block of a benchmark: training and test views of a dataset as folders of symlinks.

A dataset with labelled test cases (``imagesTs`` + ``labelsTs``) is scored on them; otherwise the last
``test_fraction`` of its case ids in sorted order is held out. A contiguous block, not a random draw: datasets
whose neighbouring cases are near-duplicates (video frames, slices of one volume) would leak through a random
split. The views link to the dataset's files (``medseg.data.subset``); nothing is written into the dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from medseg.data import open_dataset
from medseg.data.layout import Case
from medseg.data.subset import held_out_block, link_cases, link_files
from medseg.errors import MedsegError


@dataclass(frozen=True)
class BenchmarkSplit:
    """``train``: a dataset folder (nnU-Net layout) of the training cases; ``test_images`` / ``test_labels``:
    folders of the held-out cases' image and label files; ``test_extras``: their per-case masks by folder name
    (e.g. ``fovTr``, DRIVE's field of view, a region of interest for scoring)."""

    name: str
    train: Path
    test_images: Path
    test_labels: Path
    train_cases: list[str]
    test_cases: list[str]
    rule: str
    test_extras: dict[str, Path]


def _labelled_test_cases(dataset) -> list[Case]:
    labels = dataset.root / "labelsTs"
    if not dataset.test_cases or not labels.is_dir():
        return []
    ending = dataset.spec.file_ending
    cases = [Case(c.case_id, c.image_files, labels / f"{c.case_id}{ending}") for c in dataset.test_cases]
    return cases if all(c.label_file.is_file() for c in cases) else []


def make_split(dataset_root: str | Path, work: str | Path, *, test_fraction: float = 0.25) -> BenchmarkSplit:
    """The training view and test folders of ``dataset_root`` under ``work`` (made anew each call)."""
    dataset = open_dataset(dataset_root)
    if dataset.layout != "nnunet":
        raise MedsegError("the benchmark reads datasets in the nnU-Net v2 layout", path=dataset.root,
                          fix=f"convert it first: medseg convert {dataset.root} OUT")
    work = Path(work)
    test = _labelled_test_cases(dataset)
    if test:
        train, rule = dataset.cases, "the dataset's labelled test cases (imagesTs + labelsTs)"
    else:
        train_ids, test_ids = held_out_block([c.case_id for c in dataset.cases], test_fraction)
        by_id = {c.case_id: c for c in dataset.cases}
        train, test = [by_id[i] for i in train_ids], [by_id[i] for i in test_ids]
        rule = f"the last {len(test)} of {len(dataset.cases)} case ids in sorted order (test fraction {test_fraction})"
    extras = sorted({extra.parent.name for case in test for extra in case.extra_files.values()})
    split = BenchmarkSplit(dataset.spec.name or dataset.root.name, work / "train", work / "test" / "images",
                           work / "test" / "labels", [c.case_id for c in train], [c.case_id for c in test], rule,
                           {name: work / "test" / name for name in extras})
    link_cases(train, split.train)
    spec = {**dataset.spec.to_nnunet_json(), "numTraining": len(train)}
    (split.train / "dataset.json").write_text(json.dumps(spec, indent=1))
    for case in test:
        link_files(case.image_files, split.test_images)
        link_files([case.label_file], split.test_labels)
        for extra in case.extra_files.values():
            link_files([extra], split.test_extras[extra.parent.name])
    return split
