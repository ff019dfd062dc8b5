"""The PACS connection of the DICOMweb commands and what ``medseg predict --dicomweb`` runs (heavy imports inside
the functions)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def connect(url: str, username: Optional[str], password_file: Optional[Path], token_file: Optional[Path]):
    """A ``PacsConnection``; secrets are read from files (a password on the command line is visible to every
    user of the machine in the process list)."""
    from medseg.errors import MedsegError
    from medseg.serve.dicomweb import PacsConnection

    def secret(path: Optional[Path], what: str) -> Optional[str]:
        if path is None:
            return None
        try:
            value = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as error:
            raise MedsegError(f"cannot read the {what} ({error.__class__.__name__})", path=path,
                              fix=f"pass a text file holding the {what}") from None
        if not value:
            raise MedsegError(f"the {what} file is empty", path=path, fix=f"write the {what} into it")
        return value

    password = secret(password_file, "password")
    if username is not None and password is None:
        raise MedsegError("--username needs --password-file", fix="pass a file holding the password")
    return PacsConnection(url, username=username, password=password, token=secret(token_file, "token"))


def predict_from_dicomweb(pacs, predictor, model: Path, study: str, series: Optional[List[str]]) -> None:
    """What ``medseg predict --dicomweb`` runs: predict one study's series, store the SEG, say what was stored."""
    from medseg.inference.label_outputs import model_label_names
    from medseg.serve.dicomweb import input_series_count, predict_study, select_series

    series_uids = list(series or []) or [s.series_uid for s in select_series(pacs.series(study),
                                                                             input_series_count(predictor))]
    stored = predict_study(pacs, predictor, study, series_uids, model_label_names(model, predictor.label_values))
    typer.echo(f"stored DICOM SEG series {stored.seg_series_uid} in study {study} at {pacs.url}")
