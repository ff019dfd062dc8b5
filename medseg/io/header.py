"""What an image file will decode to, read from its header alone (no pixel data): the ``(C, *spatial)`` shape that
``read_image`` returns and the element type, so that a caller can refuse a decompression bomb (a few MB of file
that declares billions of voxels) before decoding it.

NIfTI/NRRD/MHA/MHD/DICOM files through SimpleITK's ``ReadImageInformation``, PNG/JPEG/BMP through Pillow's parsers
without ``load()`` (and without Pillow's own bomb check, which refuses to say the size), TIFF through tifffile's
first series (page headers only), ``.npy`` through ``numpy.lib.format``'s header, ``.npz`` through the header of
each member, a DICOM folder as files x rows x columns.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from medseg.errors import MedsegError
from medseg.io.formats import require_image_suffix


@dataclass(frozen=True)
class ImageHeader:
    """What a file declares.

    Attributes:
        shape: ``(C, *spatial)`` as ``read_image`` returns it (spatial in ``(Z, Y, X)`` / ``(Y, X)`` order).
        dtype: numpy name of the decoded element type (``"uint8"``, ``"float32"``, ...).
        values: every element the reader decodes, the image's ``prod(shape)`` plus, for ``.npz``, the other members
            it loads (geometry, metadata).
    """

    shape: tuple[int, ...]
    dtype: str
    values: int

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded elements."""
        return self.values * np.dtype(self.dtype).itemsize


def read_header(path: str | Path) -> ImageHeader:
    """The ``ImageHeader`` of an image file (format by suffix, as ``read_image``) or a DICOM series folder; reads
    headers only. ``MedsegError`` naming the file when the header cannot be read."""
    path = Path(path)
    if path.is_dir():
        reader: Callable[[Path], ImageHeader] = _dicom_folder_header
        kind = "DICOM series"
    else:
        if not path.exists():
            raise MedsegError("file not found", path=path, fix="check the path")
        kind = require_image_suffix(path)
        reader = _READERS[kind]
    try:
        return reader(path)
    except MedsegError:
        raise
    except Exception as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise MedsegError(f"cannot read the header of this {kind} file, it is corrupt or truncated ({first})",
                          path=path, fix="re-export or copy the file again") from None


def voxel_count(path: str | Path) -> int:
    """Elements ``read_image(path)`` would decode (channels x voxels), from the header alone."""
    return read_header(path).values


# --- SimpleITK formats and DICOM ---------------------------------------------------------------------------------

def _sitk_dtypes() -> dict[int, str]:
    import SimpleITK as sitk

    names = {"UInt8": "uint8", "Int8": "int8", "UInt16": "uint16", "Int16": "int16", "UInt32": "uint32",
             "Int32": "int32", "UInt64": "uint64", "Int64": "int64", "Float32": "float32", "Float64": "float64",
             "ComplexFloat32": "complex64", "ComplexFloat64": "complex128"}
    table = {}
    for itk_name, numpy_name in names.items():
        for prefix in ("sitk", "sitkVector"):
            value = getattr(sitk, prefix + itk_name, None)
            if isinstance(value, int) and value >= 0:
                table[value] = numpy_name
    return table


def _sitk_info(path: Path):
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def _sitk_shape(size: tuple[int, ...], components: int) -> tuple[int, ...]:
    """ITK ``size`` (x, y, z[, t]) and components -> ``(C, *spatial)`` as ``sitk_io.sitk_to_image`` makes it."""
    spatial = tuple(int(s) for s in reversed(size))
    if components > 1:
        return (components, *spatial)
    if len(size) == 4:
        return spatial  # a 4D scalar image: its 4th axis is the channels
    return (1, *spatial)


def _sitk_header(path: Path) -> ImageHeader:
    reader = _sitk_info(path)
    shape = _sitk_shape(reader.GetSize(), reader.GetNumberOfComponents())
    dtype = _sitk_dtypes().get(reader.GetPixelIDValue(), "float64")
    return ImageHeader(shape, dtype, math.prod(shape))


def _dicom_folder_header(folder: Path) -> ImageHeader:
    """Files x rows x columns of the folder's one series (the series ``read_dicom_series`` would read)."""
    import SimpleITK as sitk

    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise MedsegError("no DICOM series found in this folder", path=folder,
                          fix="point to a folder of .dcm slices of one series")
    if len(series) > 1:
        raise MedsegError(f"{len(series)} DICOM series in one folder: {', '.join(series)}", path=folder,
                          fix="put each series in its own folder")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])
    first = _sitk_info(Path(files[0]))
    size = first.GetSize()  # (columns, rows[, frames])
    frames = size[2] if len(size) > 2 else 1
    spatial = (len(files) * frames, int(size[1]), int(size[0]))
    components = first.GetNumberOfComponents()
    shape = (components, *spatial)
    return ImageHeader(shape, _sitk_dtypes().get(first.GetPixelIDValue(), "float64"), math.prod(shape))


