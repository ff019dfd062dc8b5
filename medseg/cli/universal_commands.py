"""``medseg segment`` and ``medseg train-universal``: structures asked for by name, and the model that knows
them. Heavy imports stay inside the functions."""

from __future__ import annotations

from pathlib import Path

import typer


def segment(
    image: list[Path] = typer.Argument(None, help="The image: one file (or DICOM series folder), or one file per "
                                       "channel in the training order."),
    prompt: list[str] = typer.Option(None, "--prompt", "-p", help='A structure by name, e.g. "enhancing tumour" '
                                     "(any wording, synonym or language the vocabulary knows); repeat for more."),
    model: Path | None = typer.Option(None, "--model", "-m", help="Universal model folder (default: the shipped "
                                      "model)."),
    output: Path | None = typer.Option(None, "-o", "--output", help="New folder: one mask per prompt and "
                                       "segment.json."),
    tta: bool = typer.Option(False, "--tta", help="Mirroring test-time augmentation (2-4x slower)."),
    list_structures: bool = typer.Option(False, "--list-structures", help="Print the vocabulary and exit."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
) -> None:
    """Segment structures named in free text with a universal model; an unknown name lists the nearest known."""
    from medseg.errors import MedsegError
    from medseg.universal.model import UniversalModel

    if list_structures:
        universal = UniversalModel.from_folder(model, device=device)
        for entry in universal.vocabulary.entries:
            typer.echo(f"{entry.describe()}: {', '.join(entry.synonyms[:8]) or '-'}")
        return
    if not image or not prompt or output is None:
        raise MedsegError("segment needs an image, at least one --prompt and -o OUTPUT",
                          fix='e.g. medseg segment scan.nii.gz --prompt "lung" -o out')
    from medseg.data.layout import read_channels
    from medseg.io import read_image
    from medseg.output_paths import prepare_output_dir
    from medseg.universal.outputs import write_prompt_masks

    prepare_output_dir(output, inputs=list(image), must_not_exist=True)
    universal = UniversalModel.from_folder(model, device=device, tta=tta)
    matches = [universal.match(p) for p in prompt]  # an unknown name stops here, before the image is read
    for path in image:
        if not path.exists():
            raise MedsegError("image not found", path=path, fix="pass an image file or a DICOM series folder")
    picture = read_image(image[0]) if len(image) == 1 else read_channels(list(image))
    answers = universal.segment_matches(picture, matches)
    folder = write_prompt_masks(answers, output, image[0], model=str(model) if model else "shipped")
    for answer in answers:
        typer.echo(f"{answer.match.prompt!r} -> {answer.match.entry.name} ({answer.match.method}, "
                   f"{answer.dataset}): {int(answer.mask.array.sum())} voxels")
    typer.echo(f"wrote {folder}")


def train_universal(
    datasets: list[Path] = typer.Argument(..., help="Dataset folders (nnU-Net v2 or MSD layout), 2D or 3D, each "
                                          "with its own labels."),
    output: Path = typer.Option(Path("universal_model"), "-o", "--output", help="Model folder to write."),
    budget: str = typer.Option("2h", help="Wall-clock training budget for all datasets together, e.g. 2h."),
    iterations_per_epoch: int = typer.Option(50, help="Steps between validations (and checkpoints)."),
    threads: int | None = typer.Option(None, help="Torch threads on a CPU (default: the cores the loader leaves)."),
    workers: int = typer.Option(1, help="Loader worker processes per dataset."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    seed: int = typer.Option(0, help="Random seed."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUTPUT/fold_all/checkpoint.pt."),
) -> None:
    """Train one network over several partially labelled datasets; its classes are asked for by name."""
    from medseg.planning.budget import parse_duration
    from medseg.universal.training import train_universal as run

    result = run(datasets, output, budget_seconds=parse_duration(budget), resume=resume,
                 train_config={"iterations_per_epoch": iterations_per_epoch, "threads": threads,
                               "num_workers": workers, "device": device, "seed": seed})
    typer.echo(f"wrote {result.model_dir} ({result.steps} steps, {result.seconds:.0f} s)")
