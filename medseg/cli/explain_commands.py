"""The ``explain`` command: attribution heat maps of a trained model for one label in one image (heavy imports
inside the function)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def explain(
    model: Path = typer.Argument(..., help="Model folder that medseg train wrote (its first fold explains)."),
    images: List[Path] = typer.Argument(..., help="The image: one file per channel, in the training order."),
    label: int = typer.Option(..., "--class", help="The label value whose logits are explained."),
    method: str = typer.Option("gradcam", "--method", help="gradcam, gradcam++, occlusion, smoothgrad or "
                               "integrated-gradients."),
    region: Optional[Path] = typer.Option(None, "--region", help="Mask on the image's grid: explain the class's "
                                          "logits summed inside it (default: where the model predicts the class)."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for <case>_<method>_label<K>.png and .npz."),
    samples: int = typer.Option(16, "--samples", help="Noisy copies (smoothgrad) or steps (integrated-gradients)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (default: refuse)."),
) -> None:
    """Heat-map overlays (2D, or slices of a volume) of why the model segments --class where it does."""
    from medseg.errors import MedsegError
    from medseg.output_paths import prepare_output_dir
    from medseg.trust.explain import METHODS
    from medseg.trust.explain_case import case_stem, explain_image, output_names

    if method not in METHODS:
        raise MedsegError(f"--method {method!r} is not one of {', '.join(METHODS)}", fix="use --method gradcam")
    if samples < 1:
        raise MedsegError(f"--samples {samples} is below 1", fix="use e.g. --samples 16")
    if not (model / "model.json").is_file():
        raise MedsegError("not a medseg model folder (no model.json)", path=model,
                          fix="pass the folder that medseg train wrote")
    for image in [*images, *([region] if region else [])]:
        if not image.is_file():
            raise MedsegError("file not found", path=image, fix="pass an existing image file")
    names = output_names(case_stem(images[0]), method, label)
    prepare_output_dir(output, inputs=[*images, model], overwrite=overwrite, names=names)
    result = explain_image(model, images, label, method, output, region=region, samples=samples)
    typer.echo(f"{method}: label {label} over {result.region_voxels} voxels; wrote {result.png} and {result.npz}")
