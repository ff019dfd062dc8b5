"""In-context model folders in the one contract (``medseg.config.model_folder``): ``model.json`` with task
``incontext`` (the ``incontext_unet`` / ``tyche_unet`` network's arguments, the weights card, what it was trained
on) + ``fold_all/weights.safetensors``. Loading verifies the weights' sha256 and never unpickles anything.

The shipped default model lives in the package at ``medseg/incontext/weights/`` (written by
``bench/train_shipped.py --incontext``); ``default_model_folder()`` finds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medseg.config.model_folder import (
    MODEL_JSON,
    ModelSpec,
    NetworkSpec,
    WeightsCard,
    fold_folder,
    read_model_spec,
    write_fold_weights,
    write_model_spec,
)
from medseg.errors import MedsegError
from medseg.nets.incontext_unet import InContextConfig, InContextUNet

FOLD = "all"  # trained on every training task: one fold
SHIPPED = Path(__file__).resolve().parent / "weights"


def network_name(config: InContextConfig) -> str:
    return "tyche_unet" if config.stochastic else "incontext_unet"


def incontext_spec(config: InContextConfig, info: dict[str, Any] | None = None,
                   card: WeightsCard | None = None) -> ModelSpec:
    """The ``ModelSpec`` of an in-context model: one object (label values 0, 1), ``info`` as its extra."""
    options = config.to_dict()
    channels = int(options.pop("image_channels"))
    options.pop("stochastic")
    network = NetworkSpec(network_name(config), 2, channels, 1, options)
    return ModelSpec("incontext", network, [0, 1], card=card or WeightsCard.now(), extra=dict(info or {}))


def save_incontext_model(network: InContextUNet, folder: str | Path, info: dict[str, Any] | None = None,
                         card: WeightsCard | None = None) -> Path:
    """Write ``fold_all/weights.safetensors`` with its sha256 record, then ``model.json``."""
    folder = Path(folder)
    write_fold_weights(fold_folder(folder, FOLD), network.state_dict())
    write_model_spec(folder, incontext_spec(network.config, info, card))
    return folder


def default_model_folder() -> Path:
    """The shipped model's folder; a ``MedsegError`` saying what to do when this install has none."""
    if not (SHIPPED / MODEL_JSON).is_file():
        raise MedsegError("this medseg install has no shipped in-context model", path=SHIPPED,
                          fix="pass --model MODEL_FOLDER, or train one with: medseg train-incontext DATASETS... "
                              "-o MODEL_FOLDER")
    return SHIPPED


def load_incontext_network(folder: str | Path | None = None, device: str = "cpu"
                           ) -> tuple[InContextUNet, ModelSpec]:
    """The trained network of ``folder`` (default: the shipped model) in eval mode, and its ``ModelSpec``."""
    from medseg.nets.from_folder import load_network

    folder = default_model_folder() if folder is None else Path(folder)
    spec = read_model_spec(folder)
    if spec.task != "incontext":
        raise MedsegError(f"a {spec.task} model, not an in-context one", path=folder,
                          fix="pass a folder written by medseg train-incontext")
    network = load_network(folder, FOLD, device=device, spec=spec)
    return network, spec
