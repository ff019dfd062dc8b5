"""Fit any registry network to a planned configuration: the plan chose spacing, normalisation, patch and a U-Net;
``fit_network`` swaps in another network of the zoo (``medseg train --network NAME``), asks it for its activation
memory (measured on the meta device) and its step time (one real step timed), and refits batch size and the
number of steps the budget allows, recording each decision with its reason."""

from __future__ import annotations

import copy
from typing import Any

from medseg.config import Configuration
from medseg.errors import MedsegError


def network_options(name: str, config: Configuration, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """``nets.create`` keyword arguments (``spatial_dims``, ``in_channels``, ``num_classes`` included) of network
    ``name`` fitted to ``config``'s patch, with ``overrides`` (``--set net.KEY=VALUE``) applied last."""
    from medseg.nets.registry import model_info, plan_options

    planned = dict(config.network)
    info = model_info(name)
    if info.prompted:
        raise MedsegError(f"network {name!r} takes prompts beside the image", fix="use medseg train-interactive")
    if config.spatial_dims not in info.dims:
        raise MedsegError(f"network {name!r} is {' or '.join(f'{d}D' for d in info.dims)} only; configuration "
                          f"{config.name} is {config.spatial_dims}D", fix="choose another configuration or network")
    options = {"spatial_dims": config.spatial_dims, "in_channels": planned["in_channels"],
               "num_classes": planned["num_classes"]}
    if name == config.network_name:
        options.update({k: v for k, v in planned.items() if k not in options})
    else:
        options.update(plan_options(name, list(config.patch_size), planned))
    if info.deep_supervision:
        options["deep_supervision"] = True
    options.update(overrides or {})
    return options


def check_fits_patch(name: str, options: dict[str, Any], patch_size: list[int]) -> None:
    """Build the network on the meta device and run one patch: the logits must be ``(1, K, *patch)``."""
    import torch

    from medseg.nets import create

    try:
        with torch.device("meta"):
            network = create(name, **options)
            network.eval()
            if hasattr(network, "deep_supervision"):
                network.deep_supervision = False
            out = network(torch.empty((1, options["in_channels"], *patch_size)))
    except MedsegError as error:
        raise MedsegError(f"network {name!r} cannot be built for patch {patch_size}: {error}",
                          fix="set its options with --set net.KEY=VALUE, or the patch with medseg plan --set") from None
    except (RuntimeError, ValueError, TypeError, AssertionError) as error:
        detail = (str(error).splitlines() or [type(error).__name__])[0][:200]
        raise MedsegError(f"network {name!r} cannot run patch {patch_size} ({detail})",
                          fix="set its options with --set net.KEY=VALUE, or the patch with medseg plan --set") from None
    expected = (1, options["num_classes"], *patch_size)
    if tuple(out.shape) != expected:
        raise MedsegError(f"network {name!r} maps patch {patch_size} to logits {list(out.shape)}, not {list(expected)}",
                          fix="the pipeline needs logits of the patch's size (an unpadded U-Net such as unet_valid "
                              "shrinks them); choose another network")


def fit_network(config: Configuration, name: str, overrides: dict[str, Any] | None = None, *, memory_bytes: int,
                budget_seconds: float | None, device: str = "cpu", num_workers: int = 1,
                measure_seconds: float = 3.0, precision: str = "float32") -> Configuration:
    """A copy of ``config`` that trains network ``name``: its options, the largest batch (up to the planned one)
    whose activations fit ``memory_bytes``, the step time measured at ``precision`` and the steps
    ``budget_seconds`` allows."""
    import torch

    from medseg.nets import create
    from medseg.nets.memory import training_activation_bytes
    from medseg.planning.budget import measure_step_seconds

    fitted = copy.deepcopy(config)
    options = network_options(name, config, overrides)
    check_fits_patch(name, options, list(config.patch_size))
    with torch.device("meta"):
        shadow = create(name, **options)
    batch = int(config.batch_size)
    activation = training_activation_bytes(shadow, (batch, options["in_channels"], *config.patch_size))
    while activation > memory_bytes and batch > 1:
        batch = max(1, batch // 2)
        activation = training_activation_bytes(shadow, (batch, options["in_channels"], *config.patch_size))
    if activation > memory_bytes:
        raise MedsegError(f"network {name!r} needs {activation / 1e9:.1f} GB of activations for one patch "
                          f"{config.patch_size}, more than the {memory_bytes / 1e9:.1f} GB the plan allows",
                          fix="choose a smaller network (--set net.KEY=VALUE) or a smaller patch (medseg plan --set)")
    step = measure_step_seconds(options, list(config.patch_size), batch, device, seconds=measure_seconds,
                                num_workers=num_workers, network_name=name, precision=precision)
    fitted.network_name, fitted.network, fitted.batch_size = name, options, batch
    fitted.estimated_memory_bytes, fitted.estimated_step_seconds = int(activation), float(step)
    if budget_seconds:
        fitted.num_iterations = max(1, int(budget_seconds / step))
    parameters = sum(p.numel() for p in shadow.parameters())
    fitted.decide("network_name", name, f"--network {name}: {parameters / 1e6:.2f} M parameters"
                  + (f", options {sorted(overrides)} set by the user" if overrides else ""))
    fitted.decide("batch_size", batch, f"{name} keeps {activation / 1e9:.2f} GB of activations for backward at "
                  f"batch {batch} (measured on the meta device; the plan allows {memory_bytes / 1e9:.1f} GB)")
    fitted.decide("num_iterations", fitted.num_iterations,
                  f"one measured training step of {name} took {step:.3f} s" +
                  (f"; the {budget_seconds:.0f} s budget allows {fitted.num_iterations} steps" if budget_seconds
                   else ""))
    return fitted
