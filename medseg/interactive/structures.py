"""The structures an annotation session starts with: label value -> name, from ``1=liver,2=tumour`` or from a
dataset's ``dataset.json`` (nnU-Net v2 or MSD labels; BraTS-style region labels are left out: a region is not one
value to paint)."""

from __future__ import annotations

from pathlib import Path

from medseg.config.json_files import read_json
from medseg.errors import MedsegError

MAX_LABEL = 255


def parse_structures(text: str) -> dict[int, str]:
    """``"1=liver,2=tumour"``, or a path to a ``dataset.json`` (or the dataset folder holding one) -> ``{1:
    "liver", 2: "tumour"}``."""
    path = Path(text)
    if path.is_dir():
        path = path / "dataset.json"
    if path.suffix == ".json" or path.is_file():
        return _from_dataset_json(path)
    structures: dict[int, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        value, _, name = item.partition("=")
        if not value.strip().isdigit() or not name.strip():
            raise MedsegError(f"cannot read the structure {item!r}",
                              fix="write VALUE=NAME pairs separated by commas, e.g. 1=liver,2=tumour, or give a "
                                  "dataset.json")
        structures[_checked(int(value), item)] = name.strip()[:64]
    if not structures:
        raise MedsegError("no structures given", fix="write VALUE=NAME pairs, e.g. 1=liver,2=tumour")
    return dict(sorted(structures.items()))


def _from_dataset_json(path: Path) -> dict[int, str]:
    from medseg.config.dataset_spec import DatasetSpec

    spec = DatasetSpec.from_dataset_json(read_json(path), path)
    structures = {_checked(value, name, path): name[:64] for name, value in spec.foreground_labels.items()}
    if not structures:
        raise MedsegError("the dataset declares no single-valued foreground label", path=path,
                          fix="name the structures as VALUE=NAME pairs instead, e.g. 1=liver,2=tumour")
    return dict(sorted(structures.items()))


def _checked(value: int, item: str, path: Path | None = None) -> int:
    if not 1 <= value <= MAX_LABEL:
        raise MedsegError(f"label {value} of {item!r} is outside 1..{MAX_LABEL}", path=path,
                          fix="use label values from 1 to 255")
    return value
