"""Images without labels in the trainer's cache layout (self-supervised pretraining, semi-supervised training).

Each image is cropped to its content, normalised and resampled exactly as a labelled case of the same plan
configuration; its cached label map is all zeros and it has no class locations, so the patch sampler draws every
patch of it uniformly at random. ``check_unlabelled`` reads every image once before anything is written, so a bad
file stops the run with its path before the cache or the model folder is touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from medseg.config import Configuration
from medseg.data import cache, read_channels
from medseg.errors import MedsegError
from medseg.preprocess.pipeline import preprocess_arrays
from medseg.progress import track

UnlabelledImage = tuple[str, Sequence[Path]]  # (case id, its channel files in order)


def check_unlabelled(images: Sequence[UnlabelledImage], config: Configuration, *, channels: int,
                     progress: bool | None = None) -> None:
    """Every image readable, finite, its channels on one grid, with ``channels`` channels and a dimension the
    configuration takes (a 2D image for a 3D configuration is refused); an empty list is refused too, and so is a
    configuration whose cases hold more than the image (a cascade's first stage, an instance model's distance
    map, raters' maps), which an image alone cannot give."""
    if config.previous_stage or config.instances or config.raters:
        raise MedsegError(f"unlabelled images for the {config.name} configuration, whose cases hold more than the "
                          "image (a previous stage, a distance map or raters' maps)",
                          fix="use a 2d, 2.5d, 3d_fullres or 3d_lowres configuration")
    if not images:
        raise MedsegError("no unlabelled images", fix="pass a folder of images or a dataset folder")
    names = [case_id for case_id, _ in images]
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise MedsegError(f"two unlabelled images share the case id {repeated[0]!r}", path=images[0][1][0],
                          fix="give every image its own name")
    for case_id, files in track(list(images), "check unlabelled images", enabled=progress):
        image = read_channels(list(files))
        if image.num_channels != channels:
            raise MedsegError(f"{image.num_channels} channel(s); the network takes {channels}", path=files[0],
                              fix="pass images with the training data's channels")
        if len(image.spatial_shape) < len(config.patch_size):
            raise MedsegError(f"a {len(image.spatial_shape)}D image for the {len(config.patch_size)}D "
                              f"{config.name} configuration", path=files[0], fix="use a 2d configuration or 3D images")


def preprocess_unlabelled(images: Sequence[UnlabelledImage], config: Configuration, folder: str | Path, *,
                          progress: bool | None = None) -> list[str]:
    """Cache every image into ``folder`` (``medseg.data.cache`` layout) unless it is already complete there (an
    interrupted run resumes); returns the cached case ids in order."""
    folder = Path(folder)
    for index, (case_id, files) in enumerate(track(list(images), f"preprocess unlabelled {config.name}",
                                                   enabled=progress)):
        if cache.is_complete(folder, case_id):
            continue
        image = read_channels(list(files))
        result = preprocess_arrays(image.array, None, list(image.spacing), config, seed=index)
        result.properties.update(case_id=case_id, shape_before_crop=list(image.spatial_shape),
                                 origin=list(image.origin), direction=image.direction.tolist(), unlabelled=True)
        cache.write_case(folder, case_id, result.data, np.zeros((1, *result.data.shape[1:]), dtype=np.int8), {},
                         result.properties)
    return [case_id for case_id, _ in images]
