"""``medseg model ...``: model folders. ``upgrade`` converts a folder written before medseg's one model-folder
format (``medseg.config.model_upgrade``)."""

from __future__ import annotations

from pathlib import Path

import typer


def upgrade(folder: Path = typer.Argument(..., help="A model folder of medseg train or medseg train-interactive.")
            ) -> None:
    """Convert an old model folder in place (schema-1 model.json, or interactive.json + model.safetensors); prints
    each step, or 'already current'. Safe to run again after an interruption."""
    from medseg.config.model_upgrade import upgrade_model_folder

    lines = upgrade_model_folder(folder)
    for line in lines:
        typer.echo(f"{folder}: {line}")
    if not lines:
        typer.echo(f"{folder}: already current")
