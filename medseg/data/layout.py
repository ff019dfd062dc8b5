"""Open a dataset folder in the nnU-Net v2 raw layout or the Medical Segmentation Decathlon layout.

Both give the same ``Dataset``: a ``DatasetSpec`` plus one ``Case`` per training case, whose channels are read
into one channel-first ``Image`` whatever the files hold (one file per channel, an RGB PNG, a 4D NIfTI).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.config import DatasetSpec, read_json
from medseg.errors import MedsegError
from medseg.io import Image, grid_differences, image_suffix, read_image
from medseg.io.sitk_io import DETACHED_HEADERS, detached_data_file

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SOURCE_FILES = "source_files"  # Image.metadata key: the files read_channels read the image from


@dataclass
class Case:
    """One case: its image files in channel order, its label file, and extra per-case masks (e.g. ``fovTr``)."""

    case_id: str
    image_files: list[Path]
    label_file: Path | None
    extra_files: dict[str, Path] = field(default_factory=dict)
    channel_indices: list[int] = field(default_factory=list)  # nnU-Net layout: the _CCCC index of each file
    rater_files: dict[int, Path] = field(default_factory=dict)  # rater K's label map, labelsTr/<case>_r<K>


@dataclass
class Dataset:
    root: Path
    spec: DatasetSpec
    layout: str  # "nnunet" or "msd"
    cases: list[Case]
    test_cases: list[Case] = field(default_factory=list)
    stray_files: list[Path] = field(default_factory=list)  # files in imagesTr/labelsTr that match no case
    extra_folders: list[str] = field(default_factory=list)  # per-case folders beside labelsTr (fovTr, instancesTr)
    raters: list[int] = field(default_factory=list)  # the rater numbers K of labelsTr/<case>_r<K> files, any case

    @property
    def num_raters(self) -> int:
        """Raters per case (0: one label map per case). Every case must have them all (``medseg check``)."""
        return len(self.raters)

    @property
    def expected_files_per_case(self) -> int:
        """Image files a case should have: one per channel, or one for an RGB(A) raster / a 4D MSD volume."""
        if self.layout == "msd":
            return 1
        if self.spec.file_ending.lower() in RASTER_SUFFIXES and len(self.spec.channel_names) in (3, 4):
            return 1
        return len(self.spec.channel_names)

    def require_cases(self) -> "Dataset":
        """``self``, or a MedsegError naming ``imagesTr`` when the dataset has no training case."""
        if not self.cases:
            raise MedsegError("the dataset has no training cases", path=self.root / "imagesTr",
                              fix="put the training images in imagesTr/ and their labels in labelsTr/")
        return self

    def case(self, case_id: str) -> Case:
        for case in self.cases:
            if case.case_id == case_id:
                return case
        raise MedsegError(f"no case '{case_id}'", path=self.root, fix="use one of the ids in labelsTr")

    def read_image(self, case: Case) -> Image:
        """All channels of ``case`` as one ``Image`` ``(C, *spatial)``, channels in dataset.json order."""
        return read_channels(case.image_files)

    def read_label(self, case: Case) -> Image:
        if case.label_file is None:
            raise MedsegError(f"case '{case.case_id}' has no label file", path=self.root / "labelsTr",
                              fix=f"add labelsTr/{case.case_id}{self.spec.file_ending}")
        return read_image(case.label_file)


def nonfinite_voxels(image: Image) -> int:
    """NaN/Inf voxels of ``image``: in its float array, plus those its reader replaced (ITK reads NaN as 0, so the
    NIfTI reader counts them in the file and reports them in ``metadata["nonfinite_voxels"]``). A float64 value
    beyond float32's range counts too: the pipeline computes in float32, where it is Inf."""
    bad = int(image.metadata.get("nonfinite_voxels", 0))
    array = image.array
    if np.issubdtype(array.dtype, np.floating):
        bad += int(np.count_nonzero(~np.isfinite(array)))
        if array.dtype.itemsize > 4:
            bad += int(np.count_nonzero(np.abs(array) > np.finfo(np.float32).max))  # NaN compares False
    return bad


def read_channels(files: list[Path]) -> Image:
    """Read image files and stack their channels; every file must be finite (no NaN/Inf) and lie on the first
    file's grid. The files are recorded in ``metadata["source_files"]``."""
    if not files:
        raise MedsegError("a case without image files", fix="add its imagesTr files")
    images = [read_image(f) for f in files]
    for path, image in zip(files, images):
        bad = nonfinite_voxels(image)
        if bad:
            raise MedsegError(f"{bad} NaN/Inf voxel(s)", path=path, fix="replace them (e.g. by 0) first")
    first = images[0]
    for path, image in zip(files[1:], images[1:]):
        problems = grid_differences(first, image)
        if problems:
            raise MedsegError(f"not on the grid of {files[0].name}: {'; '.join(problems)}", path=path,
                              fix="resample all channels of a case onto one grid")
    stacked = first if len(images) == 1 else first.with_array(np.concatenate([i.array for i in images], axis=0))
    stacked.metadata[SOURCE_FILES] = [str(f) for f in files]  # lets later errors (channel count) name the files
    return stacked


def open_dataset(root: str | Path) -> Dataset:
    """Open ``root`` (a folder with dataset.json) in whichever layout it uses."""
    root = Path(root)
    if not root.is_dir():
        raise MedsegError("dataset folder not found", path=root, fix="check the path")
    json_path = root / "dataset.json"
    data = read_json(json_path)
    if not isinstance(data, dict):
        raise MedsegError("dataset.json is not a JSON object", path=json_path, fix="see the nnU-Net v2 format")
    spec = DatasetSpec.from_dataset_json(data, json_path)
    if isinstance(data.get("training"), list) and "channel_names" not in data:
        return _open_msd(root, spec, data)
    return _open_nnunet(root, spec)


