"""The comparable form of a structure's name or a prompt: lower case, no accents or punctuation, filler and
modality words dropped, each word singular (``medseg.universal.names`` matches on it; the vocabulary merges the
classes of several datasets on ``name_key``)."""

from __future__ import annotations

import re
import unicodedata

FILLER = {"the", "a", "an", "of", "in", "on", "at", "from", "for", "with", "and", "to", "this", "that", "please",
          "segment", "segmentation", "segmented", "delineate", "outline", "find", "show", "mask", "label", "all",
          "region", "area", "structure", "image", "scan", "slice", "volume", "picture", "le", "la", "les", "de",
          "des", "du", "der", "die", "das", "el", "los", "las", "il", "lo", "me", "my", "some", "any"}
MODALITY_WORDS = {"mri", "mr", "ct", "xray", "x", "ray", "radiograph", "cxr", "chest", "fundus", "fundoscopy",
                  "flair", "t1", "t1c", "t1w", "t2", "t2w", "weighted", "histology", "histopathology", "he", "stain",
                  "stained", "microscopy", "microscope", "electron", "tem", "colonoscopy", "endoscopy",
                  "endoscopic", "frame", "photo", "photograph", "retinal", "retina", "irm", "scanner", "radio"}
KEEP_ENDINGS = ("ss", "us", "is", "as", "os")


def _singular(word: str) -> str:
    if len(word) <= 3 or word.endswith(KEEP_ENDINGS):
        return word
    for plural, single in (("ies", "y"), ("ei", "eus"), ("pi", "pus"), ("aux", "al"), ("ses", "sis"),
                           ("xes", "x"), ("ches", "ch"), ("s", ""), ("x", "")):
        if word.endswith(plural):
            return word[: -len(plural)] + single
    return word


def _plain(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.lower().replace("œ", "oe").replace("æ", "ae").replace("ß", "ss"))
    text = "".join(c for c in text if not unicodedata.combining(c))
    return re.sub(r"[^a-z0-9]+", " ", text).strip()


def name_key(text: str) -> str:
    """The form under which two datasets' class names are one structure: plain and singular, nothing dropped."""
    return " ".join(_singular(w) for w in _plain(text).split())


def normalise(text: str) -> str:
    """The comparable form of a name or prompt (see the module docstring); the plain form when only filler and
    modality words are left."""
    plain = _plain(text)
    kept = [w for w in plain.split() if (len(w) > 1 or w.isdigit()) and w not in FILLER and w not in MODALITY_WORDS]
    return " ".join(_singular(w) for w in (kept or plain.split()))
