"""Coded concepts for segments of a DICOM SEG: a label name -> SegmentedPropertyCategory / Type (SNOMED CT); and
the display colour of segment / ROI number ``n``.

The table covers structures of common segmentation datasets (brain tumour regions, hippocampus, lung, liver,
kidney, vessels, polyps, nuclei ...). Names are matched after lower-casing and mapping spaces and dashes to ``_``;
a name not in the table gets the generic "Tissue" concept, its own name staying the segment label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Coded = tuple[str, str, str]  # (coding scheme designator, code value, code meaning)

ANATOMICAL_STRUCTURE: Coded = ("SCT", "91723000", "Anatomical Structure")
MORPHOLOGICALLY_ABNORMAL: Coded = ("SCT", "49755003", "Morphologically Abnormal Structure")
TISSUE: Coded = ("SCT", "85756007", "Tissue")


@dataclass(frozen=True)
class SegmentCode:
    """What a segment is: ``category`` (CID 7150, e.g. anatomical structure) and ``property_type`` (e.g. liver)."""

    category: Coded
    property_type: Coded


def _anatomy(value: str, meaning: str) -> SegmentCode:
    return SegmentCode(ANATOMICAL_STRUCTURE, ("SCT", value, meaning))


def _abnormal(value: str, meaning: str) -> SegmentCode:
    return SegmentCode(MORPHOLOGICALLY_ABNORMAL, ("SCT", value, meaning))


GENERIC = SegmentCode(TISSUE, TISSUE)

# Values and meanings as in pydicom's copy of the DICOM code dictionary (tests check each entry against it).
CODES: dict[str, SegmentCode] = {
    "brain": _anatomy("12738006", "Brain"),
    "hippocampus": _anatomy("5366008", "Hippocampus"),
    "lung": _anatomy("39607008", "Lung"),
    "lungs": _anatomy("39607008", "Lung"),
    "liver": _anatomy("10200004", "Liver"),
    "kidney": _anatomy("64033007", "Kidney"),
    "kidneys": _anatomy("64033007", "Kidney"),
    "spleen": _anatomy("78961009", "Spleen"),
    "pancreas": _anatomy("15776009", "Pancreas"),
    "heart": _anatomy("80891009", "Heart"),
    "prostate": _anatomy("41216001", "Prostate"),
    "retina": _anatomy("5665001", "Retina"),
    "vessel": _anatomy("59820001", "Blood Vessel"),
    "vessels": _anatomy("59820001", "Blood Vessel"),
    "blood_vessel": _anatomy("59820001", "Blood Vessel"),
    "nucleus": _anatomy("84640000", "Nucleus"),
    "nuclei": _anatomy("84640000", "Nucleus"),
    "tumour": _abnormal("108369006", "Neoplasm"),
    "tumor": _abnormal("108369006", "Neoplasm"),
    "whole_tumour": _abnormal("108369006", "Neoplasm"),
    "whole_tumor": _abnormal("108369006", "Neoplasm"),
    "enhancing": _abnormal("108369006", "Neoplasm"),
    "enhancing_tumour": _abnormal("108369006", "Neoplasm"),
    "enhancing_tumor": _abnormal("108369006", "Neoplasm"),
    "non_enhancing": _abnormal("108369006", "Neoplasm"),
    "non_enhancing_tumour": _abnormal("108369006", "Neoplasm"),
    "non_enhancing_tumor": _abnormal("108369006", "Neoplasm"),
    "necrosis": _abnormal("6574001", "Necrosis"),
    "edema": _abnormal("79654002", "Edema"),
    "oedema": _abnormal("79654002", "Edema"),
    "lesion": _abnormal("52988006", "Lesion"),
    "mass": _abnormal("4147007", "Mass"),
    "cyst": _abnormal("367643001", "Cyst"),
    "polyp": _abnormal("68496003", "Polyp of colon"),
}


def normalise_name(name: str) -> str:
    """``"Non-enhancing Tumour"`` -> ``"non_enhancing_tumour"`` (the key the table uses)."""
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def segment_code(name: str, codes: dict[str, SegmentCode] | None = None) -> SegmentCode:
    """The code of label ``name``: from ``codes`` (exact name or normalised) first, then ``CODES``, else
    ``GENERIC`` ("Tissue")."""
    key = normalise_name(name)
    for table in (codes or {}, CODES):
        if name in table:
            return table[name]
        if key in table:
            return table[key]
    return GENERIC


COLOURS = [(255, 0, 0), (0, 200, 0), (0, 90, 255), (255, 200, 0), (0, 220, 220), (230, 0, 230), (255, 128, 0),
           (140, 70, 255)]


def segment_colour(number: int) -> tuple[int, int, int]:
    """The RGB (0-255) display colour of segment or ROI ``number`` (1-based; the palette repeats after 8)."""
    return COLOURS[(number - 1) % len(COLOURS)]
