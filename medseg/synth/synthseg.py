"""SynthSeg-style synthetic training images from label maps (Billot et al., 2023): a model trained on them sees a new
contrast, resolution and artefact in every image, so it learns shape, not one scanner's intensities.

Per synthetic case, from one label map ``(*S)``: a random affine (rotation, scaling) and smooth elastic deformation
of the labels (nearest neighbour), then an image drawn from a Gaussian per label (mean and standard deviation drawn
anew for every image and label), a smooth multiplicative bias field, a blur and a lower resolution, Gaussian noise,
and a random gamma on the image rescaled to [0, 1]. Every operation is one of the training augmentations'
(``medseg.transforms``), driven by one seeded ``torch.Generator``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from medseg.errors import MedsegError

MAX_LABEL = 127  # the label resampling works on int8 maps


@dataclass(frozen=True)
class SynthSettings:
    """The ranges each synthetic image's parameters are drawn from (uniformly). Lengths are fractions of the
    image's extent per axis, intensities fractions of [0, 1]."""

    rotation_degrees: float = 15.0
    scaling: tuple[float, float] = (0.85, 1.15)
    elastic_magnitude: float = 0.03  # largest displacement
    elastic_smoothness: float = 0.12  # the displacement field's Gaussian std
    mean: tuple[float, float] = (0.0, 1.0)  # a label's intensity mean
    sd: tuple[float, float] = (0.0, 0.08)  # a label's intensity standard deviation
    bias_magnitude: float = 0.3  # the log bias field's largest absolute value
    blur_voxels: tuple[float, float] = (0.0, 1.0)  # Gaussian std in voxels
    resolution: tuple[float, float] = (0.5, 1.0)  # the lower resolution, as a fraction of the grid per axis
    noise: tuple[float, float] = (0.0, 0.05)
    gamma_log_sd: float = 0.4  # gamma = exp(N(0, this))

    def to_dict(self) -> dict:
        return asdict(self)


