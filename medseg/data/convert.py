"""Convert a Medical Segmentation Decathlon dataset (4D images) into the nnU-Net v2 raw layout."""

from __future__ import annotations

from pathlib import Path

from medseg.atomic import atomic_folder
from medseg.config import write_json_atomic
from medseg.data.layout import open_dataset
from medseg.errors import MedsegError
from medseg.io import read_image, write_image
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
            image = read_image(case.image_files[0])
            if image.num_channels != len(dataset.spec.channel_names):
                raise MedsegError(f"{image.num_channels} channel(s), dataset.json declares "
                                  f"{len(dataset.spec.channel_names)}", path=case.image_files[0],
                                  fix="fix 'modality' in dataset.json or the image")
            for channel in range(image.num_channels):
                single = image.with_array(image.array[channel : channel + 1])
                single.metadata.pop("channel_spacing", None)
                write_image(single, partial / "imagesTr" / f"{case.case_id}_{channel:04d}{file_ending}")
            if case.label_file is not None:
                write_image(read_image(case.label_file), partial / "labelsTr" / f"{case.case_id}{file_ending}")
        for case in dataset.test_cases:
            image = read_image(case.image_files[0])
            for channel in range(image.num_channels):
                write_image(image.with_array(image.array[channel : channel + 1]),
                            partial / "imagesTs" / f"{case.case_id}_{channel:04d}{file_ending}")
        spec = dataset.spec
        spec.file_ending = file_ending
        spec.num_training = len(dataset.cases)
        write_json_atomic(spec.to_nnunet_json(), partial / "dataset.json")
    return destination
