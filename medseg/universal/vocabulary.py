"""The vocabulary of a universal model (``vocabulary.json`` in its folder): one entry per structure it can
segment, with the names a user may ask for it by.

An entry is a structure with its ``origins``: the training datasets that annotate it and, in each, its
``label_values`` (one value, or several for a region such as BraTS's whole tumour or a parent structure such as
the hippocampus = anterior + posterior; datasets whose classes have the same name share one entry). It has a
``name``, ``synonyms`` (other names, spellings, abbreviations, other languages' common terms), ``parent``
structure, ``modality`` and an optional ``snomed`` code. ``KNOWN_STRUCTURES`` is medseg's own table of names for
the structures of the shared datasets; a label it does not know gets its dataset.json name (underscores as
spaces) and nothing else, and the user may edit ``vocabulary.json`` to add synonyms.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from medseg.config import read_json, write_json_atomic
from medseg.errors import MedsegError
from medseg.universal.text import name_key, normalise

VOCABULARY_JSON = "vocabulary.json"
SCHEMA_VERSION = 1

# label name in dataset.json -> (name, synonyms, parent); "<dataset.json name>/label" keys win over plain label keys
KNOWN_STRUCTURES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "lung": ("lung", ("lungs", "lung field", "lung fields", "pulmonary field", "both lungs", "poumon", "poumons",
                      "lunge", "lungen", "pulmon", "pulmones", "polmone", "polmoni", "pulmao"), "thorax"),
    "polyp": ("polyp", ("polyps", "colon polyp", "colorectal polyp", "colonic polyp", "adenoma", "polype",
                        "polypes", "polipo", "polipos", "polyp of colon"), "colon"),
    "vessel": ("retinal vessel", ("vessel", "vessels", "retinal vessels", "blood vessel", "blood vessels",
                                  "vasculature", "retinal vasculature", "vaisseau", "vaisseaux", "gefaess",
                                  "gefaesse", "vaso", "vasos", "arteries and veins"), "retina"),
    "membrane": ("cell membrane", ("membrane", "membranes", "cell membranes", "cell boundary", "cell boundaries",
                                   "neuronal membrane", "neuron membranes", "membran", "membrana"), "neuropil"),
    "nucleus": ("nucleus", ("nuclei", "cell nucleus", "cell nuclei", "nuclear", "noyau", "noyaux", "zellkern",
                            "zellkerne", "nucleo", "nucleos"), "cell"),
    "necrosis": ("necrosis", ("necrotic core", "necrotic tumour", "necrotic tumor", "necrotic", "ncr",
                              "necrose", "nekrose", "necrosi"), "tumour core"),
    "edema": ("edema", ("oedema", "peritumoral edema", "peritumoural oedema", "peritumoral oedema", "ed",
                        "swelling", "oedeme", "odem", "edeme", "edema peritumoral"), "whole tumour"),
    "non_enhancing": ("non-enhancing tumour", ("non enhancing tumour", "non-enhancing tumor", "nonenhancing tumor",
                                               "non-enhancing", "non enhancing", "net", "netc",
                                               "non-enhancing tumour core"), "tumour core"),
    "enhancing": ("enhancing tumour", ("enhancing tumor", "enhancing", "contrast-enhancing tumour",
                                       "contrast enhancing tumor", "et", "active tumour", "active tumor",
                                       "tumeur rehaussee"), "tumour core"),
    "whole_tumor": ("whole tumour", ("whole tumor", "wt", "complete tumour", "complete tumor", "tumour", "tumor",
                                     "tumours", "tumors", "brain tumour", "brain tumor", "glioma", "lesion",
                                     "tumeur", "tumeurs", "tumeur cerebrale", "tumor cerebral", "hirntumor",
                                     "tumore"), "brain"),
    "tumor_core": ("tumour core", ("tumor core", "tc", "core", "gross tumour core", "coeur de la tumeur",
                                   "noyau tumoral", "nucleo tumoral"), "whole tumour"),
    "enhancing_tumor": ("enhancing tumour", (), "tumour core"),
    "MSD_Task04_Hippocampus/anterior": ("anterior hippocampus", ("hippocampal head", "head of the hippocampus",
                                                      "hippocampus head", "anterior", "hippocampus anterior",
                                                      "pes hippocampi"), "hippocampus"),
    "MSD_Task04_Hippocampus/posterior": ("posterior hippocampus", ("hippocampal body and tail", "hippocampal tail",
                                                        "hippocampal body", "posterior", "hippocampus posterior",
                                                        "tail of the hippocampus"), "hippocampus"),
    "hippocampus": ("hippocampus", ("hippocampi", "hippocampal formation", "hippocampe", "hippocampo",
                                    "hippokampus", "whole hippocampus"), "brain"),
}

# dataset name -> modality; else guessed from the channel names
KNOWN_MODALITIES = {"ISBI2012_EM": "electron microscopy", "DRIVE": "fundus photograph",
                    "CVC-ClinicDB": "colonoscopy", "BraTS2013_mini": "MRI",
                    "MoNuSeg2018_nuclei_crop512": "histology (H&E)",
                    "MSD_Task04_Hippocampus": "MRI", "CXR_lung_fields_MC_SZ": "X-ray"}
CHANNEL_MODALITIES = {"ct": "CT", "mri": "MRI", "t1": "MRI", "t2": "MRI", "flair": "MRI", "t1c": "MRI",
                      "adc": "MRI", "xray": "X-ray", "x-ray": "X-ray", "us": "ultrasound", "pet": "PET",
                      "em": "electron microscopy", "r": "photograph"}


@dataclass
class Origin:
    """Where an entry was annotated: ``label_values`` of dataset ``dataset``."""

    dataset: str
    label_values: list[int]


@dataclass
class VocabularyEntry:
    """One structure: asked for by ``name`` or a synonym, predicted as ``origins[i].label_values`` of dataset
    ``origins[i].dataset`` (several origins when datasets share the structure's name)."""

    name: str
    origins: list[Origin]
    synonyms: list[str] = field(default_factory=list)
    parent: str = ""
    modality: str = ""
    snomed: str = ""

    @property
    def names(self) -> list[str]:
        return [self.name, *self.synonyms]

    @property
    def datasets(self) -> list[str]:
        return [o.dataset for o in self.origins]

    def describe(self) -> str:
        return f"{self.name} ({', '.join(self.datasets)})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VocabularyEntry":
        origins = [Origin(str(o["dataset"]), [int(v) for v in o["label_values"]]) for o in data["origins"]]
        if not origins or not all(o.label_values for o in origins):
            raise ValueError(f"entry {data.get('name')!r} has no origin with label values")
        return cls(str(data["name"]), origins, [str(s) for s in data.get("synonyms", [])],
                   str(data.get("parent", "")), str(data.get("modality", "")), str(data.get("snomed", "")))


@dataclass
class Vocabulary:
    entries: list[VocabularyEntry]

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "entries": [e.to_dict() for e in self.entries]}

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> "Vocabulary":
        try:
            if int(data.get("schema_version", 1)) > SCHEMA_VERSION:
                raise MedsegError(f"vocabulary schema_version {data['schema_version']} is newer than this "
                                  f"medseg's ({SCHEMA_VERSION})", path=path, fix="upgrade medseg")
            entries = [VocabularyEntry.from_dict(e) for e in data["entries"]]
        except (KeyError, TypeError, ValueError) as error:
            raise MedsegError(f"the vocabulary is malformed ({type(error).__name__}: {error})", path=path,
                              fix="each entry needs name, dataset and label_values") from None
        if not entries:
            raise MedsegError("the vocabulary has no entries", path=path, fix="retrain or restore vocabulary.json")
        return cls(entries)

    def write(self, folder: str | Path) -> Path:
        return write_json_atomic(self.to_dict(), Path(folder) / VOCABULARY_JSON)

    @classmethod
    def read(cls, folder: str | Path) -> "Vocabulary":
        path = Path(folder) / VOCABULARY_JSON
        if not path.is_file():
            raise MedsegError("the universal model has no vocabulary", path=path,
                              fix="pass a folder written by medseg train-universal")
        return cls.from_dict(read_json(path), path)


