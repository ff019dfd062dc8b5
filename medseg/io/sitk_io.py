"""NIfTI, NRRD, MHA/MHD and single DICOM files through SimpleITK, with channel-first arrays and exact geometry."""

from __future__ import annotations

import math
import os
import re
import struct
import zlib
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path

import numpy as np

from medseg.io.image import Image


def image_to_sitk(image: Image):
    """``Image`` -> ``SimpleITK.Image``.

    One channel writes a scalar image. Several channels write a 4D scalar image for 3D data (the MSD / NIfTI
    convention, channel = 4th axis) and a vector-pixel image for 2D data (as PNG/RGB NRRD would hold it).
    """
    import SimpleITK as sitk

    d = image.ndim
    spacing = tuple(reversed(image.spacing))  # ITK order (x, y, z)
    if image.num_channels == 1:
        out = sitk.GetImageFromArray(np.ascontiguousarray(image.array[0]))
        out.SetSpacing(spacing)
        out.SetOrigin(image.origin)
        out.SetDirection(tuple(image.direction.ravel()))
        return out
    if d == 3:
        out = sitk.GetImageFromArray(np.ascontiguousarray(image.array), isVector=False)
        direction = np.eye(4)
        direction[:3, :3] = image.direction
        extra_spacing = float(image.metadata.get("channel_spacing", 1.0))
        out.SetSpacing(spacing + (extra_spacing,))
        out.SetOrigin(image.origin + (0.0,))
        out.SetDirection(tuple(direction.ravel()))
        return out
    out = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(image.array, 0, -1)), isVector=True)
    out.SetSpacing(spacing)
    out.SetOrigin(image.origin)
    out.SetDirection(tuple(image.direction.ravel()))
    return out


def sitk_to_image(sitk_image, metadata: dict | None = None) -> Image:
    """``SimpleITK.Image`` -> ``Image``; a 4D scalar image becomes channels of a 3D image."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(sitk_image)
    dim = sitk_image.GetDimension()
    spacing = np.array(sitk_image.GetSpacing())
    origin = np.array(sitk_image.GetOrigin())
    direction = np.array(sitk_image.GetDirection()).reshape(dim, dim)
    metadata = dict(metadata or {})
    if sitk_image.GetNumberOfComponentsPerPixel() > 1:
        array = np.moveaxis(array, -1, 0)
    elif dim == 4:
        metadata["channel_spacing"] = float(spacing[3])
        spacing, origin, direction = spacing[:3], origin[:3], direction[:3, :3]
    else:
        array = array[None]
    return Image(np.ascontiguousarray(array), tuple(reversed(spacing.tolist())), tuple(origin.tolist()), direction,
                 metadata)


@dataclass
class NiftiScan:
    """What streaming through a NIfTI file's bytes finds that ITK would hide."""

    missing_bytes: int  # voxel bytes the header announces but the file lacks (ITK zero-fills them)
    nonfinite_voxels: int  # NaN/Inf voxels (ITK's reader turns them into 0)
    header_problem: str | None = None  # a header field that NIfTI forbids (niftilib would print to stderr)


_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}
# every NIfTI-1 datatype code -> bits per voxel
_NIFTI_BITPIX = {2: 8, 4: 16, 8: 32, 16: 32, 32: 64, 64: 64, 128: 24, 256: 8, 512: 16, 768: 32, 1024: 64, 1280: 64,
                 1536: 128, 1792: 128, 2048: 256, 2304: 32}


_CHUNK = 1 << 22


def scan_nifti(path: Path) -> NiftiScan:
    """Stream a ``.nii`` / ``.nii.gz`` once and compare it with what its header announces: 4 MiB at a time, also
    decompressed (a few MB of gzip can hold GBs of zeros), and no further than one chunk past the announced voxel
    data (ITK reads no more)."""
    compressed = path.name.lower().endswith(".gz")
    header = _Header()
    total = nonfinite = 0
    leftover = b""
    with open(path, "rb") as handle:
        decompressor = zlib.decompressobj(wbits=47) if compressed else None
        while total < header.expected_bytes + _CHUNK:
            if decompressor is not None and decompressor.unconsumed_tail:
                data = decompressor.decompress(decompressor.unconsumed_tail, _CHUNK)
            elif chunk := handle.read(_CHUNK):
                data = decompressor.decompress(chunk, _CHUNK) if decompressor else chunk
            else:
                break
            start = total
            total += len(data)
            header.feed(data, start)
            if header.float_dtype is not None and total > header.vox_offset:
                data = leftover + data[max(0, header.vox_offset - start):]
                usable = len(data) - len(data) % header.float_dtype.itemsize
                values = np.frombuffer(data[:usable], dtype=header.float_dtype)
                nonfinite += int(values.size - np.count_nonzero(np.isfinite(values)))
                leftover = data[usable:]
        truncated_stream = (decompressor is not None and not decompressor.eof
                            and total < header.expected_bytes + _CHUNK)
    if header.problem is not None:
        return NiftiScan(0, 0, header.problem)
    missing = max(0, header.expected_bytes - total)
    return NiftiScan(max(missing, 1) if truncated_stream else missing, nonfinite)


