"""Several raters' label maps: a documented synthetic rater model for datasets with one label map per case, and
the raters' consensus (majority vote) that the rest of the pipeline trains and scores against.

The rater model (what ``medseg raters simulate`` writes): rater ``k`` of ``K`` moves every object's boundary by a
systematic offset ``b_k`` (evenly spaced in ``[-bias, +bias]`` mm: from a tight to a generous rater) plus a smooth
random field ``n_k(x)`` (white noise blurred with a Gaussian of ``smoothness`` mm, scaled to a standard deviation
of ``noise`` mm). A voxel is class ``c`` for the rater where the signed distance to the reference's class-``c``
region (mm; negative inside) is below ``b_k + n_k(x)``; classes are drawn in ascending order, a later one over an
earlier one. The spread it produces is a boundary spread, as between experts outlining the same lesion
(LIDC-IDRI, QUBIQ); it does not model raters who disagree on whether an object exists.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from medseg.errors import MedsegError


@dataclass(frozen=True)
class RaterModel:
    """``bias``: the largest systematic boundary offset (mm, the tightest rater ``-bias``, the most generous
    ``+bias``); ``noise``: the standard deviation of each rater's smooth boundary jitter (mm); ``smoothness``:
    the jitter's correlation length (mm, the Gaussian's sigma)."""

    bias: float = 2.0
    noise: float = 1.5
    smoothness: float = 6.0

    def __post_init__(self) -> None:
        if self.bias < 0 or self.noise < 0 or self.smoothness <= 0:
            raise MedsegError(f"rater model {self} has a negative offset or jitter, or no smoothness",
                              fix="use bias >= 0, noise >= 0 and smoothness > 0 (mm)")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def rater_offsets(num_raters: int, bias: float) -> np.ndarray:
    """The systematic offsets ``(K,)`` mm, evenly spaced from ``-bias`` to ``+bias`` (one rater: 0)."""
    if num_raters < 1:
        raise MedsegError(f"{num_raters} raters", fix="ask for 1 or more raters")
    return np.linspace(-bias, bias, num_raters) if num_raters > 1 else np.zeros(1)


def signed_distance(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Signed distance (mm) to the boundary of ``mask`` ``(*S)`` bool: positive outside, negative inside (each
    voxel's distance to the nearest voxel of the other side); an empty mask is +inf everywhere."""
    if not mask.any():
        return np.full(mask.shape, np.inf, dtype=np.float32)
    if mask.all():
        return np.full(mask.shape, -np.inf, dtype=np.float32)
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing)
    inside = ndimage.distance_transform_edt(mask, sampling=spacing)
    return (outside - inside).astype(np.float32)


def simulate_raters(label: np.ndarray, num_raters: int, *, spacing: Sequence[float] | None = None,
                    model: RaterModel = RaterModel(), seed: int = 0) -> np.ndarray:
    """``num_raters`` label maps ``(K, *S)`` of ``label`` ``(*S)`` integer values under the rater model (module
    docstring); ``spacing`` in mm per axis (default 1). Deterministic for a seed."""
    label = np.asarray(label)
    spacing = [1.0] * label.ndim if spacing is None else [float(s) for s in spacing]
    sigma = [model.smoothness / s for s in spacing]
    rng = np.random.default_rng(seed)
    values = [int(v) for v in np.unique(label) if v > 0]
    distances = {v: signed_distance(label == v, spacing) for v in values}
    raters = np.zeros((num_raters, *label.shape), dtype=label.dtype)
    for k, offset in enumerate(rater_offsets(num_raters, model.bias)):
        jitter = ndimage.gaussian_filter(rng.standard_normal(label.shape), sigma, mode="reflect")
        jitter *= model.noise / max(float(jitter.std()), 1e-12)
        for value in values:
            raters[k][distances[value] < offset + jitter] = value
    return raters


def majority_vote(raters: np.ndarray, label_values: Sequence[int]) -> np.ndarray:
    """The raters' consensus ``(*S)``: each voxel's most frequent value among ``raters`` ``(K, *S)``; a tie goes
    to the lower value (so a foreground class needs a strict majority over background)."""
    votes = np.stack([(raters == v).sum(0) for v in label_values])
    return np.asarray(label_values, dtype=raters.dtype)[np.argmax(votes, axis=0)]


