"""The nnU-Net v2 and MSD layouts of the same data open to the same dataset object; conversion round-trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.data import open_dataset
from medseg.data.convert import msd_to_nnunet
from medseg.errors import MedsegError
from medseg.io import Image, read_image, write_image

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _dataset(name: str) -> Path:
    if not (SHARED / name / "dataset.json").is_file():
        pytest.skip(f"real-data battery not found at {SHARED}")
    return SHARED / name


def _crop(image: Image) -> Image:
    """A tumour-centred crop of a BraTS volume, to keep the test fast while using real voxels."""
    cropped = image.array[:, 60:92, 90:154, 80:144]
    return Image(np.ascontiguousarray(cropped), image.spacing, image.origin, image.direction)


@pytest.fixture
def brats_pair(tmp_path: Path) -> tuple[Path, Path]:
    """The same two BraTS cases written in the nnU-Net layout and in the MSD layout (4D images)."""
    source = open_dataset(_dataset("brats2013_mini"))
    nnunet, msd = tmp_path / "nnunet", tmp_path / "msd"
    training = []
    for case in source.cases[:2]:
        image, label = _crop(source.read_image(case)), _crop(source.read_label(case))
        for c in range(image.num_channels):
            write_image(image.with_array(image.array[c : c + 1]), nnunet / "imagesTr" / f"{case.case_id}_{c:04d}.nii.gz")
        write_image(label, nnunet / "labelsTr" / f"{case.case_id}.nii.gz")
        write_image(image, msd / "imagesTr" / f"{case.case_id}.nii.gz")
        write_image(label, msd / "labelsTr" / f"{case.case_id}.nii.gz")
        training.append({"image": f"./imagesTr/{case.case_id}.nii.gz", "label": f"./labelsTr/{case.case_id}.nii.gz"})
    spec = source.spec
    spec.num_training = 2
    (nnunet / "dataset.json").write_text(json.dumps(spec.to_nnunet_json()))
    msd_json = {"name": spec.name, "description": spec.description, "reference": spec.reference,
                "licence": spec.licence, "modality": {"0": "FLAIR", "1": "T1c"},
                "labels": {str(v): k for k, v in spec.labels.items()}, "numTraining": 2, "training": training,
                "regions_commonly_scored": spec.regions, "test": []}
    (msd / "dataset.json").write_text(json.dumps(msd_json))
    return nnunet, msd


def _assert_same_dataset(a_root: Path, b_root: Path) -> None:
    a, b = open_dataset(a_root), open_dataset(b_root)
    assert a.spec == b.spec
    assert [c.case_id for c in a.cases] == [c.case_id for c in b.cases]
    for case_a, case_b in zip(a.cases, b.cases):
        image_a, image_b = a.read_image(case_a), b.read_image(case_b)
        np.testing.assert_array_equal(image_a.array, image_b.array)
        assert image_a.spacing == image_b.spacing and image_a.origin == image_b.origin
        np.testing.assert_array_equal(image_a.direction, image_b.direction)
        np.testing.assert_array_equal(a.read_label(case_a).array, b.read_label(case_b).array)


def test_both_layouts_open_to_the_same_dataset(brats_pair: tuple[Path, Path]) -> None:
    nnunet, msd = brats_pair
    assert open_dataset(nnunet).layout == "nnunet" and open_dataset(msd).layout == "msd"
    assert open_dataset(msd).read_image(open_dataset(msd).cases[0]).num_channels == 2
    _assert_same_dataset(nnunet, msd)


def test_convert_msd_to_nnunet(brats_pair: tuple[Path, Path], tmp_path: Path) -> None:
    nnunet, msd = brats_pair
    converted = msd_to_nnunet(msd, tmp_path / "converted")
    assert sorted(p.name for p in (converted / "imagesTr").iterdir()) == sorted(
        p.name for p in (nnunet / "imagesTr").iterdir())
    assert read_image(converted / "imagesTr" / "brats_pat0003_0001.nii.gz").num_channels == 1
    _assert_same_dataset(nnunet, converted)


def test_convert_refuses_existing_destination_and_nnunet_input(brats_pair: tuple[Path, Path]) -> None:
    nnunet, msd = brats_pair
    with pytest.raises(MedsegError, match="destination exists"):
        msd_to_nnunet(msd, nnunet)
    with pytest.raises(MedsegError, match="not an MSD dataset"):
        msd_to_nnunet(nnunet, nnunet.parent / "new")
    assert not (nnunet.parent / "new").exists()


def test_rgb_png_dataset_reads_three_channels_from_one_file() -> None:
    dataset = open_dataset(_dataset("drive"))
    assert dataset.expected_files_per_case == 1 and len(dataset.cases) == 20
    case = dataset.cases[0]
    image = dataset.read_image(case)
    assert image.num_channels == 3 and image.spatial_shape == (584, 565)
    assert case.extra_files["fovTr"].name == f"{case.case_id}.png"


def test_multichannel_nnunet_case_stacks_channels_in_order() -> None:
    dataset = open_dataset(_dataset("brats2013_mini"))
    case = dataset.cases[0]
    image = dataset.read_image(case)
    assert image.num_channels == 2
    np.testing.assert_array_equal(image.array[1], read_image(case.image_files[1]).array[0])
    assert dataset.spec.regions["whole_tumor"] == [1, 2, 3, 4]


def test_missing_dataset_json_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MedsegError, match="dataset.json: file not found"):
        open_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text('{"labels": {"background": 0}}')
    with pytest.raises(MedsegError, match="neither 'channel_names' nor 'modality'"):
        open_dataset(tmp_path)
