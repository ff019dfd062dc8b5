"""Read -> write -> read keeps the array and the geometry, for every format."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import MedsegError
from medseg.io import Image, read_image, write_image

ROTATION_3D = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 degrees about z
OBLIQUE_3D = np.array([[np.cos(0.3), -np.sin(0.3), 0.0], [np.sin(0.3), np.cos(0.3), 0.0], [0.0, 0.0, 1.0]])


def _volume(rng: np.random.Generator, channels: int = 1, dtype=np.float32) -> Image:
    array = rng.normal(size=(channels, 7, 9, 11)).astype(dtype) * 100
    return Image(array, spacing=(3.5, 0.7, 0.8), origin=(-12.5, 40.25, 7.0), direction=ROTATION_3D)


def _assert_same(a: Image, b: Image, *, direction_atol: float = 0.0) -> None:
    assert b.array.shape == a.array.shape
    assert b.array.dtype == a.array.dtype
    np.testing.assert_array_equal(b.array, a.array)
    assert b.spacing == pytest.approx(a.spacing, rel=1e-6, abs=0)
    assert b.origin == pytest.approx(a.origin, rel=1e-6, abs=1e-6)
    np.testing.assert_allclose(b.direction, a.direction, atol=direction_atol)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".npz", ".tif"])
def test_3d_anisotropic_rotated_round_trip_is_exact(tmp_path: Path, suffix: str) -> None:
    image = _volume(np.random.default_rng(0))
    path = write_image(image, tmp_path / f"vol{suffix}")
    _assert_same(image, read_image(path))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha", ".npz"])
def test_oblique_direction_round_trip(tmp_path: Path, suffix: str) -> None:
    image = _volume(np.random.default_rng(1))
    image.direction = OBLIQUE_3D
    back = read_image(write_image(image, tmp_path / f"oblique{suffix}"))
    # NIfTI stores the rotation as a float32 quaternion: exact to float32 precision, not to float64.
    _assert_same(image, back, direction_atol=1e-6 if suffix == ".nii.gz" else 0.0)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha", ".npz", ".tif"])
def test_4d_multichannel_round_trip(tmp_path: Path, suffix: str) -> None:
    image = _volume(np.random.default_rng(2), channels=3)
    back = read_image(write_image(image, tmp_path / f"mc{suffix}"))
    assert back.num_channels == 3
    _assert_same(image, back)


def test_4d_nifti_is_stored_as_a_4d_file(tmp_path: Path) -> None:
    import SimpleITK as sitk

    image = _volume(np.random.default_rng(3), channels=2)
    path = write_image(image, tmp_path / "mc.nii.gz")
    on_disk = sitk.ReadImage(str(path))
    assert on_disk.GetDimension() == 4 and on_disk.GetSize() == (11, 9, 7, 2)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".npz", ".nii.gz", ".nrrd", ".mha"])
def test_rgb_2d_round_trip(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(4)
    image = Image.from_array(rng.integers(0, 256, size=(3, 13, 17), dtype=np.uint8), channel_axis=True)
    if suffix not in (".png", ".bmp"):  # raster formats carry no geometry
        image.spacing, image.origin = (0.25, 0.5), (3.0, -2.0)
    back = read_image(write_image(image, tmp_path / f"rgb{suffix}"))
    _assert_same(image, back)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".npy", ".npz", ".nii.gz"])
def test_grey_2d_and_label_round_trip(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(5)
    image = Image.from_array(rng.integers(0, 5, size=(19, 23), dtype=np.uint8))
    _assert_same(image, read_image(write_image(image, tmp_path / f"label{suffix}")))


def test_16_bit_png_round_trip(tmp_path: Path) -> None:
    image = Image.from_array(np.random.default_rng(6).integers(0, 65535, size=(8, 9), dtype=np.uint16))
    _assert_same(image, read_image(write_image(image, tmp_path / "deep.png")))


def test_jpeg_is_lossy_but_keeps_shape_and_is_close(tmp_path: Path) -> None:
    # JPEG cannot round-trip exactly by design; check shape, dtype and a small error on a smooth image.
    yy, xx = np.mgrid[0:32, 0:40]
    smooth = np.stack([(xx * 6) % 256, (yy * 7) % 256, ((xx + yy) * 3) % 256]).astype(np.uint8)
    back = read_image(write_image(Image.from_array(smooth, channel_axis=True), tmp_path / "photo.jpg"))
    assert back.array.shape == smooth.shape and back.array.dtype == np.uint8
    assert np.abs(back.array.astype(int) - smooth).mean() < 4


def test_real_png_and_nifti_round_trip(tmp_path: Path) -> None:
    data = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if not data.is_dir():
        pytest.skip(f"real-data battery not found at {data}")
    for source, suffix in [(data / "drive/imagesTr/drive_21_0000.png", ".png"),
                           (data / "brats2013_mini/labelsTr/brats_pat0003.nii.gz", ".nii.gz")]:
        image = read_image(source)
        _assert_same(image, read_image(write_image(image, tmp_path / f"copy{suffix}")))


def test_float_data_refused_by_png_with_a_fix(tmp_path: Path) -> None:
    image = Image.from_array(np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5))
    with pytest.raises(MedsegError, match="fix: write .nii.gz"):
        write_image(image, tmp_path / "float.png")
    assert list(tmp_path.iterdir()) == []  # no half-written output


def test_unknown_extension_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "scan.xyz"
    path.write_bytes(b"junk")
    with pytest.raises(MedsegError, match=r"scan\.xyz.*unknown image file type"):
        read_image(path)
    with pytest.raises(MedsegError, match="unknown image file type"):
        write_image(Image.from_array(np.zeros((2, 2))), tmp_path / "out.xyz")


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(MedsegError, match="nothere.nii.gz: file not found"):
        read_image(tmp_path / "nothere.nii.gz")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".png", ".nrrd", ".mha", ".npz", ".tif"])
def test_truncated_file_is_a_clear_error(tmp_path: Path, suffix: str) -> None:
    image = _volume(np.random.default_rng(7)) if suffix not in (".png",) else \
        Image.from_array(np.random.default_rng(7).integers(0, 255, (64, 64), dtype=np.uint8))
    path = write_image(image, tmp_path / f"whole{suffix}")
    data = path.read_bytes()
    broken = tmp_path / f"broken{suffix}"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(MedsegError, match=r"broken.*corrupt or truncated"):
        read_image(broken)


def test_garbage_nifti_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti header" * 10))
    with pytest.raises(MedsegError, match="garbage.nii.gz"):
        read_image(path)
