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
            raise MedsegError("dataset.json has neither 'channel_names' nor 'modality'", path=path,
                              fix='add "channel_names": {"0": "CT"} (one entry per input channel)')
        labels_raw = data.get("labels")
        if not isinstance(labels_raw, dict) or not labels_raw:
            raise MedsegError("dataset.json has no 'labels'", path=path,
                              fix='add "labels": {"background": 0, "organ": 1}')
        if all(_is_int_string(k) for k in labels_raw):  # MSD: {"0": "background", "1": "edema"}
            labels: dict[str, int | list[int]] = {str(name): int(value) for value, name in labels_raw.items()}
        else:
            labels = {}
            for name, value in labels_raw.items():
                if isinstance(value, (list, tuple)):
                    labels[name] = [int(v) for v in value]
                elif _is_int_string(str(value)):
                    labels[name] = int(value)
                else:
                    raise MedsegError(f"label '{name}' has value {value!r}, not an integer", path=path,
                                      fix="give each label an integer value")
        try:
            channel_names = [str(channels[k]) for k in sorted(channels, key=int)]
        except ValueError:
            raise MedsegError(f"channel keys {list(channels)} are not 0, 1, ...", path=path,
                              fix='number the channels "0", "1", ...') from None
        training = data.get("training")
        return cls(
            name=str(data.get("name", path.parent.name)),
            channel_names=channel_names,
            labels=labels,
            file_ending=str(data.get("file_ending", ".nii.gz")),
            num_training=int(data.get("numTraining", len(training) if isinstance(training, list) else 0)),
            description=str(data.get("description", "")),
            reference=str(data.get("reference", "")),
            licence=str(data.get("licence", data.get("license", ""))),
            regions={k: [int(x) for x in v] for k, v in data.get("regions_commonly_scored", {}).items()},
        )


def _is_int_string(text: str) -> bool:
    try:
        int(text)
    except (TypeError, ValueError):
        return False
    return True
