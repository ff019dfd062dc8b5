"""Convert a Medical Segmentation Decathlon dataset (4D images) into the nnU-Net v2 raw layout."""

from __future__ import annotations

from pathlib import Path

from medseg.atomic import atomic_folder
from medseg.config import write_json_atomic
from medseg.data.layout import SOURCE_FILES, open_dataset
from medseg.data.validate import Problem, check_finite, problems_error, validated_case
from medseg.errors import MedsegError
from medseg.io import Image, read_image, write_image
from medseg.progress import track


def msd_to_nnunet(source: str | Path, destination: str | Path, *, file_ending: str = ".nii.gz",
                  progress: bool | None = None) -> Path:
    """Write the MSD dataset at ``source`` as an nnU-Net v2 dataset at ``destination``.

    Each 4D image becomes one 3D file per channel (``<case>_<CCCC>``), labels are copied onto the same grid, and
    dataset.json is rewritten in the v2 dialect. The output appears only when complete (built in a sibling
    temporary folder, then renamed); an existing destination is an error.
    """
    source, destination = Path(source), Path(destination)
    dataset = open_dataset(source)
    if dataset.layout != "msd":
        raise MedsegError("not an MSD dataset (dataset.json has no 'training' list with 4D images)", path=source,
                          fix="this dataset is already in the nnU-Net layout; use it as it is")
    if destination.exists():
        raise MedsegError("destination exists", path=destination, fix="choose a new folder or delete it")
    with atomic_folder(destination) as partial:
        for case in track(dataset.cases, "converting", enabled=progress):
            image, label, _ = validated_case(dataset, case)  # checked as medseg check does; a bad case leaves nothing
            _write_channels(image, partial / "imagesTr", case.case_id, file_ending)
            write_image(label, partial / "labelsTr" / f"{case.case_id}{file_ending}")
        for case in dataset.test_cases:
            image = read_image(case.image_files[0])
            problems: list[Problem] = []
            check_finite(case.image_files[0], image, problems)
            if image.num_channels != len(dataset.spec.channel_names):
                problems.append(Problem(case.image_files[0], f"{image.num_channels} channel(s), dataset.json "
                                        f"declares {len(dataset.spec.channel_names)}",
                                        "fix 'modality' in dataset.json or the image"))
            if problems:
                raise problems_error(problems, dataset.root)
            _write_channels(image, partial / "imagesTs", case.case_id, file_ending)
        spec = dataset.spec
        spec.file_ending = file_ending
        spec.num_training = len(dataset.cases)
        write_json_atomic(spec.to_nnunet_json(), partial / "dataset.json")
    return destination


def _write_channels(image: Image, folder: Path, case_id: str, file_ending: str) -> None:
    """One 3D file ``<case>_<CCCC>`` per channel of ``image`` ``(C, *spatial)``."""
    for channel in range(image.num_channels):
        single = image.with_array(image.array[channel : channel + 1])
        single.metadata.pop("channel_spacing", None)
        single.metadata.pop(SOURCE_FILES, None)
        write_image(single, folder / f"{case_id}_{channel:04d}{file_ending}")