class _Header:
    """Parses the NIfTI-1 header fields that size the voxel data, as the first bytes stream in."""

    def __init__(self) -> None:
        self.raw = b""
        self.expected_bytes = 348
        self.vox_offset = 1 << 62
        self.float_dtype: np.dtype | None = None
        self.problem: str | None = None

    def feed(self, data: bytes, start: int) -> None:
        if len(self.raw) >= 348 or start >= 348:
            return
        self.raw += data[: 348 - len(self.raw)]
        if len(self.raw) < 348:
            return
        for order in "<>":
            if struct.unpack(order + "i", self.raw[:4])[0] == 348:
                dims = struct.unpack(order + "8h", self.raw[40:56])
                datatype, bitpix = struct.unpack(order + "2h", self.raw[70:74])
                pixdim = struct.unpack(order + "8f", self.raw[76:108])
                self.problem = _header_problem(dims, datatype, pixdim)
                if self.problem is not None:
                    self.expected_bytes = 348  # nothing more to read
                    return
                self.vox_offset = int(struct.unpack(order + "f", self.raw[108:112])[0])
                count = 1
                for size in dims[1 : dims[0] + 1]:
                    count *= max(int(size), 1)
                self.expected_bytes = self.vox_offset + count * bitpix // 8
                if datatype in _NIFTI_FLOAT_TYPES:
                    self.float_dtype = np.dtype(order + _NIFTI_FLOAT_TYPES[datatype])
                return
        self.expected_bytes = 0  # NIfTI-2 or not NIfTI at all: let ITK judge


def _header_problem(dims: tuple[int, ...], datatype: int, pixdim: tuple[float, ...]) -> str | None:
    """What is wrong with a NIfTI-1 header's ``dim``, ``datatype`` and ``pixdim`` fields, or None (a voxel size of
    0 is allowed: ITK reads it as 1, as other readers do; NaN/Inf ITK replaced silently, with a warning)."""
    if not 1 <= dims[0] <= 7:
        return f"its header says {dims[0]} dimensions (dim[0] must be 1 to 7)"
    if any(size < 1 for size in dims[1 : dims[0] + 1]):
        return f"its header has an image size below 1 ({', '.join(map(str, dims[1 : dims[0] + 1]))})"
    if datatype not in _NIFTI_BITPIX:
        return f"its header's datatype code {datatype} is not a NIfTI type"
    sizes = pixdim[1 : min(dims[0], 3) + 1]
    if not all(math.isfinite(size) for size in sizes):
        return f"its header's voxel size (pixdim) is {', '.join(f'{size:g}' for size in sizes)}"
    return None


def read_sitk(path: Path) -> Image:
    import SimpleITK as sitk

    metadata = {}
    if path.name.lower().endswith((".nii", ".nii.gz")):
        scan = scan_nifti(path)
        if scan.header_problem:
            raise ValueError(scan.header_problem)
        if scan.missing_bytes:
            raise ValueError(f"the file ends {scan.missing_bytes} bytes before the voxel data its header announces")
        if scan.nonfinite_voxels:
            metadata["nonfinite_voxels"] = scan.nonfinite_voxels

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    sitk_image = reader.Execute()
    return sitk_to_image(sitk_image, metadata)


def write_sitk(image: Image, path: Path) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(image_to_sitk(image), str(path), useCompression=str(path).endswith((".gz", ".nrrd", ".mha")))


# header suffix -> the header field that names its data file (MetaImage, detached NRRD)
DETACHED_HEADERS = {".mhd": re.compile(r"^(ElementDataFile\s*=\s*)(.+?)\s*$", re.M),
                    ".nhdr": re.compile(r"^(data ?file\s*:\s*)(.+?)\s*$", re.M)}


def detached_data_file(header: Path) -> str | None:
    """The data file name that a ``.mhd`` / ``.nhdr`` header names (None: another file type, an unreadable header,
    or voxels kept in the header itself: ``LOCAL``, ``LIST``)."""
    suffix = next((s for s in DETACHED_HEADERS if header.name.lower().endswith(s)), None)
    if suffix is None:
        return None
    try:
        with open(header, "rb") as stream:
            text = stream.read(1 << 16).decode("latin-1")
    except OSError:
        return None
    match = DETACHED_HEADERS[suffix].search(text)
    name = match[2] if match else None
    return None if name is None or name.upper() in ("LOCAL", "LIST") or name.startswith("LIST ") else name


def write_detached(image: Image, temporary: Path, final: Path) -> None:
    """Write a header + data file pair (``x.mhd`` + ``x.raw``, ``x.nhdr`` + ``x.raw``) for ``final``: ITK writes
    both under the temporary header's name, the header is made to name ``final``'s data file, and the data file
    takes its final name. The caller renames ``temporary`` to ``final`` afterwards (``atomic_write``), so the
    header appears last and only ever names a complete data file; an existing header is removed before its data
    file is replaced, so an interrupted overwrite leaves no header over data it does not describe."""
    suffix = next(s for s in DETACHED_HEADERS if final.name.lower().endswith(s))
    stem = temporary.name[: len(temporary.name) - len(suffix)]  # unique: it holds the writer's pid and token
    try:
        write_sitk(image, temporary)
        header = temporary.read_text(encoding="latin-1")
        match = DETACHED_HEADERS[suffix].search(header)
        if match is None:  # ITK put the voxels in the header itself: nothing to rename
            return
        data = temporary.with_name(match[2])
        if not data.name.startswith(stem) or data.parent != temporary.parent:
            raise ValueError(f"unexpected data file name {match[2]!r} in the header ITK wrote")
        target = final.with_name(final.name[: len(final.name) - len(suffix)] + data.name[len(stem):])
        temporary.write_text(header[: match.start(2)] + target.name + header[match.end(2):], encoding="latin-1")
        final.unlink(missing_ok=True)
        os.replace(data, target)
    finally:  # the data temporary is gone once renamed; after a failure, whatever ITK had written of it
        for leftover in temporary.parent.glob(glob_escape(stem) + "*"):
            if leftover != temporary:
                leftover.unlink(missing_ok=True)
