"""No half-written output and nothing left behind: files are written under a temporary name in their folder and
renamed when complete, folders are built under a temporary name and renamed when complete, and the temporaries
that a killed process left are found by one naming rule and removed when a command resumes or rewrites a folder.

The naming rule (the only one; :func:`is_temporary` recognises exactly these)::

    .<target name>.<writer pid>-<8 hex>.part<suffix>     a file being written   (atomic_write)
    .<target name>.<writer pid>-<8 hex>.partial          a folder being built  (atomic_folder)

The writer's process id in the name says whether a temporary is stale: its writer is no longer running, so no one
will ever rename it (a kill -9 in the middle of a write). A temporary whose writer is alive is in flight (another
fold trained into the same model folder, another thread) and is never touched (a recycled pid only delays the
removal). Names from earlier medseg versions (``.<target>.<8 random [a-z0-9_]>.part<suffix>`` files,
``.<target>.partial`` folders) carry no writer and count as stale.

Modes: files are created with ``0o666`` and folders with ``0o777``, so the kernel applies the process umask (and a
folder's default ACL) exactly as for any ``open()``/``mkdir()``; no umask is read or changed, so there is no race
with other threads.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Collection, Iterator

from medseg.workers import process_alive

_TOKEN = r"(?:(?P<pid>\d+)-[0-9a-f]{8}|(?P<legacy>[a-z0-9_]{8}))"
_FILE = re.compile(rf"^\.(?P<target>.+)\.{_TOKEN}\.part(?:\.[^.]+)*$")
_FOLDER = re.compile(r"^\.(?P<target>.+?)(?:\.(?P<pid>\d+)-[0-9a-f]{8})?\.partial$")


def _token() -> str:
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def temporary_name(target: str, suffix: str = "") -> str:
    """The name of a temporary file for ``target``: ``.<target>.<pid>-<8 hex>.part<suffix>``.

    ``suffix`` ends the name (writers that choose a format by the file name need the real suffix there, e.g.
    ``".nii.gz"``); a leading ``".part"`` in it is accepted and not repeated.
    """
    if suffix == ".part" or suffix.startswith(".part."):
        suffix = suffix[len(".part"):]
    return f".{target}.{_token()}.part{suffix}"


def is_temporary(path: str | Path) -> bool:
    """True when ``path``'s name is one that :func:`atomic_write` or :func:`atomic_folder` gives its temporaries
    (the rule in this module's docstring); user files such as ``scan.part.nii.gz`` or ``.hidden`` are not."""
    name = Path(path).name
    return bool(_FILE.match(name) or _FOLDER.match(name))


def _stale_target(entry: os.DirEntry) -> str | None:
    """The target name of a temporary whose writer is gone; None for anything else."""
    is_folder = entry.is_dir(follow_symlinks=False)
    match = (_FOLDER if is_folder else _FILE).match(entry.name)
    if match is None:
        return None
    pid = match["pid"]
    if pid is not None and process_alive(int(pid)):
        return None
    return match["target"]


def remove_stale_temporaries(folder: str | Path, *, recursive: bool = False,
                             targets: Collection[str] | None = None) -> list[Path]:
    """Remove the temporaries in ``folder`` (and its sub-folders with ``recursive``) whose writer is no longer
    running; with ``targets``, only those of files or folders with these names. Anything that does not match
    the naming rule is left alone. Returns the removed paths; a missing ``folder`` is not an error."""
    removed: list[Path] = []
    pending = [Path(folder)]
    while pending:
        current = pending.pop()
        try:
            entries = list(os.scandir(current))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            target = _stale_target(entry)
            path = Path(entry.path)
            if target is not None and (targets is None or target in targets):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
            elif recursive and entry.is_dir(follow_symlinks=False) and not is_temporary(path):
                pending.append(path)
    return removed


def _create_temporary(folder: Path, target: str, suffix: str) -> Path:
    """Create an empty temporary file (``0o666`` less the umask) that no other writer can have opened."""
    while True:
        temporary = folder / temporary_name(target, suffix)
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666))
        except FileExistsError:  # 32 random bits collided: draw again
            continue
        return temporary


def atomic_write(path: str | Path, write: Callable[[Path], None], *, suffix: str | None = None,
                 durable: bool = False) -> Path:
    """Call ``write(temporary)`` for a temporary file next to ``path``, then rename it to ``path``.

    ``suffix`` ends the temporary name after ``.part`` (default ``path.suffix``; writers that choose a format by the
    file name need the real suffix there, e.g. ``".nii.gz"``). ``durable`` fsyncs the file before the rename, so
    that a power loss leaves either the old or the new file (checkpoints). On any error the temporary file is
    removed. The file gets the mode of a plain ``open()``: ``0o666`` less the umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _create_temporary(path.parent, path.name, path.suffix if suffix is None else suffix)
    try:
        write(temporary)
        if durable:
            with open(temporary, "rb+") as stream:
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.lexists(temporary):
            os.remove(temporary)
    return path


@contextmanager
def atomic_folder(destination: str | Path) -> Iterator[Path]:
    """Yield a sibling temporary folder to fill; it becomes ``destination`` when the block ends without error
    and is deleted when it raises. ``destination`` must not exist. Temporary folders for ``destination`` that a
    killed run left are removed first; folders get ``0o777`` less the umask."""
    destination = Path(destination)
    remove_stale_temporaries(destination.parent, targets={destination.name})
    partial = destination.with_name(f".{destination.name}.{_token()}.partial")
    partial.mkdir(parents=True)
    try:
        yield partial
        os.replace(partial, destination)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
