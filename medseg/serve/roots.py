"""Paths a client may name, confined to the server's allowed roots before anything under them is read.

A path is refused when it is relative, holds a ``..`` part or a NUL byte (422), or when it, or the file it
resolves to through symlinks, lies outside every root (403). A folder (a DICOM series) is refused when any entry
resolves outside the roots, and a detached header (``.mhd``, ``.nhdr``) when its data file does. Only names and
link targets are looked at (``lstat``/``readlink``), never file contents.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Sequence

from medseg.errors import MedsegError
from medseg.io.sitk_io import detached_data_file
from medseg.serve.limits import MAX_PATH_CHARACTERS


class PathRefused(MedsegError):
    """A path the server will not read: ``status`` 403 (outside the roots) or 422 (not a usable path)."""

    def __init__(self, message: str, *, status: int, fix: str):
        super().__init__(message, fix=fix)
        self.status = status


def confine(text: str, roots: Sequence[Path]) -> Path:
    """The resolved path of ``text`` when it and everything it points to lie under one of ``roots`` (resolved
    folders); else ``PathRefused``. ``MedsegError`` (not found) when it does not exist."""
    if not roots:
        raise PathRefused("the server was started without allowed roots, so it reads no path", status=403,
                          fix="upload the file instead, or restart `medseg serve` with --allowed-root FOLDER")
    shown = text[:300]
    if "\x00" in text or len(text) > MAX_PATH_CHARACTERS:
        raise PathRefused("not a usable path (a NUL byte, or too long)", status=422, fix="send a plain path")
    if not os.path.isabs(text):
        raise PathRefused(f"'{shown}' is a relative path", status=422, fix="send an absolute path under "
                          f"one of the allowed roots: {_listed(roots)}")
    if ".." in PurePosixPath(text).parts:
        raise PathRefused(f"'{shown}' holds a '..' part", status=422, fix="send the path without '..'")
    lexical = Path(os.path.normpath(text))
    _require_inside(lexical, roots, shown)
    try:
        resolved = lexical.resolve(strict=True)
    except FileNotFoundError:
        raise MedsegError("file not found", path=shown, fix="send the path of an existing file or folder") from None
    except (OSError, RuntimeError) as error:  # a symlink loop, a name too long, no permission
        raise PathRefused(f"cannot resolve '{shown}' ({error})", status=422, fix="send an existing path") from None
    _require_inside(resolved, roots, shown)
    if resolved.is_dir():
        for entry in os.scandir(resolved):
            if entry.is_symlink():
                _require_inside(Path(entry.path).resolve(), roots, f"{shown} (its entry {entry.name[:100]})")
    data_file = detached_data_file(resolved)
    if data_file is not None:
        _require_inside((resolved.parent / data_file).resolve(), roots, f"{shown} (its data file)")
    return resolved


def _require_inside(path: Path, roots: Sequence[Path], shown: str) -> None:
    if not any(path == root or path.is_relative_to(root) for root in roots):
        raise PathRefused(f"'{shown}' lies outside the allowed roots ({_listed(roots)})", status=403,
                          fix="use a path under an allowed root, upload the file instead, or restart the "
                              "server with that folder allowed")


def _listed(roots: Sequence[Path]) -> str:
    return ", ".join(str(root) for root in roots)
