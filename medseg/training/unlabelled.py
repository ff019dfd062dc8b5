"""Where unlabelled images come from (``medseg train --unlabelled``, ``medseg pretrain``): dataset folders (every
training and test case's images, labels ignored) and folders of image files (grouped into cases as ``medseg
predict -i`` groups them: ``<case>_<CCCC><suffix>`` files are the channels of one case)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from medseg.errors import MedsegError
from medseg.preprocess.unlabelled import UnlabelledImage


def unlabelled_images(sources: Sequence[str | Path]) -> list[UnlabelledImage]:
    """``[(case id, channel files)]`` of every source in order; with several sources each id is prefixed by its
    source folder's name (``drive__21``), so cases of different datasets never share an id."""
    from medseg.data.layout import open_dataset
    from medseg.inference.run import collect_cases

    if not sources:
        raise MedsegError("no unlabelled image source", fix="pass a dataset folder or a folder of images")
    names = [Path(source).resolve().name for source in sources]
    if len(set(names)) != len(names):
        raise MedsegError("two unlabelled sources have the same folder name", path=sources[0],
                          fix="pass each folder once (or rename one)")
    images: list[UnlabelledImage] = []
    for source, name in zip(sources, names):
        source = Path(source)
        if (source / "dataset.json").is_file():
            dataset = open_dataset(source)
            found = [(c.case_id, list(c.image_files)) for c in [*dataset.cases, *dataset.test_cases] if c.image_files]
        else:
            found = [(c.case_id, list(c.files)) for c in collect_cases(source)]
        if not found:
            raise MedsegError("no images in this source", path=source, fix="pass a folder with image files")
        prefix = f"{name}__" if len(sources) > 1 else ""
        images += [(prefix + case_id, files) for case_id, files in found]
    return images
