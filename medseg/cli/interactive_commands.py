"""The promptable-segmentation commands (heavy imports inside the functions)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def interactive(
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model folder of a promptable model "
                                         "(medseg train-interactive)."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Use a classical method instead of a model: "
                                           "random_walker, watershed or grabcut."),
    image: Optional[Path] = typer.Option(None, "--image", "-i", help="An image to open at start."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (127.0.0.1: this computer only)."),
    port: int = typer.Option(8765, "--port", help="Port to listen on."),
    token: Optional[str] = typer.Option(None, "--token", help="Access token (default: a new random one)."),
    allow_root: Optional[List[Path]] = typer.Option(None, "--allow-root", help="Folder whose files the page may "
                                                    "open and write by path; repeat for more (default: the "
                                                    "current folder)."),
    max_upload_mb: int = typer.Option(1024, "--max-upload-mb", help="Largest upload accepted, in MiB."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (for --model)."),
) -> None:
    """Segment images in the browser with clicks, boxes and scribbles; save the mask in the image's geometry."""
    import secrets

    from medseg.errors import MedsegError

    if (model is None) == (baseline is None):
        raise MedsegError("give either --model or --baseline",
                          fix="--model MODEL_FOLDER, or --baseline random_walker to work without a trained model")
    if max_upload_mb < 1:
        raise MedsegError(f"--max-upload-mb {max_upload_mb} must be at least 1")
    if image is not None and not image.exists():
        raise MedsegError("file not found", path=image, fix="check the --image path")
    if model is not None:
        from medseg.interactive.predictor import load_segmenter

        segmenter = load_segmenter(model, device=device)
    else:
        from medseg.interactive.baselines import create_baseline

        segmenter = create_baseline(baseline)

    import uvicorn

    from medseg.serve.interactive_app import create_app

    token = token or secrets.token_urlsafe(24)
    app = create_app(segmenter, token=token, allowed_roots=allow_root or [Path.cwd()], image=image,
                     max_upload_bytes=max_upload_mb * 2**20)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    typer.echo(f"medseg interactive ({getattr(segmenter, 'name', 'model')}): open "
               f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/?token={token}")
    uvicorn.run(app, host=host, port=port, log_level="warning")
