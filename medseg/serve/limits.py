"""What the server refuses before it spends memory: images whose header declares more than ``max_image_voxels``
values (checked before decoding, so that a few MB of compressed file cannot make gigabytes of array), and paths
that cannot name a file (a NUL byte, an unresolvable name). Both are user errors: 413 and 400."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import Callable, TypeVar

from medseg.errors import MedsegError
from medseg.io import Image, ImageHeader, read_header, read_image

# 512^3 values: a 512 x 512 x 512 CT (a clinical CT of 300-500 slices fits), a 4D MRI of 4 x 240 x 240 x 155 nine
# times over, or an 11585^2 grey photo. As float32 that is 512 MiB decoded, so that the images the server keeps
# open (``SessionStore``'s byte budget) and one more being decoded stay within a few GiB.
DEFAULT_MAX_IMAGE_VOXELS = 512 ** 3
T = TypeVar("T")
MAX_PATH_CHARACTERS = 4096


class ImageTooLarge(MedsegError):
    """An image whose header declares more values than the server's limit (answered with 413)."""


class ImageReader:
    """Reads images for the server: the header first (refused over ``max_voxels``), then the pixels, one image at
    a time (a lock), so that concurrent uploads cannot decode several large images at once."""

    def __init__(self, max_voxels: int = DEFAULT_MAX_IMAGE_VOXELS):
        if max_voxels < 1:
            raise MedsegError(f"the image size limit {max_voxels} must be at least 1 voxel",
                              fix="pass --max-image-voxels of at least 1")
        self.max_voxels = int(max_voxels)
        self._decoding = threading.Lock()

    def read(self, path: Path, *, name: str | None = None) -> Image:
        """``read_image(path)`` after the header check; errors name the file as ``name`` (an upload's own name
        instead of its temporary path)."""
        with self._decoding:
            self.check(path, name=name)
            return self._named(read_image, path, name)

    def check(self, path: Path, *, name: str | None = None) -> ImageHeader:
        """The header of ``path``; ``ImageTooLarge`` when it declares more than ``max_voxels`` values."""
        header = self._named(read_header, path, name)
        if header.values > self.max_voxels:
            shape = "x".join(str(s) for s in header.shape)
            raise ImageTooLarge(f"the header declares a {shape} (channels x spatial) image, {header.values:,} "
                                f"values, over the server's limit of {self.max_voxels:,}", path=name or str(path),
                                fix=self.fix)
        return header

    @staticmethod
    def _named(function: Callable[[Path], T], path: Path, name: str | None) -> T:
        """``function(path)``, its ``MedsegError`` naming the file as ``name``."""
        try:
            return function(path)
        except MedsegError as error:
            raise MedsegError(str(error).replace(str(path), name or str(path))) from None

    @property
    def fix(self) -> str:
        return (f"crop or downsample the image to at most {self.max_voxels:,} values (channels x voxels), or "
                "restart the server (medseg interactive or medseg serve) with a larger --max-image-voxels if this "
                "machine has the memory")


def parse_path(text: str) -> Path:
    """``text`` as an absolute path with links resolved; ``MedsegError`` (400) when it cannot name a file."""
    if "\x00" in text:
        raise MedsegError("the path contains a NUL byte, which no file name can hold",
                          fix="send the path as plain text, without control characters")
    if len(text) > MAX_PATH_CHARACTERS:
        raise MedsegError(f"the path is {len(text)} characters long, over {MAX_PATH_CHARACTERS}",
                          fix="send a shorter path")
    try:
        return Path(text).expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as error:  # a symlink loop, an unknown ~user, a name too long
        raise MedsegError(f"cannot resolve the path '{text[:200]}' ({error})", fix="send an existing path") from None


def path_kind(path: Path) -> str:
    """``"folder"``, ``"file"`` (regular), ``"missing"`` or ``"other"`` (a device, a pipe); ``MedsegError`` (400)
    when the system cannot look at it (a name too long, no permission)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except OSError as error:
        raise MedsegError(f"cannot look at this path ({error.strerror or error})", path=str(path)[:300],
                          fix="send an existing path with shorter names, readable by the server") from None
    return "folder" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"