def simulate_rater_dataset(source: str | Path, output: str | Path, *, num_raters: int = 4,
                           model: RaterModel = RaterModel(), seed: int = 0, progress: bool | None = None,
                           log: Callable[[str], None] | None = None) -> Path:
    """A copy of the dataset at ``source`` (nnU-Net layout; images and extra masks as links to the source's
    files) whose cases have ``num_raters`` simulated label maps ``labelsTr/<case>_r<K>`` (K = 1..num_raters, on
    the label's grid) and their consensus as ``labelsTr/<case>``. Every case is checked as ``medseg check`` does
    first; the folder appears only when complete."""
    from medseg.atomic import atomic_folder
    from medseg.config import read_json, write_json_atomic
    from medseg.data.layout import open_dataset
    from medseg.data.subset import link_files
    from medseg.data.validate import validate_cases, validated_case
    from medseg.io import write_image
    from medseg.progress import track

    output = Path(output)
    if output.exists():
        raise MedsegError("the output exists", path=output, fix="choose a new folder or delete it")
    dataset = open_dataset(source).require_cases()
    if dataset.layout != "nnunet":
        raise MedsegError("raters are simulated for a dataset in the nnU-Net v2 layout", path=dataset.root,
                          fix=f"convert it first: medseg convert {dataset.root} OUT")
    if dataset.num_raters:
        raise MedsegError(f"the dataset already has {dataset.num_raters} raters' label maps per case",
                          path=dataset.root / "labelsTr", fix="simulate from a dataset with one label map per case")
    rater_offsets(num_raters, model.bias)  # refuses a count below 1 before anything is read
    validate_cases(dataset, progress=progress)
    ending = dataset.spec.file_ending
    values = dataset.spec.label_values
    with atomic_folder(output) as partial:
        for index, case in enumerate(track(dataset.cases, "simulate raters", enabled=progress)):
            image, label, _ = validated_case(dataset, case)
            link_files(case.image_files, partial / "imagesTr")
            for extra in case.extra_files.values():
                link_files([extra], partial / extra.parent.name)
            spacing = list(label.spacing)
            maps = simulate_raters(label.array[0], num_raters, spacing=spacing, model=model, seed=seed + index)
            for k in range(num_raters):
                write_image(label.with_array(maps[k][None]), partial / "labelsTr" / f"{case.case_id}_r{k + 1}{ending}")
            write_image(label.with_array(majority_vote(maps, values)[None]),
                        partial / "labelsTr" / f"{case.case_id}{ending}")
        record = dict(read_json(dataset.root / "dataset.json"))
        record["raters"] = {"count": num_raters, "simulated": True, "source": str(dataset.root), "seed": int(seed),
                            "model": model.to_dict(), "consensus": "majority vote (medseg raters simulate)"}
        write_json_atomic(record, partial / "dataset.json")
    if log:
        log(f"wrote {len(dataset.cases)} cases with {num_raters} simulated raters each to {output}")
    return output


def write_consensus(root: str | Path, *, overwrite: bool = False, log: Callable[[str], None] | None = None) -> int:
    """Write ``labelsTr/<case>`` as the majority vote of the case's raters' maps for every case of the dataset
    at ``root`` that has none (``overwrite``: for every case). Each case's raters are checked first (grid,
    values, all present); returns the number of files written."""
    from medseg.data.layout import open_dataset
    from medseg.data.validate import RATERS, problems_error, read_case
    from medseg.io import write_image

    dataset = open_dataset(root).require_cases()
    if not dataset.num_raters:
        raise MedsegError("no raters' label maps (labelsTr/<case>_r<K>)", path=dataset.root / "labelsTr",
                          fix="name each rater's map <case>_r1, <case>_r2, ... beside the images' case names")
    written = 0
    ending = dataset.spec.file_ending
    for case in dataset.cases:
        if case.label_file is not None and not overwrite:
            continue
        reading = read_case(dataset, case)
        target = dataset.root / "labelsTr" / f"{case.case_id}{ending}"
        problems = [p for p in reading.problems if p.path != target]  # the consensus missing is why we are here
        if problems or RATERS not in reading.extras:
            raise problems_error(problems or reading.problems, dataset.root)
        raters = reading.extras[RATERS]
        consensus = majority_vote(raters.array, dataset.spec.label_values)
        write_image(raters.with_array(consensus[None]), target)
        written += 1
    if log:
        log(f"wrote the consensus of {written} case(s) in {dataset.root / 'labelsTr'}")
    return written
