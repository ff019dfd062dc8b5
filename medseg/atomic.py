"""No half-written output: files are written under a temporary name in their folder and renamed when complete;
folders are built under a temporary name and renamed when complete."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def atomic_write(path: str | Path, write: Callable[[Path], None], *, suffix: str | None = None,
                 durable: bool = False) -> Path:
    """Call ``write(temporary)`` for a temporary file next to ``path``, then rename it to ``path``.

    ``suffix`` ends the temporary name (default ``".part" + path.suffix``; writers that choose a format by the
    file name need the real suffix there). ``durable`` fsyncs the file before the rename, so that a power loss
    leaves either the old or the new file (checkpoints). On any error the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or f".part{path.suffix}",
                                         dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        if durable:
            with open(temporary, "rb+") as stream:
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


@contextmanager
def atomic_folder(destination: str | Path) -> Iterator[Path]:
    """Yield a sibling temporary folder to fill; it becomes ``destination`` when the block ends without error
    and is deleted when it raises. ``destination`` must not exist."""
    destination = Path(destination)
    partial = destination.with_name(f".{destination.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
        os.replace(partial, destination)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
