"""The one error type for user mistakes: the CLI prints its message in one line and exits with code 2."""

from __future__ import annotations

from pathlib import Path


class MedsegError(Exception):
    """A user error (bad path, corrupt file, mismatched geometry, ...): message names the file and the fix."""

    def __init__(self, message: str, *, path: str | Path | None = None, fix: str | None = None):
        self.path = None if path is None else Path(path)
        self.fix = fix
        text = message if path is None else f"{path}: {message}"
        if fix:
            text = f"{text} (fix: {fix})"
        super().__init__(text)