# --- Pillow rasters ---------------------------------------------------------------------------------------------

_PIL_DTYPES = {"I;16": "uint16", "I;16L": "uint16", "I;16B": "uint16", "I;16N": "uint16", "I": "int32",
               "I;32": "int32", "F": "float32"}


def _pil_header(path: Path) -> ImageHeader:
    """Size and mode as ``raster.read_pil`` maps them: grey/palette/1-bit 1 channel, LA/PA their first band,
    CMYK/YCbCr converted to RGB, other modes one channel per band."""
    from PIL import Image as PILImage

    with open(path, "rb") as stream:
        try:
            pil = _open_pil(stream, path)
        except PILImage.DecompressionBombError as error:
            raise MedsegError(f"Pillow refuses it as a possible decompression bomb ({error})", path=path,
                              fix="crop or downsample the image") from None
        with pil:
            width, height = pil.size
            mode = pil.mode
    if mode in ("LA", "PA", "1"):
        channels = 1
    elif mode in ("CMYK", "YCbCr"):
        channels = 3
    else:
        channels = PILImage.getmodebands(mode)
    shape = (channels, int(height), int(width))
    return ImageHeader(shape, _PIL_DTYPES.get(mode, "uint8"), math.prod(shape))


def _open_pil(stream, path: Path):
    """The Pillow image file of ``stream``, header parsed, pixels not decoded. The PNG/JPEG/BMP parsers are called
    directly: ``PIL.Image.open`` raises ``DecompressionBombError`` without saying the size for large images."""
    from PIL import BmpImagePlugin, JpegImagePlugin, PngImagePlugin
    from PIL import Image as PILImage

    magic = stream.read(8)
    stream.seek(0)
    parsers = ((b"\x89PNG\r\n\x1a\n", PngImagePlugin.PngImageFile), (b"\xff\xd8", JpegImagePlugin.JpegImageFile),
               (b"BM", BmpImagePlugin.BmpImageFile))
    for prefix, parser in parsers:
        if magic.startswith(prefix):
            return parser(stream, str(path))
    return PILImage.open(stream)  # another format under a raster suffix: Pillow's own detection and limit


# --- TIFF -------------------------------------------------------------------------------------------------------

def _tiff_header(path: Path) -> ImageHeader:
    """The first series' shape, mapped as ``raster.read_tiff`` maps it (medseg geometry, ``...S`` colour, stacks)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        shape, axes, dtype = tuple(int(s) for s in series.shape), series.axes, series.dtype
        geometry = (tif.shaped_metadata or [{}])[0] if tif.is_shaped else {}
    if axes.endswith("S"):
        shape = (shape[-1], *shape[:-1])
    if "spacing" in geometry:
        spatial = shape[len(shape) - len(geometry["spacing"]):]
        shape = (int(geometry.get("channels", 1)), *spatial)
    elif not axes.endswith("S") and len(shape) in (2, 3):
        shape = (1, *shape)
    return ImageHeader(shape, np.dtype(dtype).name, math.prod(shape))


# --- NumPy ------------------------------------------------------------------------------------------------------

def _npy_array_header(stream) -> tuple[tuple[int, ...], np.dtype]:
    from numpy.lib import format as npy_format

    version = npy_format.read_magic(stream)
    read = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    shape, _, dtype = read(stream)
    return tuple(int(s) for s in shape), dtype


def _npy_header(path: Path) -> ImageHeader:
    with open(path, "rb") as stream:
        shape, dtype = _npy_array_header(stream)
    return ImageHeader((1, *shape), dtype.name, math.prod(shape))


def _npz_header(path: Path) -> ImageHeader:
    """The image member (``array``, or the only member) as ``numpy_io.read_npz`` reads it; every member counts in
    ``values``."""
    members: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            with archive.open(name) as stream:
                members[name.removesuffix(".npy")] = _npy_array_header(stream)
    if "array" in members:
        shape, dtype = members["array"]
    elif len(members) == 1:
        spatial, dtype = next(iter(members.values()))
        shape = (1, *spatial)
    else:
        raise MedsegError(f".npz without an 'array' entry (has {sorted(members)})", path=path,
                          fix="write it with medseg.io.write_image, or keep a single array in it")
    return ImageHeader(shape, dtype.name, sum(math.prod(s) for s, _ in members.values()))


_READERS: dict[str, Callable[[Path], ImageHeader]] = {
    **dict.fromkeys((".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm"), _sitk_header),
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".bmp"), _pil_header),
    ".tif": _tiff_header,
    ".tiff": _tiff_header,
    ".npy": _npy_header,
    ".npz": _npz_header,
}
