"""The only module that touches the process environment; command-line flags win over anything here."""

from __future__ import annotations

import os


def apply_runtime_defaults() -> None:
    """Defaults for the libraries medseg drives, set before torch is imported (the user's own setting wins).

    ``OMP_WAIT_POLICY=PASSIVE``: idle OpenMP threads sleep instead of spinning. On a 2-core machine that is busy
    with anything else, spinning threads fight the other work; measured here under load, `medseg predict` on the
    demo model took 67 s with torch's default and 14 s with PASSIVE.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
