"""2D raster formats: PNG, JPEG, BMP through Pillow; TIFF (2D, RGB and 3D stacks) through tifffile."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError
from medseg.io.image import Image

_CHANNELS_TO_PIL_MODE = {1: "L", 3: "RGB", 4: "RGBA"}


def read_pil(path: Path) -> Image:
    """PNG/JPEG/BMP -> ``(C, Y, X)``: grey 1 channel, RGB 3, RGBA 4; palette images keep their indices."""
    from PIL import Image as PILImage

    with PILImage.open(path) as pil:
        pil.load()
        if pil.mode == "1":
            array = np.array(pil, dtype=np.uint8)
        elif pil.mode in ("LA", "PA"):
            array = np.array(pil.getchannel(0))
        elif pil.mode == "CMYK" or pil.mode == "YCbCr":
            array = np.array(pil.convert("RGB"))
        else:
            array = np.array(pil)
    array = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    return Image.from_array(np.ascontiguousarray(array), channel_axis=True)


def write_pil(image: Image, path: Path) -> None:
    from PIL import Image as PILImage

    if image.ndim != 2:
        raise MedsegError(f"{path.suffix} holds 2D images, this image is {image.ndim}D", path=path,
                          fix="write .nii.gz, .nrrd, .mha or .tif for 3D data")
    array = image.array
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype not in (np.uint8, np.uint16) and not _fits_uint8(array):
        raise MedsegError(f"{path.suffix} stores 8/16-bit integers, this array is {array.dtype}", path=path,
                          fix="write .nii.gz, .tif or .npz for float or signed data")
    if array.dtype != np.uint16:
        array = array.astype(np.uint8)
    if array.dtype == np.uint16 and image.num_channels == 1:
        pil = PILImage.fromarray(array[0])
    elif image.num_channels in _CHANNELS_TO_PIL_MODE and array.dtype == np.uint8:
        pixels = array[0] if image.num_channels == 1 else np.moveaxis(array, 0, -1)
        pil = PILImage.fromarray(np.ascontiguousarray(pixels), mode=_CHANNELS_TO_PIL_MODE[image.num_channels])
    else:
        raise MedsegError(f"{path.suffix} cannot hold {image.num_channels} channels of {array.dtype}", path=path,
                          fix="write .tif, .nii.gz or .npz")
    options = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    pil.save(path, format=_pil_format(path), **options)


def _pil_format(path: Path) -> str:
    return {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}[path.suffix.lower()]


def _fits_uint8(array: np.ndarray) -> bool:
    if not np.issubdtype(array.dtype, np.integer):
        return False
    return array.size == 0 or (int(array.min()) >= 0 and int(array.max()) <= 255)


def read_tiff(path: Path) -> Image:
    """TIFF -> ``Image``. Geometry written by medseg (JSON in the description) is restored; other files get
    unit spacing. Axes: ``YX`` (grey), ``YXS`` (RGB), ``ZYX`` / ``CZYX`` stacks."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        array = series.asarray()
        axes = series.axes
        geometry = (tif.shaped_metadata or [{}])[0] if tif.is_shaped else {}
    if axes.endswith("S"):
        array = np.moveaxis(array, -1, 0)
    if "spacing" in geometry:
        channels = int(geometry.get("channels", 1))
        spatial_ndim = len(geometry["spacing"])
        array = array.reshape((channels,) + array.shape[array.ndim - spatial_ndim:])
        return Image(np.ascontiguousarray(array), geometry["spacing"], geometry["origin"],
                     np.array(geometry["direction"]), json.loads(geometry.get("metadata", "{}")))
    if axes.endswith("S"):
        return Image.from_array(np.ascontiguousarray(array), channel_axis=True)
    if array.ndim in (2, 3):
        return Image.from_array(array)
    if array.ndim == 4:
        return Image.from_array(array, channel_axis=True)
    raise MedsegError(f"TIFF with axes {axes!r} and shape {array.shape} is not a 2D/3D image", path=path,
                      fix="save one image (YX, YXS or ZYX) per file")


def write_tiff(image: Image, path: Path) -> None:
    import tifffile

    geometry = {
        "spacing": list(image.spacing),
        "origin": list(image.origin),
        "direction": image.direction.tolist(),
        "channels": image.num_channels,
        "metadata": json.dumps(image.metadata, default=str),
    }
    if image.ndim == 2 and image.num_channels in (3, 4) and image.array.dtype == np.uint8:
        tifffile.imwrite(path, np.moveaxis(image.array, 0, -1), photometric="rgb", metadata=geometry)
    else:
        data = image.array[0] if image.num_channels == 1 else image.array
        tifffile.imwrite(path, data, photometric="minisblack", metadata=geometry)