def _uniform(low: float, high: float, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


def synthesize(label: np.ndarray, generator: torch.Generator, settings: SynthSettings = SynthSettings()
               ) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic case from a label map ``(*S)`` (2D or 3D, integer values 0..127): image ``(*S)`` float32 in
    [0, 1] and the deformed label map ``(*S)`` uint8, on the same grid."""
    from medseg.transforms.intensity import add_gaussian_noise, adjust_gamma, gaussian_blur, simulate_low_resolution
    from medseg.transforms.labels import resample_labels
    from medseg.transforms.spatial import affine_matrices, elastic_displacement, normalized_sampling_grid

    label = np.asarray(label)
    if label.ndim not in (2, 3):
        raise MedsegError(f"a label map of {label.ndim} dimensions", fix="pass 2D or 3D label maps")
    if label.min() < 0 or label.max() > MAX_LABEL:
        raise MedsegError(f"label values {label.min()}..{label.max()} are outside 0..{MAX_LABEL}",
                          fix="relabel the maps to small non-negative integers")
    shape, ndim = label.shape, label.ndim
    g = generator
    # space: rotation x scaling about the centre, then a smooth elastic displacement
    degrees = settings.rotation_degrees
    angles = torch.deg2rad(_uniform(-degrees, degrees, (1, 1 if ndim == 2 else 3), g))
    scales = _uniform(*settings.scaling, (1, ndim), g)
    extent = torch.tensor(shape, dtype=torch.float64)
    centres = ((extent - 1) / 2).view(1, ndim)
    displacement = None
    if settings.elastic_magnitude > 0:
        noise = torch.randn((1, ndim, *shape), generator=g)
        sigmas = (settings.elastic_smoothness * extent).view(1, ndim)
        magnitudes = (_uniform(0.0, settings.elastic_magnitude, (1, 1), g) * extent).view(1, ndim)
        displacement = elastic_displacement(noise, sigmas, magnitudes)
    grid = normalized_sampling_grid(affine_matrices(angles, scales), centres, shape, shape, displacement)
    labels = resample_labels(torch.from_numpy(label.astype(np.int8)).view(1, 1, *shape), grid, mode="nearest")
    deformed = labels.view(*shape).numpy().astype(np.uint8)
    # intensities: a Gaussian per label value
    values = torch.from_numpy(deformed.astype(np.int64))
    means = _uniform(*settings.mean, (MAX_LABEL + 1,), g).float()
    sds = _uniform(*settings.sd, (MAX_LABEL + 1,), g).float()
    image = means[values] + sds[values] * torch.randn(shape, generator=g)
    image = image.view(1, 1, *shape)
    every = torch.ones((1, 1), dtype=torch.bool)
    # a smooth multiplicative bias field
    if settings.bias_magnitude > 0:
        smoothness = (0.25 * extent.min()).view(1, 1)
        field = elastic_displacement(torch.randn((1, 1, *shape), generator=g), smoothness,
                                     _uniform(0.0, settings.bias_magnitude, (1, 1), g))
        image = image * torch.exp(field.movedim(-1, 1))
    # acquisition: blur, lower resolution, noise
    image = gaussian_blur(image, _uniform(*settings.blur_voxels, (1, 1, ndim), g).float(), every)
    image = simulate_low_resolution(image, _uniform(*settings.resolution, (1, 1, ndim), g), every)
    noise_sd = _uniform(*settings.noise, (1, 1), g).float() * (image.max() - image.min()).clamp_min(1e-6)
    image = add_gaussian_noise(image, noise_sd, torch.randn((1, *shape), generator=g), every)
    low, high = image.min(), image.max()
    image = (image - low) / (high - low).clamp_min(1e-6)
    gamma = torch.exp(torch.randn((1, 1), generator=g, dtype=torch.float64) * settings.gamma_log_sd).float()
    image = adjust_gamma(image, gamma, every, retain_stats=False)
    return image.view(*shape).clamp(0, 1).numpy().astype(np.float32), deformed


def label_sources(source: str | Path) -> tuple[list[Path], dict | None]:
    """The label files of ``source`` (a dataset folder: its ``labelsTr``; or a folder of label files), sorted, and
    the dataset.json beside them (``source`` or its parent) when there is one."""
    import json

    from medseg.io.formats import require_image_suffix

    source = Path(source)
    folder = source / "labelsTr" if (source / "labelsTr").is_dir() else source
    if not folder.is_dir():
        raise MedsegError("not a folder of label maps", path=source,
                          fix="pass a dataset folder (with labelsTr/) or a folder of label files")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix != ".json")
    for path in files:
        require_image_suffix(path)
    if not files:
        raise MedsegError("no label files", path=folder, fix="pass a folder that holds label maps")
    spec = None
    for candidate in (folder / "dataset.json", folder.parent / "dataset.json"):
        if candidate.is_file():
            spec = json.loads(candidate.read_text())
            break
    return files, spec


def synth_dataset(source: str | Path, output: str | Path, *, count: int = 200, seed: int = 0,
                  settings: SynthSettings = SynthSettings(), progress: bool | None = None,
                  log: Callable[[str], None] | None = None, segment: dict[int, int] | None = None,
                  blank: Sequence[int] = ()) -> Path:
    """A dataset (nnU-Net v2 layout, one channel ``synthetic``) of ``count`` synthetic cases from the label maps of
    ``source``, cycled in sorted order; each case on its source map's grid (spacing, origin, direction), written
    as NIfTI. The labels of the source's dataset.json are kept (else ``label_K`` for each value found); the folder
    appears only when complete.

    SynthSeg's generation labels vs segmentation labels: every value of the source maps draws its own intensity;
    ``segment`` maps some of them to what the written label maps hold (``{5: 0}``: a brain label that only
    shapes the image is background in the labels to learn). ``blank``: generation labels whose voxels are 0 in
    the image (e.g. ``[0]`` for skull-stripped data, whose outside is 0)."""
    from medseg.atomic import atomic_folder
    from medseg.config import write_json_atomic
    from medseg.io import read_image, write_image
    from medseg.progress import track

    output = Path(output)
    if output.exists():
        raise MedsegError("the output exists", path=output, fix="choose a new folder or delete it")
    if count < 1:
        raise MedsegError(f"--n {count} is not positive", fix="ask for 1 or more synthetic cases")
    files, spec = label_sources(source)
    maps = []
    for path in files:
        image = read_image(path)
        array = image.array[0]
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise MedsegError("the label map holds non-integer values", path=path, fix="pass label maps, not images")
        maps.append(image)
    generator = torch.Generator().manual_seed(int(seed))
    found: set[int] = set()
    with atomic_folder(output) as partial:
        for index in track(range(count), "synthesize", enabled=progress):
            source_map = maps[index % len(maps)]
            image, label = synthesize(source_map.array[0].astype(np.int64), generator, settings)
            if blank:
                image[np.isin(label, list(blank))] = 0.0
            for old, new in (segment or {}).items():
                label[label == old] = new
            found.update(int(v) for v in np.unique(label))
            case = f"synth_{index:04d}"
            write_image(source_map.with_array(image[None]), partial / "imagesTr" / f"{case}_0000.nii.gz")
            write_image(source_map.with_array(label[None]), partial / "labelsTr" / f"{case}.nii.gz")
        labels = (spec or {}).get("labels") or {("background" if v == 0 else f"label_{v}"): v for v in sorted(found)}
        if segment:  # a generation label that is written as another no longer names a class
            labels = {name: value for name, value in labels.items()
                      if not (isinstance(value, int) and value in segment and segment[value] != value)}
        record = {key: value for key, value in (spec or {}).items()
                  if key in ("labels", "regions_class_order", "regions_commonly_scored", "name", "description",
                             "reference", "licence", "license")}
        record.update({"channel_names": {"0": "synthetic"}, "labels": labels, "numTraining": count,
                       "file_ending": ".nii.gz",
                       "synthetic": {"source": str(Path(source)), "source_maps": len(maps), "seed": int(seed),
                                     "segment": {str(k): int(v) for k, v in (segment or {}).items()},
                                     "blank": [int(v) for v in blank],
                                     "settings": settings.to_dict(), "method": "SynthSeg-style (medseg synth)"}})
        write_json_atomic(record, partial / "dataset.json")
    if log:
        log(f"wrote {count} synthetic cases from {len(maps)} label maps to {output}")
    return output

