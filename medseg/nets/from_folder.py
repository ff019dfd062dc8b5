"""A trained network from a model folder (``medseg.config.model_folder``): rebuilt from its ``nets.create``
arguments, weights verified and read with safetensors. No training code, no class search, nothing unpickled.
An adapted folder (``medseg adapt``) is rebuilt from its base model and its deltas (``medseg.nets.adapted``)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from medseg.config.adaptation import ADAPTATION
from medseg.config.model_folder import MODEL_JSON, ModelSpec, fold_folder, read_fold_weights, read_model_spec
from medseg.errors import MedsegError
from medseg.nets.registry import create


def build_network(spec: ModelSpec, source: Path | None = None) -> nn.Module:
    """The untrained network that ``spec`` describes; an unknown name or option is a MedsegError naming
    ``source`` (the model.json it came from)."""
    net = spec.network
    try:
        return create(net.name, net.spatial_dims, net.in_channels, net.num_classes, **net.options)
    except MedsegError as error:
        if source is None:
            raise
        raise MedsegError(f"its network cannot be built: {str(error).split(' (fix: ')[0]}", path=source,
                          fix=error.fix or "pass a folder written by medseg, or retrain") from None
    except (TypeError, ValueError, RuntimeError) as error:
        raise MedsegError(f"its network cannot be built ({type(error).__name__}: {str(error)[:160]})", path=source,
                          fix="pass a folder written by medseg, or retrain") from None


def load_network(model: str | Path, fold: int | str, *, device: str = "cpu", spec: ModelSpec | None = None
                 ) -> nn.Module:
    """The trained network of one fold, in eval mode on ``device``, full-resolution logits only (deep
    supervision off)."""
    spec = spec or read_model_spec(model)
    if ADAPTATION in spec.extra:  # medseg adapt's folders: base + deltas, or merged
        from medseg.nets.adapted import load_adapted_network

        network = load_adapted_network(model, fold, spec, device=device)
    else:
        network = build_network(spec, Path(model) / MODEL_JSON)
        state = read_fold_weights(model, fold, device=device)
        try:
            network.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise MedsegError(f"weights do not fit the network ({str(error).splitlines()[0][:200]})",
                              path=fold_folder(model, fold),
                              fix="the model folder is inconsistent; retrain the fold") from None
    if hasattr(network, "deep_supervision"):
        network.deep_supervision = False
    return network.to(device).eval()
