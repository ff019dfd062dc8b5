"""Views of a dataset: some of its cases as a dataset folder of symlinks (nnU-Net layout), and the held-out block.

A view links to the dataset's files; nothing is written into the dataset. The held-out block is a contiguous block
of the sorted case ids, not a random draw: datasets whose neighbouring cases are near-duplicates (video frames,
slices of one volume) would leak through a random split.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from medseg.data.layout import Case, Dataset
from medseg.errors import MedsegError


def held_out_block(case_ids: Sequence[str], test_fraction: float) -> tuple[list[str], list[str]]:
    """``(train, test)``: the last ``ceil(test_fraction * n)`` ids in sorted order are the test block."""
    if not 0.0 < test_fraction < 1.0:
        raise MedsegError(f"test fraction {test_fraction} is not between 0 and 1 (fix: e.g. --test-fraction 0.25)")
    ids = sorted(case_ids)
    count = math.ceil(test_fraction * len(ids))
    if len(ids) < 2 or count >= len(ids):
        raise MedsegError(f"{len(ids)} case(s) cannot be split into training and test cases "
                          f"(fix: a dataset with more cases, or a smaller --test-fraction)")
    return ids[:-count], ids[-count:]


def link_files(files: Sequence[Path], folder: Path) -> None:
    """A symlink in ``folder`` to each of ``files`` (resolved), replacing a link of the same name."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in files:
        target = folder / path.name
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(Path(path).resolve())


def link_cases(cases: Sequence[Case], folder: Path, *, images: str = "imagesTr", labels: str = "labelsTr") -> None:
    """The cases' image files under ``folder/images``, label files (and raters' ``<case>_r<K>``) under ``folder/labels`` and extra masks under
    ``folder/<their own folder name>`` (e.g. ``fovTr``), as symlinks."""
    for case in cases:
        link_files(case.image_files, folder / images)
        if case.label_file is not None:
            link_files([case.label_file], folder / labels)
        link_files([case.rater_files[k] for k in sorted(case.rater_files)], folder / labels)
        for extra in case.extra_files.values():
            link_files([extra], folder / extra.parent.name)


def subset_dataset(dataset: Dataset, case_ids: Sequence[str], folder: str | Path) -> Path:
    """A dataset folder (nnU-Net layout) at ``folder`` holding ``case_ids`` of ``dataset`` as symlinks, with its
    ``dataset.json`` (``numTraining`` the subset's size); made anew each call."""
    if dataset.layout != "nnunet":
        raise MedsegError("a view of some cases is made of a dataset in the nnU-Net v2 layout", path=dataset.root,
                          fix=f"convert it first: medseg convert {dataset.root} OUT")
    folder = Path(folder)
    cases = [dataset.case(case_id) for case_id in case_ids]
    for sub in folder.glob("*Tr") if folder.is_dir() else []:  # imagesTr, labelsTr and extras (instancesTr)
        if sub.is_dir():
            for link in sub.iterdir():
                if link.is_symlink():
                    link.unlink()
    link_cases(cases, folder)
    spec = {**dataset.spec.to_nnunet_json(), "numTraining": len(cases)}
    (folder / "dataset.json").write_text(json.dumps(spec, indent=1))
    return folder