def _modality(dataset: str, channel_names: Sequence[str]) -> str:
    if dataset in KNOWN_MODALITIES:
        return KNOWN_MODALITIES[dataset]
    guesses = {CHANNEL_MODALITIES.get(str(c).strip().lower()) for c in channel_names} - {None}
    return ", ".join(sorted(guesses))


def _known(dataset: str, label: str) -> tuple[str, tuple[str, ...], str]:
    return KNOWN_STRUCTURES.get(f"{dataset}/{label}") or KNOWN_STRUCTURES.get(label) or (
        label.replace("_", " "), (label,) if "_" in label else (), "")


def dataset_entries(dataset: str, labels: dict[str, int], channel_names: Sequence[str],
                    regions: dict[str, Iterable[int]] | None = None) -> list[VocabularyEntry]:
    """Entries for one dataset: one per foreground label, one per region of several labels (a region of one label
    lends its names to that label's entry), and one per parent structure that two or more labels share."""
    modality = _modality(dataset, channel_names)
    entries: dict[tuple[int, ...], VocabularyEntry] = {}
    for label, value in labels.items():
        if int(value) == 0:
            continue
        name, synonyms, parent = _known(dataset, label)
        entries[(int(value),)] = VocabularyEntry(name, [Origin(dataset, [int(value)])], list(synonyms), parent,
                                                 modality)
    for region, values in (regions or {}).items():
        key = tuple(sorted(int(v) for v in values))
        name, synonyms, parent = _known(dataset, region)
        if key in entries:  # e.g. BraTS's enhancing_tumor = label 4: more names for that entry
            entry = entries[key]
            entry.synonyms += [s for s in (name, *synonyms) if s not in entry.names]
        else:
            entries[key] = VocabularyEntry(name, [Origin(dataset, list(key))], list(synonyms), parent, modality)
    parents: dict[str, list[int]] = {}
    for key, entry in list(entries.items()):
        if entry.parent and len(key) == 1:
            parents.setdefault(entry.parent, []).extend(key)
    named = {e.name for e in entries.values()} | {s for e in entries.values() for s in e.synonyms}
    for parent, values in parents.items():
        if len(values) >= 2 and parent not in named and tuple(sorted(values)) not in entries:
            name, synonyms, grandparent = _known(dataset, parent)
            entries[tuple(sorted(values))] = VocabularyEntry(name, [Origin(dataset, sorted(values))],
                                                             list(synonyms), grandparent, modality)
    return list(entries.values())


def merge_vocabularies(per_dataset: Sequence[list[VocabularyEntry]]) -> Vocabulary:
    """One vocabulary from each dataset's entries: entries of the same (normalised) name are one structure with
    several origins; a synonym that two different structures claim is dropped from both (a prompt must never
    pick one of them silently: it then goes to fuzzy and embedding matching, which report an ambiguity)."""
    merged: dict[str, VocabularyEntry] = {}
    for entries in per_dataset:
        for entry in entries:
            key = name_key(entry.name)
            if key in merged:
                known = merged[key]
                known.origins += entry.origins
                known.synonyms += [s for s in entry.synonyms if s not in known.names]
                known.modality = ", ".join(dict.fromkeys(m for m in (known.modality, entry.modality) if m))
            else:
                merged[key] = VocabularyEntry(entry.name, list(entry.origins), list(entry.synonyms), entry.parent,
                                              entry.modality, entry.snomed)
    claims: dict[str, set[str]] = {}
    for key, entry in merged.items():
        for name in entry.names:
            claims.setdefault(normalise(name), set()).add(key)
    for entry in merged.values():
        entry.synonyms = [s for s in entry.synonyms if len(claims[normalise(s)]) == 1]
    return Vocabulary(list(merged.values()))
