"""``medseg report``: a benchmark folder or a model folder as one self-contained HTML page (``medseg.report``)."""

from __future__ import annotations

from pathlib import Path

import typer


def report(
    folder: Path = typer.Argument(..., help="A folder that medseg benchmark wrote (benchmark.json), or a model "
                                  "folder."),
    output: Path = typer.Option(None, "-o", "--output", help="The HTML file (default: FOLDER/report.html)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing report file."),
) -> None:
    """Write one HTML page (no CDN; pictures embedded): tables, ranks, box plots, overlays, curves, the plan."""
    from medseg.errors import MedsegError
    from medseg.report import write_report

    if not folder.is_dir():
        raise MedsegError("folder not found", path=folder, fix="pass a benchmark folder or a model folder")
    output = output if output is not None else folder / "report.html"
    if output.exists() and not overwrite:
        raise MedsegError("the report file exists already", path=output, fix="pass --overwrite or another -o")
    typer.echo(f"wrote {write_report(folder, output)}")
