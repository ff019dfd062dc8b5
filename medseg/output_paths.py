"""Checks that every writing command runs on its output before any work: the place is writable, it is not inside
an input dataset (a prediction written into ``labelsTr`` would replace the ground truth), and files already there
are replaced only when the user asked for it (``--overwrite``).

Nothing is created here: the writable check probes the nearest existing folder with a temporary file and removes
it, so a command that stops later leaves no empty output folder behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from medseg.errors import MedsegError

DATASET_MARKER = "dataset.json"


def dataset_root(path: str | Path) -> Path | None:
    """The nearest folder at or above ``path`` that holds a ``dataset.json`` (a raw dataset), or None."""
    for folder in [Path(path), *Path(path).parents]:
        if (folder / DATASET_MARKER).is_file():
            return folder
    return None


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _refuse_inside_inputs(output: Path, inputs: Iterable[str | Path]) -> None:
    """Refuse ``output`` (resolved) inside a dataset, equal to or inside an input folder, or equal to the folder
    of an input file."""
    root = dataset_root(output)
    if root is not None:
        raise MedsegError(f"the output is inside the dataset {root}; writing there would mix outputs with (or "
                          "replace) its images and labels", path=output,
                          fix=f"choose an output folder outside {root}, e.g. {root.parent / (root.name + '_out')}")
    for item in inputs:
        source = Path(item).expanduser().resolve()
        folder = source if source.is_dir() else source.parent
        if (_is_within(output, folder) if source.is_dir() else output == folder):
            raise MedsegError(f"the output is the input folder {folder} (or inside it); its files would be "
                              "overwritten", path=output, fix="choose an output folder outside the input")


def _nearest_existing(path: Path) -> Path:
    for folder in [path, *path.parents]:
        if folder.exists():
            return folder
    return Path(path.anchor or "/")


def _require_writable(output: Path, shown: Path) -> None:
    existing = _nearest_existing(output)
    if not existing.is_dir():
        raise MedsegError(f"cannot create the output: {existing} is a file, not a folder", path=shown,
                          fix="choose an output path whose folders are folders")
    try:
        handle, probe = tempfile.mkstemp(prefix=".medseg-write-test-", dir=existing)
    except OSError as error:
        raise MedsegError(f"the output folder is not writable ({existing}: {error.strerror or error})", path=shown,
                          fix="choose a folder you can write to, or change its permissions") from None
    os.close(handle)
    os.remove(probe)


def prepare_output_dir(path: str | Path, *, inputs: Sequence[str | Path] = (), overwrite: bool = False,
                       names: Iterable[str] = (), must_not_exist: bool = False) -> Path:
    """Check the output folder ``path`` before any work and return it (resolved; not created).

    ``inputs``: the files and folders the command reads (the output may not be one of them, inside one of the
    folders, or inside any dataset). ``names``: the file names the command will write there; an existing one is
    an error unless ``overwrite``. ``must_not_exist``: the command builds the folder whole (``convert``).
    Raises ``MedsegError`` naming the path and the fix.
    """
    shown = Path(path)
    output = shown.expanduser().resolve()
    if output.exists() and not output.is_dir():
        raise MedsegError("the output exists and is a file, not a folder", path=shown,
                          fix="choose a folder for the output")
    if must_not_exist and output.exists():
        raise MedsegError("the output folder exists", path=shown, fix="choose a new folder or delete it")
    _refuse_inside_inputs(output, inputs)
    _require_writable(output, shown)
    if not overwrite and output.is_dir():
        existing = sorted(name for name in set(names) if (output / name).exists())
        if existing:
            more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
            raise MedsegError(f"{len(existing)} output file(s) exist already ({', '.join(existing[:3])}{more})",
                              path=shown, fix="pass --overwrite to replace them, or choose another output folder")
    return output


def prepare_output_file(path: str | Path, *, inputs: Sequence[str | Path] = (), overwrite: bool = True) -> Path:
    """The checks of ``prepare_output_dir`` for one output file ``path`` (its folder checked, the file itself not
    a folder, and an existing file refused unless ``overwrite``). Returns ``path`` resolved."""
    shown = Path(path)
    output = shown.expanduser().resolve()
    if output.is_dir():
        raise MedsegError("the output is a folder, not a file", path=shown, fix="name a file, e.g. out.json")
    prepare_output_dir(output.parent, inputs=inputs, overwrite=overwrite, names=[output.name])
    return output
