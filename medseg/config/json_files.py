"""JSON files written atomically (temporary name, then rename) and read with a clear error."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from medseg.errors import MedsegError


def write_json_atomic(data: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(data, stream, indent=2, sort_keys=False)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise MedsegError("file not found", path=path, fix="check the path")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MedsegError(f"not valid JSON ({error})", path=path, fix="repair or regenerate the file") from None
