"""What a dataset holds (channels, labels, file type), read from either dataset.json dialect."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import MedsegError

SCHEMA_VERSION = 1


@dataclass
class DatasetSpec:
    """A dataset's description, the same for the nnU-Net v2 and the Medical Segmentation Decathlon layouts.

    Attributes:
        channel_names: input channels in order (``["FLAIR", "T1c"]``; RGB images have three).
        labels: label name -> value, or -> list of values for a region (nnU-Net v2 region syntax).
        file_ending: image suffix of the raw files (``".nii.gz"``, ``".png"``).
        regions: named groups of label values that are scored together (BraTS whole tumour = [1, 2, 3, 4]).
    """

    name: str
    channel_names: list[str]
    labels: dict[str, int | list[int]]
    file_ending: str
    num_training: int = 0
    description: str = ""
    reference: str = ""
    licence: str = ""
    regions: dict[str, list[int]] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def label_values(self) -> list[int]:
        """Every integer value a label map may hold (regions flattened, 'ignore' included), sorted."""
        values: set[int] = set()
        for value in self.labels.values():
            values.update(value if isinstance(value, list) else [value])
        return sorted(values)

    @property
    def predicted_label_values(self) -> list[int]:
        """The plain labels a segmentation model predicts, background included and 'ignore' not, sorted:
        output channel ``i`` predicts value ``i`` of this list."""
        return sorted(v for name, v in self.labels.items() if isinstance(v, int) and name != "ignore")

    @property
    def foreground_labels(self) -> dict[str, int]:
        """Plain (non-region) labels other than background and ignore."""
        return {name: value for name, value in self.labels.items()
                if isinstance(value, int) and value != 0 and name != "ignore"}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DatasetSpec":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def to_nnunet_json(self) -> dict[str, Any]:
        """The nnU-Net v2 ``dataset.json`` for this spec."""
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "reference": self.reference,
            "licence": self.licence,
            "channel_names": {str(i): n for i, n in enumerate(self.channel_names)},
            "labels": dict(self.labels),
            "numTraining": self.num_training,
            "file_ending": self.file_ending,
        }
        if self.regions:
            out["regions_commonly_scored"] = dict(self.regions)
        return out

    @classmethod
    def from_dataset_json(cls, data: dict[str, Any], path: Path) -> "DatasetSpec":
        """Parse an nnU-Net v2 (``channel_names``, labels name -> value) or MSD / nnU-Net v1 (``modality``,
        labels value -> name) ``dataset.json``."""
        channels = data.get("channel_names", data.get("modality"))
        if not isinstance(channels, dict) or not channels:
            raise MedsegError("dataset.json has neither 'channel_names' nor 'modality' as an object", path=path,
                              fix='add "channel_names": {"0": "CT"} (one entry per input channel)')
        for key, value in channels.items():
            if not isinstance(value, str) or not value:
                raise MedsegError(f"channel_names entry {key!r} is {value!r}, not a name", path=path,
                                  fix='give each channel a name: "channel_names": {"0": "CT"}')
        labels = _parse_labels(data.get("labels"), path)
        try:
            channel_names = [str(channels[k]) for k in sorted(channels, key=int)]
        except ValueError:
            raise MedsegError(f"channel keys {list(channels)} are not 0, 1, ...", path=path,
                              fix='number the channels "0", "1", ...') from None
        if sorted(int(k) for k in channels) != list(range(len(channels))):
            raise MedsegError(f"channel keys {list(channels)} are not 0, 1, ...", path=path,
                              fix='number the channels "0", "1", ... without gaps')
        file_ending = data.get("file_ending", ".nii.gz")
        if not isinstance(file_ending, str) or not file_ending.startswith(".") or "/" in file_ending:
            raise MedsegError(f"file_ending is {file_ending!r}, not a file suffix", path=path,
                              fix='write it as a string such as ".nii.gz" or ".png"')
        training = data.get("training")
        default_count = len(training) if isinstance(training, list) else 0
        return cls(
            name=_text(data, "name", path, default=path.parent.name),
            channel_names=channel_names,
            labels=labels,
            file_ending=file_ending,
            num_training=_count(data.get("numTraining", default_count), path),
            description=_text(data, "description", path),
            reference=_text(data, "reference", path),
            licence=_text(data, "licence", path, default=_text(data, "license", path)),
            regions=_parse_regions(data.get("regions_commonly_scored", {}), path),
        )


def _parse_labels(labels_raw: Any, path: Path) -> dict[str, int | list[int]]:
    """nnU-Net v2 ``{"name": value or [values]}`` or MSD ``{"value": "name"}`` -> name -> value(s)."""
    if not isinstance(labels_raw, dict) or not labels_raw:
        raise MedsegError("dataset.json has no 'labels' object", path=path,
                          fix='add "labels": {"background": 0, "organ": 1}')
    if all(_is_int_string(k) for k in labels_raw):  # MSD: {"0": "background", "1": "edema"}
        for value, name in labels_raw.items():
            if not isinstance(name, str):
                raise MedsegError(f"label {value!r} has name {name!r}, not a string", path=path,
                                  fix='write labels as {"0": "background", "1": "organ"}')
        return {name: int(value) for value, name in labels_raw.items()}
    labels: dict[str, int | list[int]] = {}
    for name, value in labels_raw.items():
        if isinstance(value, (list, tuple)) and value and all(_is_int(v) for v in value):
            labels[name] = [int(v) for v in value]
        elif _is_int(value) or (isinstance(value, str) and _is_int_string(value)):
            labels[name] = int(value)
        else:
            raise MedsegError(f"label '{name}' has value {value!r}, not an integer", path=path,
                              fix="give each label an integer value (or a list of integers for a region)")
    named: dict[int, str] = {}
    for name, value in labels.items():
        if not isinstance(value, int):
            continue  # a region (a list of values) may overlap other labels
        if value in named:
            raise MedsegError(f"labels '{named[value]}' and '{name}' have the same value {value}", path=path,
                              fix="give each label its own value")
        named[value] = name
    return labels


def _parse_regions(raw: Any, path: Path) -> dict[str, list[int]]:
    if not isinstance(raw, dict) or not all(isinstance(v, list) and all(_is_int(x) for x in v) for v in raw.values()):
        raise MedsegError(f"regions_commonly_scored is {raw!r}, not {{name: [label values]}}", path=path,
                          fix='write it as {"whole_tumor": [1, 2, 3]}')
    return {str(k): [int(x) for x in v] for k, v in raw.items()}


def _count(value: Any, path: Path) -> int:
    """numTraining: a non-negative integer (``3.0`` is accepted as 3)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not _is_int(value) or value < 0:
        raise MedsegError(f"numTraining is {value!r}, not a non-negative integer", path=path,
                          fix="set numTraining to the number of training cases, e.g. \"numTraining\": 20")
    return int(value)


def _text(data: dict[str, Any], key: str, path: Path, default: str = "") -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise MedsegError(f"{key} is {value!r}, not a string", path=path, fix=f'write "{key}" as a string')
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_int_string(text: str) -> bool:
    try:
        int(text)
    except (TypeError, ValueError):
        return False
    return True