def _open_nnunet(root: Path, spec: DatasetSpec) -> Dataset:
    ending = spec.file_ending
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise MedsegError("no imagesTr folder", path=root, fix="put the training images in imagesTr/")
    pattern = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})" + re.escape(ending) + "$")
    channel_files: dict[str, dict[int, Path]] = {}
    stray: list[Path] = []
    for path in sorted(images_dir.iterdir()):
        match = pattern.match(path.name)
        if match is None:
            if not path.name.startswith("."):
                stray.append(path)
            continue
        channel_files.setdefault(match["case"], {})[int(match["channel"])] = path
    label_files: dict[str, Path] = {}
    if labels_dir.is_dir():
        for path in sorted(labels_dir.iterdir()):
            if path.name.endswith(ending):
                label_files[path.name[: -len(ending)]] = path
            elif not path.name.startswith("."):
                stray.append(path)
    rater_files = _rater_files(label_files, set(channel_files))
    extras = _extra_folders(root, ending)
    cases = []
    for case_id in sorted(set(channel_files) | set(label_files)):
        files = channel_files.get(case_id, {})
        cases.append(Case(
            case_id=case_id,
            image_files=[files[c] for c in sorted(files)],
            channel_indices=sorted(files),
            label_file=label_files.get(case_id),
            extra_files={name: folder[case_id] for name, folder in extras.items() if case_id in folder},
            rater_files=rater_files.get(case_id, {}),
        ))
    test_cases = []
    if (root / "imagesTs").is_dir():
        test_files: dict[str, dict[int, Path]] = {}
        for path in sorted((root / "imagesTs").iterdir()):
            match = pattern.match(path.name)
            if match:
                test_files.setdefault(match["case"], {})[int(match["channel"])] = path
        test_cases = [Case(cid, [f[c] for c in sorted(f)], None, channel_indices=sorted(f))
                      for cid, f in sorted(test_files.items())]
    if stray and ending.lower() in DETACHED_HEADERS:  # x.raw of x.mhd belongs to x.mhd
        named = {(p.parent, detached_data_file(p)) for folder in (images_dir, labels_dir) if folder.is_dir()
                 for p in folder.iterdir() if p.name.endswith(ending)}
        stray = [p for p in stray if (p.parent, p.name) not in named]
    raters = sorted({k for files in rater_files.values() for k in files})
    return Dataset(root, spec, "nnunet", cases, test_cases, stray, sorted(extras), raters)


RATER_PATTERN = re.compile(r"^(?P<case>.+)_r(?P<rater>\d+)$")


def _rater_files(label_files: dict[str, Path], image_cases: set[str]) -> dict[str, dict[int, Path]]:
    """Take the several raters' label maps out of ``label_files`` (in place): ``labelsTr/<case>_r<K>`` of a case
    with images, where ``<case>_r<K>`` is not itself a case with images. Case -> {K: path}."""
    raters: dict[str, dict[int, Path]] = {}
    for stem in list(label_files):
        match = RATER_PATTERN.match(stem)
        if match and match["case"] in image_cases and stem not in image_cases:
            raters.setdefault(match["case"], {})[int(match["rater"])] = label_files.pop(stem)
    return raters


def _extra_folders(root: Path, ending: str) -> dict[str, dict[str, Path]]:
    """Per-case masks in other ``*Tr`` folders (DRIVE's ``fovTr``, BraTS' ``brainmaskTr``)."""
    extras = {}
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and folder.name.endswith("Tr") and folder.name not in ("imagesTr", "labelsTr"):
            extras[folder.name] = {p.name[: -len(ending)]: p for p in folder.iterdir() if p.name.endswith(ending)}
    return extras


def _open_msd(root: Path, spec: DatasetSpec, data: dict) -> Dataset:
    cases = []
    fix = 'each entry is {"image": "./imagesTr/X.nii.gz", "label": "./labelsTr/X.nii.gz"}'
    for entry in data["training"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or \
                not isinstance(entry.get("label", ""), (str, type(None))):
            raise MedsegError(f"training entry {entry!r} has no 'image' path (or a 'label' that is not a path)",
                              path=root / "dataset.json", fix=fix)
        image = (root / entry["image"]).resolve()
        label = (root / entry["label"]).resolve() if entry.get("label") else None
        case_id = image.name[: -len(image_suffix(image) or image.suffix)]
        if any(case.case_id == case_id for case in cases):
            raise MedsegError(f"case {case_id!r} is listed twice in 'training'", path=root / "dataset.json",
                              fix="list each case once")
        cases.append(Case(case_id, [image], label, channel_indices=[0]))
    tests = []
    for entry in data.get("test", []):
        name = entry.get("image") if isinstance(entry, dict) else entry
        if not isinstance(name, str):
            raise MedsegError(f"test entry {entry!r} is not an image path", path=root / "dataset.json",
                              fix='list test images as "./imagesTs/X.nii.gz"')
        image = (root / name).resolve()
        tests.append(Case(image.name[: -len(image_suffix(image) or image.suffix)], [image], None, channel_indices=[0]))
    if not spec.file_ending or spec.file_ending == ".nii.gz":
        spec.file_ending = image_suffix(cases[0].image_files[0]) or ".nii.gz" if cases else ".nii.gz"
    return Dataset(root, spec, "msd", cases, tests)
