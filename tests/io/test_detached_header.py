"""Headers with a separate data file (.mhd + .raw, .nhdr + .raw) are written atomically under their final names."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from medseg.atomic import is_temporary
from medseg.io import Image, read_image, write_image
from medseg.io import sitk_io

FIELD = {".mhd": r"^ElementDataFile\s*=\s*(.+?)\s*$", ".nhdr": r"^data ?file\s*:\s*(.+?)\s*$"}


def _image(seed: int, shape=(5, 6, 7)) -> Image:
    array = np.random.default_rng(seed).integers(-1000, 1000, size=(1, *shape)).astype(np.int16)
    direction = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    return Image(array, spacing=(2.5, 0.7, 0.9), origin=(-3.0, 12.5, 4.0), direction=direction)


def _data_file(header: Path, suffix: str) -> str:
    match = re.search(FIELD[suffix], header.read_text(encoding="latin-1"), re.M)
    assert match, header.read_text(encoding="latin-1")
    return match[1]


@pytest.mark.parametrize("suffix", [".mhd", ".nhdr"])
def test_header_names_the_final_data_file_and_no_temporary_is_left(tmp_path: Path, suffix: str) -> None:
    image = _image(0)
    path = write_image(image, tmp_path / f"case 01{suffix}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"case 01{suffix}", "case 01.raw"])
    assert _data_file(path, suffix) == "case 01.raw"
    back = read_image(path)
    np.testing.assert_array_equal(back.array, image.array)
    assert back.spacing == pytest.approx(image.spacing) and back.origin == pytest.approx(image.origin)
    np.testing.assert_array_equal(back.direction, image.direction)
    moved = tmp_path / "moved"  # the pair is self-contained: it reads after the folder is copied elsewhere
    moved.mkdir()
    for name in (path.name, "case 01.raw"):
        shutil.copy(tmp_path / name, moved / name)
    np.testing.assert_array_equal(read_image(moved / path.name).array, image.array)


@pytest.mark.parametrize("suffix", [".mhd", ".nhdr"])
def test_overwrite_with_another_shape_stays_consistent(tmp_path: Path, suffix: str) -> None:
    write_image(_image(1), tmp_path / f"x{suffix}")
    bigger = _image(2, shape=(8, 9, 10))
    write_image(bigger, tmp_path / f"x{suffix}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"x{suffix}", "x.raw"])
    assert os.path.getsize(tmp_path / "x.raw") == bigger.array.nbytes
    np.testing.assert_array_equal(read_image(tmp_path / f"x{suffix}").array, bigger.array)


def test_a_failed_write_leaves_no_file_and_keeps_the_old_pair(tmp_path: Path, monkeypatch) -> None:
    old = _image(3)
    write_image(old, tmp_path / "x.mhd")
    real = sitk_io.write_sitk

    def write_then_fail(image: Image, path: Path) -> None:
        real(image, path)  # the temporary header and its data file are on disk now
        assert any(p.name.endswith(".part.raw") for p in tmp_path.iterdir())
        raise OSError("disk full")

    monkeypatch.setattr(sitk_io, "write_sitk", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_image(_image(4), tmp_path / "x.mhd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mhd", "x.raw"]
    assert not any(is_temporary(p) for p in tmp_path.iterdir())
    monkeypatch.undo()
    np.testing.assert_array_equal(read_image(tmp_path / "x.mhd").array, old.array)


def test_mhd_data_temporaries_follow_the_atomic_naming_rule(tmp_path: Path, monkeypatch) -> None:
    """What a kill -9 between ITK's write and the renames would leave is recognised as a temporary (and so
    removed by remove_stale_temporaries when a command resumes)."""
    seen: list[str] = []
    real = sitk_io.write_sitk

    def spy(image: Image, path: Path) -> None:
        real(image, path)
        seen.extend(p.name for p in tmp_path.iterdir())

    monkeypatch.setattr(sitk_io, "write_sitk", spy)
    write_image(_image(5), tmp_path / "x.mhd")
    assert len(seen) == 2 and all(is_temporary(name) for name in seen), seen
