"""NumPy files: ``.npz`` keeps array and geometry; ``.npy`` is a bare single-channel array (unit geometry)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError
from medseg.io.image import Image


def read_npy(path: Path) -> Image:
    """``.npy`` holds a purely spatial array ``(*spatial)``: it becomes one channel with unit spacing."""
    array = np.load(path, allow_pickle=False)
    if array.ndim not in (2, 3):
        raise MedsegError(f".npy array of shape {array.shape} is not a 2D/3D image", path=path,
                          fix="save multi-channel images as .npz with medseg.io.write_image")
    return Image.from_array(array)


def write_npy(image: Image, path: Path) -> None:
    if image.num_channels != 1:
        raise MedsegError(f".npy holds one channel, this image has {image.num_channels}", path=path,
                          fix="write .npz, which keeps channels and geometry")
    with open(path, "wb") as handle:
        np.save(handle, image.array[0], allow_pickle=False)


def read_npz(path: Path) -> Image:
    with np.load(path, allow_pickle=False) as data:
        if "array" not in data:
            if len(data.files) == 1:
                return Image.from_array(data[data.files[0]])
            raise MedsegError(f".npz without an 'array' entry (has {data.files})", path=path,
                              fix="write it with medseg.io.write_image, or keep a single array in it")
        array = data["array"]
        d = array.ndim - 1
        spacing = data["spacing"] if "spacing" in data else np.ones(d)
        origin = data["origin"] if "origin" in data else np.zeros(d)
        direction = data["direction"] if "direction" in data else np.eye(d)
        metadata = json.loads(str(data["metadata"])) if "metadata" in data else {}
    return Image(array, tuple(spacing.tolist()), tuple(origin.tolist()), direction, metadata)


def write_npz(image: Image, path: Path) -> None:
    with open(path, "wb") as handle:
        np.savez_compressed(
            handle,
            array=image.array,
            spacing=np.array(image.spacing),
            origin=np.array(image.origin),
            direction=image.direction,
            metadata=np.array(json.dumps(image.metadata, default=str)),
        )
