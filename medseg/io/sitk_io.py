"""NIfTI, NRRD, MHA/MHD and single DICOM files through SimpleITK, with channel-first arrays and exact geometry."""

from __future__ import annotations

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


def nifti_missing_bytes(path: Path) -> int:
    """How many bytes of voxel data a NIfTI(-gz) file lacks (0 when complete).

    ITK silently zero-fills a truncated ``.nii.gz``; this streams the file once (bounded memory) and compares the
    decompressed length with what the header promises.
    """
    import struct
    import zlib

    compressed = path.name.lower().endswith(".gz")
    total, header = 0, b""
    with open(path, "rb") as handle:
        decompressor = zlib.decompressobj(wbits=47) if compressed else None
        while chunk := handle.read(1 << 22):
            data = decompressor.decompress(chunk) if decompressor else chunk
            if len(header) < 352:
                header += data[: 352 - len(header)]
            total += len(data)
        if decompressor is not None and not decompressor.eof:
            return max(1, _nifti_expected_bytes(header, struct) - total)
    return max(0, _nifti_expected_bytes(header, struct) - total)


def _nifti_expected_bytes(header: bytes, struct) -> int:
    if len(header) < 348:
        return 348
    for order in "<>":
        (sizeof_hdr,) = struct.unpack(order + "i", header[:4])
        if sizeof_hdr == 348:
            dims = struct.unpack(order + "8h", header[40:56])
            (bitpix,) = struct.unpack(order + "h", header[72:74])
            (vox_offset,) = struct.unpack(order + "f", header[108:112])
            count = 1
            for size in dims[1 : dims[0] + 1]:
                count *= max(int(size), 1)
            return int(vox_offset) + count * bitpix // 8
    return 0  # NIfTI-2 or not NIfTI at all: let ITK judge


def read_sitk(path: Path) -> Image:
    import SimpleITK as sitk

    if path.name.lower().endswith((".nii", ".nii.gz")):
        missing = nifti_missing_bytes(path)
        if missing:
            raise ValueError(f"the file ends {missing} bytes before the voxel data its header announces")

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    sitk_image = reader.Execute()
    return sitk_to_image(sitk_image)


def write_sitk(image: Image, path: Path) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(image_to_sitk(image), str(path), useCompression=str(path).endswith((".gz", ".nrrd", ".mha")))
