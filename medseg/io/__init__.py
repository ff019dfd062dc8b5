"""Image IO: one ``Image`` type with geometry; readers and writers chosen by file suffix; DICOM SEG and RTSTRUCT
written for and read back onto a source series."""

from medseg.io.formats import SUPPORTED_SUFFIXES, image_suffix, read_image, strip_suffix, write_image
from medseg.io.header import ImageHeader, read_header, voxel_count
from medseg.io.dicom_seg import read_dicom_seg, write_dicom_seg
from medseg.io.image import Image, grid_differences
from medseg.io.rtstruct import read_rtstruct, write_rtstruct

__all__ = ["Image", "grid_differences", "read_image", "write_image", "image_suffix", "strip_suffix",
           "SUPPORTED_SUFFIXES", "ImageHeader", "read_header", "voxel_count", "read_dicom_seg", "write_dicom_seg",
           "read_rtstruct", "write_rtstruct"]
