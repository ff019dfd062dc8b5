"""The adaptation record of a segmentation model folder made by ``medseg adapt``: ``model.json``'s
``extra["adaptation"]``.

An adapted folder of deltas stores in ``fold_all/weights.safetensors`` only what training changed (the trainable
tensors and normalisation statistics) and names its base model here: the base folder (relative to the adapted
one, and absolute), the base fold, and the sha256 of that fold's weights file, which every load checks. A merged
folder (``medseg adapt merge``) holds full weights and keeps the record without a base (``base`` None), for the
structure its network needs (adapters) and as provenance.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medseg.config.model_folder import MODEL_JSON, WEIGHTS, ModelSpec, fold_folder
from medseg.errors import MedsegError

ADAPTATION = "adaptation"  # the ModelSpec.extra key
BASE_FIX = ("restore the base model folder (unchanged) where it was when the model was adapted, or adapt again "
            "from the base you have")


@dataclass
class BaseReference:
    """The base model of a folder of deltas: ``model`` relative to the adapted folder, ``absolute`` path, the
    ``fold`` whose weights were adapted and their file's ``sha256``."""

    model: str
    absolute: str
    fold: str
    sha256: str

    @classmethod
    def to(cls, adapted: str | Path, base: str | Path, fold: str, sha256: str) -> BaseReference:
        base = Path(base).resolve()
        return cls(os.path.relpath(base, Path(adapted).resolve()), str(base), str(fold), sha256)


@dataclass
class AdaptationRecord:
    """What ``medseg adapt`` did: ``method`` (a ``medseg adapt --method``), ``structure`` added to the network
    (``medseg.nets.peft.STRUCTURES`` or None), its ``options`` (``PeftOptions``), whether the head
    (``new_head``: the target's label set differs) and the first convolution (``new_stem``: its channel count
    differs) were replaced, the parameter counts, the training cases (``shots``, ``seed``, ``dataset``) and the
    ``base`` (None in a merged folder)."""

    method: str
    structure: str | None
    options: dict[str, Any]
    new_head: bool
    new_stem: bool
    trainable_params: int
    frozen_params: int
    base: BaseReference | None
    dataset: str = ""
    shots: list[str] = field(default_factory=list)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> AdaptationRecord:
        try:
            base = BaseReference(**data["base"]) if data.get("base") else None
            return cls(str(data["method"]), data.get("structure"), dict(data.get("options") or {}),
                       bool(data["new_head"]), bool(data["new_stem"]), int(data["trainable_params"]),
                       int(data["frozen_params"]), base, str(data.get("dataset", "")),
                       [str(s) for s in data.get("shots", [])], int(data.get("seed", 0)))
        except (KeyError, TypeError, ValueError) as error:
            raise MedsegError(f"the adaptation record is incomplete ({type(error).__name__}: {error})", path=path,
                              fix="pass a folder written by medseg adapt, or adapt again") from None


def adaptation_record(spec: ModelSpec, model: str | Path | None = None) -> AdaptationRecord | None:
    """The record of an adapted folder's ``spec``, or None for a model that was not adapted."""
    raw = spec.extra.get(ADAPTATION)
    if raw is None:
        return None
    return AdaptationRecord.from_dict(raw, Path(model) / MODEL_JSON if model is not None else None)


def base_fold_folder(model: str | Path, record: AdaptationRecord) -> Path:
    """The base model's adapted fold folder, its weights checked against the recorded sha256 (relative path
    first, then the absolute one). A missing or changed base is a MedsegError naming the adapted folder."""
    from medseg.weights_file import sha256_file

    reference = record.base
    if reference is None:
        raise MedsegError("a merged adapted model has no base model", path=model, fix="load it as it is")
    candidates = [Path(model) / reference.model, Path(reference.absolute)]
    found = next((c for c in candidates if (c / MODEL_JSON).is_file()), None)
    if found is None:
        raise MedsegError(f"its base model folder is missing (looked in {', '.join(map(str, candidates))})",
                          path=model, fix=BASE_FIX)
    weights = fold_folder(found, reference.fold) / WEIGHTS
    if not weights.is_file():
        raise MedsegError(f"its base model has no fold {reference.fold} weights ({weights})", path=model,
                          fix=BASE_FIX)
    digest = sha256_file(weights)
    if digest != reference.sha256:
        raise MedsegError(f"its base model's weights changed since the adaptation ({weights}: sha256 "
                          f"{digest[:12]}..., recorded {reference.sha256[:12]}...)", path=model, fix=BASE_FIX)
    return fold_folder(found, reference.fold)
