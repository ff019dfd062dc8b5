"""JSON files written atomically (temporary name, then rename) and read with a clear error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medseg.atomic import atomic_write
from medseg.errors import MedsegError


def write_json_atomic(data: Any, path: str | Path) -> Path:
    return atomic_write(path, lambda temporary: temporary.write_text(json.dumps(data, indent=2) + "\n"))


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise MedsegError("file not found", path=path, fix="check the path")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MedsegError(f"not valid JSON ({error})", path=path, fix="repair or regenerate the file") from None
