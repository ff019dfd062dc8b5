"""Test-time adaptation of a prediction run (what ``medseg predict --adapt`` runs): the request checked before
any model is loaded, every model's predictor adapted to the run's own input cases, and the reports as
``adaptation.json`` beside the predictions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medseg.adapt.test_time import METHODS, TestTimeOptions, adapt_predictor
from medseg.errors import MedsegError

ADAPTATION_JSON = "adaptation.json"


def check_adaptation_request(method: str, *, engine: str = "torch", dicomweb: bool = False,
                             output: str | Path | None = None, overwrite: bool = False) -> None:
    """A MedsegError (one line, with the fix) for an adaptation ``medseg predict`` cannot run: an unknown method,
    the onnxruntime engine (its networks cannot be changed), a DICOMweb run (no output folder for the report),
    or an ``adaptation.json`` already in ``output`` without ``overwrite``."""
    if method not in METHODS:
        raise MedsegError(f"--adapt {method!r} is not one of {', '.join(METHODS)}", fix="use --adapt bn or tent")
    if method == "none":
        return
    if engine != "torch":
        raise MedsegError(f"--adapt {method} changes the torch networks; --engine {engine} cannot be adapted",
                          fix="use --engine torch with --adapt")
    if dicomweb:
        raise MedsegError(f"--adapt {method} writes adaptation.json beside the predictions; --dicomweb has none",
                          fix="predict the series with -i/-o to adapt")
    if output is not None and (Path(output) / ADAPTATION_JSON).exists() and not overwrite:
        raise MedsegError("an adaptation report is already there", path=Path(output) / ADAPTATION_JSON,
                          fix="pass --overwrite to replace it, or choose another output folder")


def adapt_cases(predictors: Sequence[Any], cases: Sequence[Any], method: str,
                options: TestTimeOptions | None = None, models: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Adapt each predictor (changed in place) to the images of ``cases`` (``InputCase``: ``files`` are the
    channel files; at most ``options.max_images`` of them, evenly spaced); returns the ``adaptation.json``
    document ``{"method", "cases" (those adapted to), "models": [report, ...]}`` (``models``: the model folders,
    in the order of ``predictors``, named in the reports)."""
    import numpy as np

    from medseg.data import read_channels

    options = options or TestTimeOptions()
    spaced = np.linspace(0, len(cases) - 1, min(len(cases), options.max_images)).round().astype(int)
    picked = sorted(set(spaced.tolist()))
    images = [read_channels(list(cases[i].files)) for i in picked]  # only those adapted to are held
    reports = []
    for index, predictor in enumerate(predictors):
        report = adapt_predictor(predictor, images, method, options).to_dict()
        if index < len(models):
            report["model"] = str(models[index])
        reports.append(report)
    return {"method": method, "cases": [cases[i].case_id for i in picked], "models": reports}


def adaptation_lines(document: dict[str, Any]) -> list[str]:
    """One line per model of an ``adapt_cases`` document, for the command's output."""
    from medseg.adapt.test_time import AdaptationReport

    lines = []
    for report in document["models"]:
        fields = {k: v for k, v in report.items() if k in AdaptationReport.__dataclass_fields__}
        lines.append(f"test-time adaptation {AdaptationReport(**fields).summary()}")
    return lines
