"""Pairing prediction, reference and ROI files by case id, and choosing the classes or regions to score."""

from __future__ import annotations

from pathlib import Path

from medseg.config import read_json
from medseg.errors import MedsegError


def list_cases(folder: Path, role: str) -> dict[str, Path]:
    """``{case id: file}`` for the image files in ``folder``; the case id is the file name without its suffix."""
    from medseg.io import image_suffix, strip_suffix

    folder = Path(folder)
    if not folder.is_dir():
        raise MedsegError(f"{role} folder does not exist", path=folder, fix="pass a folder of label files")
    cases: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or image_suffix(path) is None:
            continue
        case = strip_suffix(path)
        if case in cases and ".npz" in (image_suffix(path), image_suffix(cases[case])):
            # <case>.npz beside <case>.<label suffix>: the probabilities of medseg predict --save-probabilities
            cases[case] = cases[case] if image_suffix(path) == ".npz" else path
            continue
        if case in cases:
            raise MedsegError(f"two files for case '{case}' ({cases[case].name} and {path.name})", path=path,
                              fix="keep one file per case")
        cases[case] = path
    if not cases:
        raise MedsegError(f"no image files in the {role} folder", path=folder, fix="pass a folder of label files")
    return cases


def pair_cases(pred_dir: Path, ref_dir: Path, roi_dir: Path | None = None) -> list[tuple[str, Path, Path, Path | None]]:
    """``[(case, pred file, ref file, roi file or None)]``; a case missing on either side is a ``MedsegError``."""
    preds, refs = list_cases(pred_dir, "prediction"), list_cases(ref_dir, "reference")
    for case, path in refs.items():
        if case not in preds:
            raise MedsegError(f"reference case '{case}' has no prediction in {pred_dir}", path=path,
                              fix="predict every reference case, or evaluate a reference folder without it")
    for case, path in preds.items():
        if case not in refs:
            raise MedsegError(f"prediction case '{case}' has no reference in {ref_dir}", path=path,
                              fix="remove it or add its reference")
    rois = list_cases(roi_dir, "ROI") if roi_dir is not None else {}
    if roi_dir is not None:
        for case, path in refs.items():
            if case not in rois:
                raise MedsegError(f"case '{case}' has no ROI mask in {roi_dir}", path=path,
                                  fix="add an ROI mask with the same case id")
    return [(case, preds[case], refs[case], rois.get(case)) for case in refs]


def read_dataset_json(path: Path) -> dict:
    return read_json(path)


def find_dataset_json(ref_dir: Path) -> Path | None:
    """``dataset.json`` next to or one folder above the reference folder, if there is one."""
    for candidate in (Path(ref_dir) / "dataset.json", Path(ref_dir).parent / "dataset.json"):
        if candidate.is_file():
            return candidate
    return None


def _ints(text: str, source: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise MedsegError(f"labels must be integers separated by commas, got '{text}' in {source}",
                          fix="write them as e.g. 1,2") from None
    if not values:
        raise MedsegError(f"no label values in '{text}' ({source})", fix="write them as e.g. 1,2")
    return values


def _label_value(value) -> int:
    if isinstance(value, bool) or int(value) != value:
        raise ValueError(value)
    return int(value)


def parse_labels(spec: str) -> dict[str, tuple[int, ...]]:
    """``"1,2,4"`` -> one class per value: ``{"1": (1,), "2": (2,), "4": (4,)}``."""
    return {str(v): (v,) for v in _ints(spec, "--labels")}


def parse_regions(spec: str, ref_dir: Path) -> dict[str, tuple[int, ...]]:
    """Regions from ``"whole_tumor=1,2,3,4;tumor_core=1,3,4"``, from a dataset.json path, or ``"dataset"``
    (the dataset.json next to or above the reference folder), whose ``regions_commonly_scored`` is read."""
    if spec == "dataset" or spec.endswith(".json"):
        path = find_dataset_json(ref_dir) if spec == "dataset" else Path(spec)
        if path is None:
            raise MedsegError("no dataset.json next to or above the reference folder", path=ref_dir,
                              fix="pass --regions 'name=1,2;other=3' or the path of a dataset.json")
        regions = read_dataset_json(path).get("regions_commonly_scored")
        if not isinstance(regions, dict) or not regions:
            raise MedsegError("dataset.json has no 'regions_commonly_scored'", path=path,
                              fix="pass --regions 'name=1,2;other=3'")
        try:
            return {str(name): tuple(_label_value(v) for v in values) for name, values in regions.items()}
        except (TypeError, ValueError):
            raise MedsegError(f"regions_commonly_scored is {regions!r}, not lists of label values", path=path,
                              fix='write it as {"whole_tumor": [1, 2, 3], "core": [1, 3]}') from None
    regions = {}
    for part in (p for p in spec.split(";") if p.strip()):
        name, sep, values = part.partition("=")
        if not sep or not name.strip():
            raise MedsegError(f"cannot read region '{part}'", fix="write regions as 'name=1,2,3;other=1,3'")
        regions[name.strip()] = _ints(values, f"region {name.strip()}")
    return regions


def classes_from_dataset_json(path: Path) -> dict[str, tuple[int, ...]]:
    """One class per non-zero label of a dataset.json ``labels`` map, named by its label name."""
    labels = read_dataset_json(path).get("labels", {})
    classes = {str(name): (int(value),) for name, value in labels.items()
               if isinstance(value, int) and int(value) != 0}
    if not classes:
        raise MedsegError("dataset.json has no non-zero integer labels", path=path, fix="use --labels 1,2,3")
    return classes
