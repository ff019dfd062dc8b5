"""``medseg dicomweb watch`` (heavy imports inside the function)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def watch(
    url: str = typer.Option(..., "--url", help="The DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web."),
    model: Path = typer.Option(..., "-m", "--model", help="Model folder."),
    state: Path = typer.Option(..., "--state", help="JSON file of the studies seen (created; one watcher each)."),
    modality: Optional[str] = typer.Option(None, "--modality", help="Only studies with a series of this modality "
                                           "(e.g. MR, CT)."),
    series_description: Optional[List[str]] = typer.Option(None, "--series-description", help="A regular "
                                                           "expression searched in SeriesDescription, one per "
                                                           "model channel in order (default: a one-channel model "
                                                           "takes a study's only image series)."),
    interval: float = typer.Option(60.0, "--interval", help="Seconds between polls."),
    once: bool = typer.Option(False, "--once", help="Poll once, process what is new, and exit."),
    username: Optional[str] = typer.Option(None, "--username", help="HTTP basic user (with --password-file)."),
    password_file: Optional[Path] = typer.Option(None, "--password-file", help="File holding the password."),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="File holding a bearer token."),
    folds: Optional[List[str]] = typer.Option(None, "-f", "--folds", help="Folds to ensemble (default: all)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    no_tta: bool = typer.Option(False, "--no-tta", help="No mirroring test-time augmentation."),
) -> None:
    """Poll a PACS for new studies, segment each once and store a DICOM SEG back (state kept in --state)."""
    from medseg.cli.pacs import connect
    from medseg.cli.predict_commands import _folds
    from medseg.errors import MedsegError
    from medseg.inference.label_outputs import model_label_names
    from medseg.inference.predictor import Predictor
    from medseg.serve.dicomweb import input_series_count
    from medseg.serve.dicomweb_watch import watch as run_watch

    if not (model / "model.json").is_file():
        raise MedsegError("model folder not found (no model.json)", path=model,
                          fix="pass the folder that medseg train wrote")
    pacs = connect(url, username, password_file, token_file)
    predictor = Predictor.from_folder(model, folds=_folds(folds), device=device, tta=not no_tta)
    outcomes = run_watch(pacs, predictor, state, channels=input_series_count(predictor),
                         label_names=model_label_names(model, predictor.label_values), modality=modality,
                         descriptions=list(series_description or []), interval=interval, once=once,
                         report=lambda o: typer.echo(f"study {o.study_uid}: {o.status} ({o.detail})"))
    if once:
        typer.echo(f"processed {len(outcomes)} new stud{'y' if len(outcomes) == 1 else 'ies'}")
