"""``medseg serve``: the prediction service (heavy imports inside the function)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def serve(
    models: List[Path] = typer.Argument(..., help="Model folder(s) (medseg train); each is served under its "
                                        "folder name."),
    tokens: Path = typer.Option(..., "--tokens", help="Tokens file: one bearer token per line, or JSON "
                                '{"tokens": [{"token", "name", "requests_per_minute", "burst"}]}.'),
    state: Path = typer.Option(..., "--state", help="Folder for the job database, uploads and results (kept "
                               "across restarts)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (127.0.0.1: this computer only)."),
    port: int = typer.Option(8770, "--port", help="Port to listen on."),
    allowed_root: Optional[List[Path]] = typer.Option(None, "--allowed-root", help="Folder whose files and DICOM "
                                                      "folders jobs may name by path; repeat for more (default: "
                                                      "none, uploads only)."),
    workers: int = typer.Option(1, "--workers", help="Jobs predicted at once."),
    queue: int = typer.Option(16, "--queue", help="Jobs that may wait; one more is refused with 429."),
    max_upload_mb: int = typer.Option(1024, "--max-upload-mb", help="Largest upload accepted, in MiB."),
    max_image_voxels: int = typer.Option(512 ** 3, "--max-image-voxels", help="Largest image predicted, in "
                                         "values (channels x voxels) as its header declares them."),
    rate_limit: float = typer.Option(120.0, "--rate-limit", help="Requests per minute for each token of a "
                                     "one-per-line tokens file (a JSON tokens file sets its own; 0: no limit)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
) -> None:
    """Serve models over HTTP: prediction jobs (upload or path), their status and label files, the models'
    WeightsCards; bearer tokens, rate limits, a bounded queue, jobs kept in SQLite across restarts."""
    from medseg.errors import MedsegError

    for name, value in (("--workers", workers), ("--queue", queue), ("--max-upload-mb", max_upload_mb),
                        ("--max-image-voxels", max_image_voxels)):
        if value < 1:
            raise MedsegError(f"{name} {value} must be at least 1")
    if rate_limit < 0:
        raise MedsegError(f"--rate-limit {rate_limit} must be 0 (no limit) or more")
    for root in allowed_root or []:
        if not root.is_dir():
            raise MedsegError("allowed root is not a folder", path=root, fix="pass an existing folder")
    from medseg.serve.auth import read_tokens_file

    token_set = read_tokens_file(tokens, default_per_minute=rate_limit or None)

    import uvicorn

    from medseg.serve.prediction_app import create_app
    from medseg.serve.served_models import load_models

    app = create_app(load_models(models, device=device), tokens=token_set, state=state,
                     allowed_roots=allowed_root or [], workers=workers, max_queued=queue,
                     max_upload_bytes=max_upload_mb * 2**20, max_image_voxels=max_image_voxels)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    typer.echo(f"medseg serve: {', '.join(m.resolve().name for m in models)} at "
               f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/v1 ({workers} worker(s), queue "
               f"{queue}, state {state})")
    uvicorn.run(app, host=host, port=port, log_level="warning")
