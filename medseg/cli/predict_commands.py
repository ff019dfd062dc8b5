"""The ``predict`` and ``find-best`` commands (heavy imports inside the functions)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def _folds(values: Optional[List[str]]) -> list[str] | None:
    if not values:
        return None
    return [f.strip() for value in values for f in value.split(",") if f.strip()]


def predict(
    input: Optional[Path] = typer.Option(None, "-i", "--input", help="An image file, a folder of images "
                                         "(<case>_<CCCC> files are the channels of one case) or a dataset folder "
                                         "(imagesTs, else imagesTr)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Folder for one label file per case, in the "
                                          "input's format."),
    model: List[Path] = typer.Option(..., "-m", "--model", help="Model folder; repeat to ensemble configurations."),
    folds: Optional[List[str]] = typer.Option(None, "-f", "--folds", help="Folds to ensemble, e.g. -f 0 -f 1 or "
                                              "-f 0,1 (default: every fold with weights)."),
    no_tta: bool = typer.Option(False, "--no-tta", help="No mirroring test-time augmentation (2^d times faster)."),
    save_probabilities: bool = typer.Option(False, "--save-probabilities", help="Also write <case>.npz with the "
                                            "class probabilities on the input's grid."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/n: predict only cases i, i+n, ... of the input's "
                                        "cases (n independent processes write each output once; under torchrun "
                                        "each rank takes its share without it)."),
    step: float = typer.Option(0.5, "--step", help="Window stride as a fraction of the patch."),
    memory_limit: str = typer.Option("2GB", "--memory-limit", help="Above this whole-volume accumulator size the "
                                     "volume is streamed in slabs, in tiles of the plane if the band of every class "
                                     "would still pass it."),
    precision: str = typer.Option("float32", "--precision", help="float32, or bfloat16 / float16 for the network "
                                  "(faster where the hardware has them; results differ slightly)."),
    engine: str = typer.Option("torch", "--engine", help="torch, or onnxruntime for a folder that medseg export "
                               "wrote (CPU, float32; the same preprocessing, sliding window, TTA and restore)."),
    adapt: str = typer.Option("none", "--adapt", help="Test-time adaptation to the input images, no labels: bn "
                              "(re-estimate batch-norm statistics) or tent (minimise prediction entropy over the "
                              "norm layers' affine parameters); rolled back if the predictions degenerate; "
                              "OUTPUT/adaptation.json says what happened."),
    postprocessing: Optional[Path] = typer.Option(None, "--postprocessing", help="A postprocessing.json to apply "
                                                  "(default: the model folder's; for ensembles, find-best's)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace label/probability files already in the "
                                   "output folder (default: refuse)."),
    output_format: Optional[str] = typer.Option(None, "--output-format", help="nifti (<case>.nii.gz), dicom-seg "
                                                "(<case>.seg.dcm) or rtstruct (<case>.rtstruct.dcm); the DICOM "
                                                "ones need a DICOM series input (default: the input's format, "
                                                "NIfTI for a DICOM series)."),
    dicomweb: Optional[str] = typer.Option(None, "--dicomweb", help="Instead of -i/-o: a DICOMweb root URL to pull "
                                           "--study from and store the DICOM SEG into."),
    study: Optional[str] = typer.Option(None, "--study", help="With --dicomweb: the StudyInstanceUID."),
    series: Optional[List[str]] = typer.Option(None, "--series", help="With --dicomweb: a SeriesInstanceUID, one "
                                               "per model channel in order (default: the study's only image "
                                               "series)."),
    username: Optional[str] = typer.Option(None, "--username", help="With --dicomweb: HTTP basic user (with "
                                           "--password-file)."),
    password_file: Optional[Path] = typer.Option(None, "--password-file", help="With --dicomweb: file holding "
                                                 "the password."),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="With --dicomweb: file holding a bearer "
                                              "token."),
    uncertainty: Optional[str] = typer.Option(None, "--uncertainty", help="Also write per-voxel entropy, mutual "
                                              "information and variance maps and per-structure summaries into "
                                              "OUTPUT/uncertainty/, from the folds as an ensemble (ensemble), the "
                                              "mirrored copies (tta) or MC dropout samples (mcdropout)."),
    mc_samples: int = typer.Option(8, "--mc-samples", help="With --uncertainty mcdropout: forward passes."),
    samples: int = typer.Option(0, "--samples", help="A probabilistic model (trained on several raters): also "
                                "write this many plausible label maps per case, OUTPUT/samples/<case>_s<K>."),
    seed: int = typer.Option(0, "--seed", help="With --samples: the seed of the latent draws."),
) -> None:
    """Segment images with a trained model: sliding window, mirroring TTA, folds ensembled."""
    from medseg.config import read_json, write_json_atomic
    from medseg.errors import MedsegError
    from medseg.inference.ensemble import EnsemblePredictor
    from medseg.config.onnx_folder import read_pipeline
    from medseg.inference.onnx_engine import ENGINES, engine_predictor
    from medseg.inference.run import collect_cases, output_names, predict_cases
    from medseg.output_paths import prepare_output_dir
    from medseg.planning.budget import parse_memory

    if not 0 < step <= 1:
        raise MedsegError(f"--step {step} is not in (0, 1]", fix="use e.g. 0.5")
    limit = parse_memory(memory_limit)
    if dicomweb is not None and output_format not in (None, "dicom-seg"):
        raise MedsegError(f"--dicomweb stores a DICOM SEG, not --output-format {output_format}",
                          fix="leave --output-format out with --dicomweb")
    if engine not in ENGINES:
        raise MedsegError(f"--engine {engine!r} is not one of {', '.join(ENGINES)}", fix="use --engine torch")
    if adapt != "none":
        from medseg.adapt.test_time_cases import check_adaptation_request

        check_adaptation_request(adapt, engine=engine, dicomweb=dicomweb is not None, output=output,
                                 overwrite=overwrite)
    for folder in model:
        if engine == "onnxruntime":
            read_pipeline(folder)  # a model folder without pipeline.json: the error says how to export it
        elif not (folder / "model.json").is_file():
            raise MedsegError("model folder not found (no model.json)", path=folder,
                              fix="pass the folder that medseg train wrote")
    if dicomweb is not None:
        from medseg.cli.pacs import connect

        if input is not None or output is not None or save_probabilities or study is None or uncertainty:
            raise MedsegError("--dicomweb takes --study (and --series), not -i/-o/--save-probabilities",
                              fix="medseg predict --dicomweb URL --study UID -m MODEL")
        pacs = connect(dicomweb, username, password_file, token_file)
    elif input is None or output is None:
        raise MedsegError("-i/--input and -o/--output are needed", fix="pass both, or --dicomweb URL --study UID")
    else:
        from medseg.distributed import prediction_shard, shard_items

        cases = shard_items(collect_cases(input), *prediction_shard(shard))  # --shard i/n, or torchrun's rank
        uncertainty_names = None
        if uncertainty is not None:
            from medseg.trust.uncertainty import check_uncertainty_request, uncertainty_file_names

            check_uncertainty_request(uncertainty, models=len(model), engine=engine)
            uncertainty_names = uncertainty_file_names
        prepare_output_dir(output, inputs=[f for case in cases for f in case.files], overwrite=overwrite,
                           names=output_names(cases, save_probabilities=save_probabilities,
                                              output_format=output_format,
                                              extra_names=uncertainty_names))  # before models
    from medseg.trust.qc import read_quality_model
    from medseg.trust.shift import read_reference, write_prediction_ood

    shift_reference = read_reference(model[0])  # medseg shift --fit's; a malformed one stops before any prediction
    quality = read_quality_model(model[0]) if len(model) == 1 and dicomweb is None else None  # medseg qc --fit's
    predictors = [engine_predictor(m, engine, folds=_folds(folds), device=device, tta=not no_tta, step=step,
                                   memory_limit=limit, precision=precision) for m in model]
    if adapt != "none":
        from medseg.adapt.test_time_cases import adapt_cases

        adaptation = adapt_cases(predictors, cases, adapt, models=model)
    labels = None
    if postprocessing is not None:
        labels = [int(v) for v in read_json(postprocessing).get("keep_largest_component", [])]
    if len(predictors) == 1 and labels is None:
        predictor = predictors[0]
    else:
        predictor = EnsemblePredictor(predictors, postprocess_labels=labels or [])
    if dicomweb is not None:
        from medseg.cli.pacs import predict_from_dicomweb

        return predict_from_dicomweb(pacs, predictor, model[0], study, series)
    from medseg.inference.label_outputs import model_label_names

    if uncertainty is not None:
        from medseg.trust.uncertainty import UncertaintyPredictor

        if labels is not None:  # --postprocessing: applied to the members' mean
            predictors[0].postprocess_labels = labels
        predictor = UncertaintyPredictor(predictors[0], uncertainty, samples=mc_samples)
    written = predict_cases(predictor, cases, output, save_probabilities=save_probabilities, overwrite=overwrite,
                            output_format=output_format,
                            label_names=model_label_names(model[0], predictor.label_values),
                            uncertainty=predictor if uncertainty is not None else None, quality=quality,
                            samples=samples, seed=seed)
    if quality is not None:
        from medseg.inference.run import QUALITY_FOLDER

        typer.echo(f"wrote quality scores to {output / QUALITY_FOLDER} (medseg qc {output} lists the cases to review "
                   "first)")
    if shift_reference is not None:
        ood = write_prediction_ood(model[0], shift_reference, cases, output)
        typer.echo(f"wrote out-of-distribution scores to {ood}")
    if adapt != "none":
        from medseg.adapt.test_time_cases import ADAPTATION_JSON, adaptation_lines

        write_json_atomic(adaptation, output / ADAPTATION_JSON)
        for line in adaptation_lines(adaptation):
            typer.echo(line)
    typer.echo(f"wrote {len(written)} label file(s) to {output}")


def find_best(
    models: List[Path] = typer.Argument(..., help="Model folders (one per configuration) with fold_K/validation/."),
    dataset: Path = typer.Option(..., "-d", "--dataset", help="The raw dataset folder (its labelsTr are the "
                                 "references)."),
    output: Path = typer.Option(Path("find_best.json"), "-o", "--output", help="Where to write the result."),
    ensembles: bool = typer.Option(True, help="Also score every pair of models (needs <case>.npz validation "
                                   "probabilities)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUTPUT (default: refuse)."),
) -> None:
    """Pick the configuration or ensemble with the best cross-validation Dice; decide post-processing for it."""
    from medseg.config import write_json_atomic
    from medseg.inference.find_best import find_best as run_find_best
    from medseg.inference.postprocess import write_postprocessing
    from medseg.output_paths import prepare_output_file

    prepare_output_file(output, inputs=[dataset], overwrite=overwrite)
    result = run_find_best(models, dataset, ensembles=ensembles)
    for candidate in result["candidates"]:
        typer.echo(f"{candidate['name']}: mean Dice {candidate['mean_dice']:.4f} over {candidate['num_cases']} cases")
    best, decision = result["best"], result["postprocessing"]
    if len(best["models"]) == 1:
        result["postprocessing_file"] = str(write_postprocessing(best["models"][0], decision))
    else:
        result["postprocessing_file"] = str(write_postprocessing(output.parent, decision))
    write_json_atomic(result, output)
    typer.echo(f"best: {best['name']} (post-processing for labels {decision['keep_largest_component'] or 'none'}); "
               f"wrote {output}")
