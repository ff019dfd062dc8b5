"""The promptable-segmentation commands (heavy imports inside the functions)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def interactive(
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model folder of a promptable model "
                                         "(medseg train-interactive; default: the shipped model)."),
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
    max_image_voxels: int = typer.Option(512 ** 3, "--max-image-voxels", help="Largest image opened, in values "
                                         "(channels x voxels) as its header declares them, checked before "
                                         "decoding; default 512^3 (a 512x512x512 CT)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (for --model)."),
    incontext_model: Optional[Path] = typer.Option(None, "--incontext-model", help="In-context model folder of "
                                                   "the page's examples mode (medseg train-incontext; default: "
                                                   "the shipped model)."),
    labels: Optional[str] = typer.Option(None, "--labels", help="The structures to annotate: VALUE=NAME pairs "
                                         "(1=liver,2=tumour) or a dataset.json (or its folder) whose labels to use "
                                         "(default: one, 'object'; the page adds more)."),
) -> None:
    """Annotate images in the browser: clicks, boxes and scribbles for the model, a brush and eraser beside it,
    several structures, window/level and three views of a volume; save the label map in the image's geometry."""
    import secrets

    from medseg.errors import MedsegError

    if model is not None and baseline is not None:
        raise MedsegError("give either --model or --baseline, not both",
                          fix="--model MODEL_FOLDER, or --baseline random_walker to work without a trained model")
    if max_upload_mb < 1:
        raise MedsegError(f"--max-upload-mb {max_upload_mb} must be at least 1")
    if max_image_voxels < 1:
        raise MedsegError(f"--max-image-voxels {max_image_voxels} must be at least 1")
    if image is not None and not image.exists():
        raise MedsegError("file not found", path=image, fix="check the --image path")
    from medseg.interactive.structures import parse_structures

    structures = parse_structures(labels) if labels is not None else None
    if baseline is None:
        from medseg.interactive.predictor import load_segmenter

        segmenter = load_segmenter(model, device=device)  # None: the shipped model
    else:
        from medseg.interactive.baselines import create_baseline

        segmenter = create_baseline(baseline)

    import uvicorn

    from medseg.serve.interactive_app import create_app

    token = token or secrets.token_urlsafe(24)
    app = create_app(segmenter, token=token, allowed_roots=allow_root or [Path.cwd()], image=image,
                     max_upload_bytes=max_upload_mb * 2**20, max_image_voxels=max_image_voxels,
                     structures=structures, incontext=_incontext_loader(incontext_model, device))
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    typer.echo(f"medseg interactive ({getattr(segmenter, 'name', 'model')}): open "
               f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/?token={token}")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _incontext_loader(folder: Optional[Path], device: str):
    """The examples mode's model, loaded on first use (None: the shipped model); a missing folder fails now."""
    from medseg.errors import MedsegError

    if folder is not None and not folder.is_dir():
        raise MedsegError("in-context model folder not found", path=folder,
                          fix="pass a folder written by medseg train-incontext, or leave --incontext-model out")

    def load():
        from medseg.incontext.session import InContextSession

        return InContextSession(folder, device=device)

    return load


def eval_interactive(
    datasets: List[Path] = typer.Argument(..., help="Dataset folder(s) in the nnU-Net v2 or MSD layout; 3D cases "
                                          "are scored on their axial slice with the largest object."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model folder of a promptable model "
                                         "(medseg train-interactive)."),
    baselines: str = typer.Option("random_walker,watershed,grabcut", "--baselines", help="Classical methods, "
                                  "comma-separated (random_walker, watershed, grabcut), or 'none'."),
    automatic: Optional[Path] = typer.Option(None, "--automatic", help="Model folder of the automatic pipeline "
                                             "(medseg train, a 2d configuration) to score as a prompt-free "
                                             "reference."),
    modes: str = typer.Option("clicks,box,scribbles,box+clicks", "--modes", help="Interaction modes, "
                              "comma-separated: clicks, box, scribbles, box+clicks."),
    label: Optional[int] = typer.Option(None, "--label", help="Label value of the object (default: every "
                                        "foreground label as one object)."),
    cases: Optional[str] = typer.Option(None, "--cases", help="A count N (the first N cases of each dataset) or "
                                        "comma-separated case ids (default: all)."),
    holdout: bool = typer.Option(False, "--holdout", help="Only the cases that --model held out in training "
                                 "(recorded in its interactive.json), per dataset."),
    max_interactions: int = typer.Option(20, "--max-interactions", help="Interactions per case and mode."),
    seed: int = typer.Option(0, "--seed", help="Seed of the interaction simulator."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (for --model and --automatic)."),
    output: Path = typer.Option(Path("interactive_eval"), "-o", "--output", help="Folder for interactive.json, "
                                "per_case.csv and curves.png."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace those files if the output folder has them."),
) -> None:
    """Dice after 1..N simulated interactions and NoC@80/85/90 per method and mode (clicks, box, scribbles,
    box + clicks), for a promptable model, classical baselines and the automatic model."""
    from rich.console import Console
    from rich.table import Table

    from medseg.errors import MedsegError
    from medseg.interactive.baselines import AutomaticSegmenter, create_baseline
    from medseg.interactive.cases import dataset_cases
    from medseg.interactive.evaluate import evaluate_interactive
    from medseg.output_paths import prepare_output_dir

    prepare_output_dir(output, inputs=datasets, overwrite=overwrite,
                       names=["interactive.json", "per_case.csv", "curves.png"])
    segmenters = {}
    if model is not None:
        from medseg.interactive.predictor import load_segmenter

        segmenters["model"] = load_segmenter(model, device=device)
    for name in (n.strip() for n in baselines.split(",")):
        if name and name != "none":
            segmenters[name] = create_baseline(name)
    if automatic is not None:
        segmenters["automatic"] = AutomaticSegmenter.from_folder(automatic, label=label, device=device)
    if not segmenters:
        raise MedsegError("nothing to evaluate", fix="pass --model, --baselines or --automatic")
    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    if holdout:
        if model is None:
            raise MedsegError("--holdout needs --model (the held-out cases are recorded in its folder)")
        import itertools

        held_out = segmenters["model"].info.get("holdout_cases", {})
        missing = [str(d) for d in datasets if not held_out.get(d.resolve().name)]
        if missing:
            raise MedsegError(f"the model held out no cases of {', '.join(missing)}", path=model / "model.json",
                              fix="evaluate without --holdout, or pass a dataset the model was trained on")
        case_stream = itertools.chain.from_iterable(
            dataset_cases([d], label=label, cases=",".join(held_out[d.resolve().name])) for d in datasets)
    else:
        case_stream = dataset_cases(datasets, label=label, cases=cases)
    result = evaluate_interactive(segmenters, case_stream, modes=mode_list,
                                  max_interactions=max_interactions, seed=seed)
    paths = result.write(output)
    table = Table(title=f"interactive evaluation ({len(set(c.case_id for c in result.cases))} cases, "
                        f"{max_interactions} interactions)")
    at = min(5, max_interactions)
    for column in ("method", "mode", "Dice@1", f"Dice@{at}", "NoC@85", "NoF@85", "ms"):
        table.add_column(column, justify="left" if column in ("method", "mode") else "right", no_wrap=True,
                         min_width=len(column))
    for s in result.summaries():
        at5 = s.mean_dice[at - 1]
        table.add_row(s.method, s.mode, f"{s.mean_dice[0]:.3f}", f"{at5:.3f}", f"{s.noc['85']:.2f}",
                      str(s.failures["85"]), f"{1000 * s.predict_seconds:.0f}")
    Console().print(table)
    typer.echo("NoC@85: interactions to reach Dice 0.85 (capped at --max-interactions); NoF@85: cases that never "
               "did; ms: per interaction")
    if result.skipped:
        typer.echo(f"skipped {len(result.skipped)} cases without the object: {', '.join(result.skipped)}")
    typer.echo(f"wrote {paths['json']}, {paths['csv']} and {paths['plot']}")
