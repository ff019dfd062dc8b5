"""Explain one image with a trained model folder: attribution maps (``medseg.trust.explain``) for one label's
region, saved as heat-map overlay PNGs (2D, or a row of slices of a volume) and the raw map as ``.npz``.

The network sees the image as in training (cropped to content, normalised, resampled to the plan's spacing, then
zero-padded to a multiple of its downsampling), all at once; maps and overlays are on that grid. The region is
the ``--region`` mask brought to the same grid, else where the network predicts the label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from medseg.errors import MedsegError
from medseg.trust.explain import METHODS, attribute, heat_overlay

SLICES = 4  # a volume's overlay shows this many slices side by side


@dataclass
class Explanation:
    """What ``explain_image`` wrote: the overlay PNG and the map ``.npz`` (``attribution`` ``(*S)``, ``region`` on
    the network's grid, ``slices`` shown; a 2d network's volume is attributed on those slices only), the region's
    size in voxels and the slices shown."""

    png: Path
    npz: Path
    region_voxels: int
    slices: list[int] = field(default_factory=list)


def _pad_to(array: np.ndarray, divisor: Sequence[int]) -> np.ndarray:
    """``(C, *S)`` -> zero-padded at the end of each axis to a multiple of ``divisor``."""
    pad = [(0, 0)] + [(0, (-s) % d) for s, d in zip(array.shape[1:], divisor)]
    return np.pad(array, pad)


def _network_and_config(model: Path):
    from medseg.config.model_folder import available_folds, read_segmentation_model
    from medseg.nets.from_folder import load_network

    spec, plan, _ = read_segmentation_model(model)
    folds = available_folds(model)
    if not folds:
        raise MedsegError("no fold has weights", path=model, fix="train at least one fold first")
    return load_network(model, folds[0], spec=spec), plan.configurations[spec.configuration], spec


def case_stem(path: str | Path) -> str:
    """``case_0000.nii.gz`` -> ``case`` (the channel index dropped), ``case.png`` -> ``case``."""
    from medseg.io import strip_suffix

    stem = strip_suffix(Path(path))
    return stem[:-5] if len(stem) > 5 and stem[-5] == "_" and stem[-4:].isdigit() else stem


def output_names(stem: str, method: str, label: int) -> list[str]:
    name = f"{stem}_{method}_label{label}"
    return [f"{name}.png", f"{name}.npz"]


def explain_image(model: str | Path, images: Sequence[str | Path], label: int, method: str, output: str | Path, *,
                  region: str | Path | None = None, samples: int = 16, seed: int = 0) -> Explanation:
    """Attribute the label ``label``'s summed logits in ``images`` (one file per channel) with ``method`` and write
    ``OUTPUT/<case>_<method>_label<K>.png`` and ``.npz``."""
    from medseg.atomic import atomic_write
    from medseg.data import read_channels
    from medseg.io import Image, read_image, write_image
    from medseg.preprocess.pipeline import preprocess_arrays

    if method not in METHODS:
        raise MedsegError(f"--method {method!r} is not one of {', '.join(METHODS)}", fix="use --method gradcam")
    model, output = Path(model), Path(output)
    network, config, spec = _network_and_config(model)
    if label not in spec.label_values or label == 0:
        raise MedsegError(f"label {label} is not a foreground label of the model ({spec.label_values})",
                          path=model, fix=f"use --class with one of {spec.label_values[1:]}")
    image = read_channels([Path(p) for p in images])
    if image.num_channels != spec.network.in_channels:
        raise MedsegError(f"the image has {image.num_channels} channel(s), the model expects "
                          f"{spec.network.in_channels}", path=images[0],
                          fix="pass one file per channel, in the training order")
    if image.ndim not in (spec.network.spatial_dims, 3):
        raise MedsegError(f"a {image.ndim}D image for a {spec.network.spatial_dims}D model", path=images[0],
                          fix="explain images of the dimension the model was trained on")
    mask = None
    if region is not None:
        mask_image = read_image(region)
        if tuple(mask_image.spatial_shape) != tuple(image.spatial_shape):
            raise MedsegError(f"the region mask has shape {tuple(mask_image.spatial_shape)}, the image "
                              f"{tuple(image.spatial_shape)}", path=region, fix="pass a mask on the image's grid")
        mask = (np.asarray(mask_image.array) > 0).astype(np.uint8)
        if not mask.any():
            raise MedsegError("the region mask is empty", path=region, fix="pass a mask with foreground voxels")
    prepared = preprocess_arrays(np.asarray(image.array, np.float32), mask, list(image.spacing), config)
    divisor = network.divisor() if hasattr(network, "divisor") else (1,) * spec.network.spatial_dims
    per_slice = prepared.data.ndim - 1 > spec.network.spatial_dims  # a 2d network on a volume
    pad = (1, *divisor) if per_slice else divisor
    data = _pad_to(prepared.data, pad)
    channel = spec.label_values.index(label)
    if prepared.seg is not None:
        region_array = _pad_to(prepared.seg, pad)[0] > 0
    else:
        region_array = _predicted_region(network, data, channel, per_slice)
    if not region_array.any():
        raise MedsegError(f"the model predicts no voxel of label {label} in this image", path=images[0],
                          fix="pass the region to explain with --region MASK")
    slices = _slices_through(region_array) if region_array.ndim == 3 else []

    def explain(x: np.ndarray, where: np.ndarray) -> np.ndarray:
        return attribute(network, torch.from_numpy(np.ascontiguousarray(x))[None], channel, method=method,
                         region=torch.from_numpy(where), samples=samples, seed=seed).numpy()

    if per_slice:  # only the slices shown are attributed, each as the 2D image the network sees
        heat = np.zeros(region_array.shape, np.float32)
        for i in slices:
            heat[i] = explain(data[:, i], region_array[i]) if region_array[i].any() else 0.0
    else:
        heat = explain(data, region_array)
    rgb = _overlay(data.mean(axis=0), heat, region_array, slices)
    png_name, npz_name = output_names(case_stem(images[0]), method, label)
    output.mkdir(parents=True, exist_ok=True)
    png = write_image(Image.from_array(np.moveaxis(rgb, -1, 0), channel_axis=True), output / png_name)

    def write_npz(temporary: Path) -> None:
        with open(temporary, "wb") as stream:
            np.savez_compressed(stream, attribution=heat.astype(np.float32), region=region_array,
                                slices=np.array(slices, dtype=np.int64))

    npz = atomic_write(output / npz_name, write_npz)
    return Explanation(png, npz, int(region_array.sum()), slices)


def _predicted_region(network, data: np.ndarray, channel: int, per_slice: bool) -> np.ndarray:
    """Where ``network`` predicts output ``channel`` in ``data`` ``(C, *S)`` (slice by slice for a 2d network)."""
    with torch.no_grad():
        if not per_slice:
            return (network(torch.from_numpy(data)[None]).argmax(1)[0] == channel).numpy()
        planes = [(network(torch.from_numpy(np.ascontiguousarray(data[:, i]))[None]).argmax(1)[0] == channel).numpy()
                  for i in range(data.shape[1])]
    return np.stack(planes)


def _slices_through(region: np.ndarray) -> list[int]:
    """Up to ``SLICES`` evenly spaced indices along axis 0 between the first and last slice of ``region``."""
    through = np.flatnonzero(region.reshape(region.shape[0], -1).any(axis=1))
    return sorted({int(i) for i in np.linspace(through[0], through[-1], SLICES).round()})


def _overlay(grey: np.ndarray, heat: np.ndarray, region: np.ndarray, slices: Sequence[int], scale: int = 2
             ) -> np.ndarray:
    """2D: one overlay; 3D: the ``slices`` along axis 0 side by side, on one colour scale."""
    if grey.ndim == 2:
        rgb = heat_overlay(grey, heat, region)
    else:
        top = float(np.percentile(np.abs(heat[list(slices)]), 99.5))
        rgb = np.concatenate([heat_overlay(grey[i], heat[i], region[i], top=top) for i in slices], axis=1)
    if max(rgb.shape[:2]) < 256:  # small images enlarged (nearest) so that the overlay is legible
        rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    return rgb
