"""The preprocessed cache: one case = memory-mappable arrays plus a small JSON of properties.

Layout of a configuration's cache folder (e.g. ``preprocessed/3d_fullres/``)::

    <case>.npy            float32 (C, *spatial)   cropped, resampled, normalised image
    <case>_seg.npy        int8    (1, *spatial)   label map on the same grid (-1 = outside the crop mask, unused)
    <case>_locations.npz  int32   class_<v>: (N, ndim) voxel coordinates sampled per foreground class (N <= 10000)
    <case>.json           properties (original geometry, crop box, shapes); written last: its presence marks the
                          case complete, so an interrupted run resumes by skipping cases that have it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.atomic import atomic_write
from medseg.errors import MedsegError


@dataclass
class CachedCase:
    """A case opened from the cache; ``data`` and ``seg`` are read-only memory maps unless ``mmap=False``."""

    case_id: str
    data: np.ndarray  # (C, *spatial) float32
    seg: np.ndarray  # (1, *spatial) int8
    class_locations: dict[int, np.ndarray]  # label value -> (N, ndim) int32 voxel coordinates
    properties: dict[str, Any]


def case_paths(folder: Path, case_id: str) -> dict[str, Path]:
    return {
        "data": folder / f"{case_id}.npy",
        "seg": folder / f"{case_id}_seg.npy",
        "locations": folder / f"{case_id}_locations.npz",
        "properties": folder / f"{case_id}.json",
    }


def is_complete(folder: Path, case_id: str) -> bool:
    return all(p.is_file() for p in case_paths(folder, case_id).values())


def write_case(folder: Path, case_id: str, data: np.ndarray, seg: np.ndarray,
               class_locations: dict[int, np.ndarray], properties: dict[str, Any]) -> None:
    """Write one case; every file goes to a temporary name first and the properties JSON comes last."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = case_paths(folder, case_id)
    _atomic(paths["data"], lambda h: np.save(h, data.astype(np.float32, copy=False), allow_pickle=False))
    _atomic(paths["seg"], lambda h: np.save(h, seg.astype(np.int8, copy=False), allow_pickle=False))
    _atomic(paths["locations"], lambda h: np.savez(h, **{f"class_{v}": np.asarray(loc, dtype=np.int32)
                                                          for v, loc in class_locations.items()}))
    _atomic(paths["properties"], lambda h: h.write(json.dumps(properties, indent=1).encode()))


def read_case(folder: str | Path, case_id: str, *, mmap: bool = True) -> CachedCase:
    folder = Path(folder)
    paths = case_paths(folder, case_id)
    if not paths["properties"].is_file():
        raise MedsegError(f"case '{case_id}' is not in the cache (or was interrupted)", path=folder,
                          fix="run medseg preprocess again; it resumes where it stopped")
    mode = "r" if mmap else None
    data = np.load(paths["data"], mmap_mode=mode, allow_pickle=False)
    seg = np.load(paths["seg"], mmap_mode=mode, allow_pickle=False)
    with np.load(paths["locations"], allow_pickle=False) as loc:
        locations = {int(k.removeprefix("class_")): loc[k] for k in loc.files}
    properties = json.loads(paths["properties"].read_text())
    return CachedCase(case_id, data, seg, locations, properties)


def read_properties(folder: str | Path, case_id: str) -> dict[str, Any]:
    """The properties JSON of a complete case (``is_complete``)."""
    return json.loads(case_paths(Path(folder), case_id)["properties"].read_text())


def cached_case_ids(folder: str | Path) -> list[str]:
    """Ids of the complete cases in a cache folder, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MedsegError("cache folder not found", path=folder, fix="run medseg preprocess first")
    return sorted(p.stem for p in folder.glob("*.json") if is_complete(folder, p.stem))


def _atomic(path: Path, write) -> None:
    def write_stream(temporary: Path) -> None:
        with open(temporary, "wb") as stream:
            write(stream)

    atomic_write(path, write_stream)
