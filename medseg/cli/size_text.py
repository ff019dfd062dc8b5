"""Sizes written as ``AxBxC`` on the command line (``--size 1x128x128``, ``--block 4x16x16``)."""

from __future__ import annotations

from typing import Sequence

from medseg.errors import MedsegError


def sizes_from_text(text: str, option: str, *, shape: str, example: str,
                    lengths: Sequence[int] | None = None) -> list[int]:
    """``"4x16x16"`` -> ``[4, 16, 16]``: whole numbers of at least 1 joined by ``x`` (``lengths``: how many are
    allowed); anything else is one error naming ``option``, what it should be (``shape``) and an ``example``."""
    try:
        values = [int(v) for v in text.lower().split("x")]
    except ValueError:
        values = []
    if not values or (lengths and len(values) not in lengths) or min(values) < 1:
        raise MedsegError(f"{option} {text!r} is not {shape}", fix=f"e.g. {example}")
    return values
