"""Reading and writing images by file suffix; every failure becomes a ``MedsegError`` naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from medseg.atomic import atomic_write
from medseg.errors import MedsegError
from medseg.io import dicom, numpy_io, raster, sitk_io
from medseg.io.image import Image

Reader = Callable[[Path], Image]
Writer = Callable[[Image, Path], None]

# suffix -> (reader, writer); longest suffixes are matched first (".nii.gz" before ".gz").
FORMATS: dict[str, tuple[Reader, Writer]] = {
    ".nii.gz": (sitk_io.read_sitk, sitk_io.write_sitk),
    ".nii": (sitk_io.read_sitk, sitk_io.write_sitk),
    ".nrrd": (sitk_io.read_sitk, sitk_io.write_sitk),
    ".nhdr": (sitk_io.read_sitk, sitk_io.write_sitk),
    ".mha": (sitk_io.read_sitk, sitk_io.write_sitk),
    ".mhd": (sitk_io.read_sitk, sitk_io.write_sitk),
    ".dcm": (sitk_io.read_sitk, sitk_io.write_sitk),
    ".png": (raster.read_pil, raster.write_pil),
    ".jpg": (raster.read_pil, raster.write_pil),
    ".jpeg": (raster.read_pil, raster.write_pil),
    ".bmp": (raster.read_pil, raster.write_pil),
    ".tif": (raster.read_tiff, raster.write_tiff),
    ".tiff": (raster.read_tiff, raster.write_tiff),
    ".npy": (numpy_io.read_npy, numpy_io.write_npy),
    ".npz": (numpy_io.read_npz, numpy_io.write_npz),
}
SUPPORTED_SUFFIXES = tuple(sorted(FORMATS, key=len, reverse=True))


def image_suffix(path: str | Path) -> str | None:
    """The image suffix of ``path`` (lower case, e.g. ``".nii.gz"``), or None when it is not a supported one."""
    name = Path(path).name.lower()
    return next((s for s in SUPPORTED_SUFFIXES if name.endswith(s)), None)


def strip_suffix(path: str | Path) -> str:
    """File name without its image suffix: ``case_001.nii.gz`` -> ``case_001``."""
    name = Path(path).name
    suffix = image_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else Path(name).stem


def require_image_suffix(path: Path) -> str:
    """The image suffix of ``path``; a ``MedsegError`` listing the supported ones when it has none."""
    suffix = image_suffix(path)
    if suffix is None:
        raise MedsegError(f"unknown image file type '{''.join(path.suffixes) or path.name}'", path=path,
                          fix=f"use one of {', '.join(sorted(FORMATS))} or a DICOM series folder")
    return suffix


def read_image(path: str | Path) -> Image:
    """Read an image file (format by suffix) or a DICOM series folder into an ``Image`` ``(C, *spatial)``."""
    path = Path(path)
    if path.is_dir():
        suffix = image_suffix(path)
        if suffix not in (None, ".dcm"):  # a folder named like a file is a mistake, not a DICOM series
            raise MedsegError(f"is a folder, not a {suffix} file", path=path,
                              fix=f"put the {suffix} image file at this path")
        try:
            return dicom.read_dicom_series(path)
        except MedsegError:
            raise
        except Exception as error:  # GDCM raises RuntimeError with a long ITK trace
            raise MedsegError(f"cannot read DICOM series ({_first_line(error)})", path=path,
                              fix="check that the folder holds readable DICOM slices of one series") from None
    if not path.exists():
        raise MedsegError("file not found", path=path, fix="check the path")
    suffix = require_image_suffix(path)
    reader = FORMATS[suffix][0]
    try:
        return reader(path)
    except MedsegError:
        raise
    except Exception as error:
        raise MedsegError(f"cannot read {suffix} file, it is corrupt or truncated ({_first_line(error)})",
                          path=path, fix="re-export or copy the file again") from None


def write_image(image: Image, path: str | Path) -> Path:
    """Write ``image`` (format by suffix) atomically: to a temporary name in the same folder, then renamed.

    A header with a separate data file (``.mhd``, ``.nhdr``) writes ``<name>.raw`` beside it, complete before the
    header that names it appears."""
    path = Path(path)
    suffix = require_image_suffix(path)
    if suffix in sitk_io.DETACHED_HEADERS:
        def write(temporary: Path) -> None:
            sitk_io.write_detached(image, temporary, path)
    else:
        def write(temporary: Path) -> None:
            FORMATS[suffix][1](image, temporary)
    atomic_write(path, write, suffix=f".part{suffix}")
    return path


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception thrown", "/", "itk::"))]
    return (useful or lines or [type(error).__name__])[-1][:200]
