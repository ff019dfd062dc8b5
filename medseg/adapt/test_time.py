"""Test-time (source-free) adaptation of a loaded ``Predictor`` to unlabelled target images: no source data, no labels.

``bn`` re-estimates every batch-norm layer's running statistics on patches of the target images (AdaBN, Li et al.
2016), layer by layer as the eval-mode network sees them (``reestimate_batch_norm``). Networks without batch norm --
medseg's planned U-Net uses instance norm, which already normalises each window with its own statistics -- have
nothing to re-estimate: ``bn`` leaves them unchanged and says so in the report.

``tent`` (Wang et al. 2021, TENT) minimises the mean prediction entropy of the fold-averaged softmax over random
target patches, updating only the affine parameters (weight, bias) of the normalisation layers (batch, instance,
group, layer norm); every other parameter stays frozen. It runs on the one trainer (``EntropyTask`` is a
``TrainingTask``; AdamW without weight decay, the poly schedule over ``steps``). Batch-norm layers are first
re-estimated as ``bn`` does (kept only if the safeguard passes them) and then kept in eval mode, so the
statistics the affine parameters are fitted under are the ones prediction uses.

Both are watched by the safeguard (``test_time_safeguard``): the figures of the adapted network on fixed target
tiles against the unadapted network's; a degenerate state (entropy collapse with a changed mask, a foreground
fraction collapsing or exploding) is rolled back to the last state that passed. The ``AdaptationReport`` says
what happened; ``medseg predict --adapt`` writes it to ``adaptation.json`` beside the predictions.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.adapt.test_time_patches import TargetPatches
from medseg.adapt.test_time_safeguard import (
    Safeguard,
    SafeguardLimits,
    degeneracy,
    mean_entropy,
    restore,
    snapshot,
    tile_figures,
)
from medseg.errors import MedsegError
from medseg.io import Image

logger = logging.getLogger(__name__)

METHODS = ("none", "bn", "tent")
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)


@dataclass
class TestTimeOptions:
    """How ``adapt_predictor`` adapts.

    ``steps``: tent's optimisation steps of ``batch_size`` random patches (None: the configuration's batch size);
    ``learning_rate`` (AdamW); ``check_every``: steps between safeguard checks; ``budget_seconds``: an optional
    wall-clock limit of tent. ``bn_batches``: batches of random patches (the batch size, at least 4) the
    batch-norm statistics are estimated on. ``tiles``: fixed sliding-window tiles the safeguard scores;
    ``max_images``: target images used (evenly
    spaced when there are more). ``seed`` draws the patches.
    """

    __test__ = False  # not a pytest class

    steps: int = 30
    batch_size: int | None = None
    learning_rate: float = 1e-3
    check_every: int = 5
    budget_seconds: float | None = None
    bn_batches: int = 4
    tiles: int = 32
    max_images: int = 64
    seed: int = 0
    limits: SafeguardLimits = field(default_factory=SafeguardLimits)

    def __post_init__(self) -> None:
        for name in ("steps", "check_every", "bn_batches", "tiles", "max_images"):
            if int(getattr(self, name)) < 1:
                raise MedsegError(f"test-time adaptation {name}={getattr(self, name)}", fix="use 1 or more")
        if not self.learning_rate > 0:
            raise MedsegError(f"test-time adaptation learning rate {self.learning_rate}", fix="use e.g. 1e-3")


@dataclass
class AdaptationReport:
    """What one adaptation did. ``outcome``: ``adapted`` (the adapted parameters are in use), ``rolled back``
    (the safeguard restored an earlier state: ``rollback`` says when and why; for tent ``adapted`` with a
    ``rollback`` at step 0: the batch-norm re-estimation was undone, tent kept) or ``unchanged`` (nothing to adapt:
    ``reason``). ``before`` / ``after``: the safeguard's tile figures of the unadapted and the final network."""

    method: str
    outcome: str
    reason: str | None = None
    images: int = 0
    norm_layers: dict[str, int] = field(default_factory=dict)
    adapted_parameters: int = 0
    steps: int = 0
    seconds: float = 0.0
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    rollback: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for a log."""
        figures = ""
        if self.before and self.after:
            figures = f", tile entropy {self.before['entropy']:.4f} -> {self.after['entropy']:.4f}"
        if self.outcome == "rolled back" and self.rollback:
            return (f"{self.method}: rolled back to step {self.rollback['restored_step']} at step "
                    f"{self.rollback['step']}: {self.rollback['reason']}{figures}")
        if self.outcome == "unchanged":
            return f"{self.method}: unchanged ({self.reason})"
        kept = f"; the batch-norm re-estimation was rolled back: {self.rollback['reason']}" if self.rollback else ""
        return f"{self.method}: adapted ({self.steps} steps, {self.adapted_parameters} parameters){figures}{kept}"


class FoldAverage(nn.Module):
    """The predictor's fold networks as one module: ``(B, C, *patch)`` -> softmax ``(B, K, *patch)`` averaged
    over the folds (what prediction averages, mirroring aside)."""

    def __init__(self, networks: Sequence[nn.Module]):
        super().__init__()
        self.folds = nn.ModuleList(networks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.softmax(net(x).float(), 1) for net in self.folds]).mean(0)


def norm_layer_counts(network: nn.Module) -> dict[str, int]:
    """``{layer class name: count}`` of the normalisation layers."""
    counts: dict[str, int] = {}
    for module in network.modules():
        if isinstance(module, NORM_TYPES):
            counts[type(module).__name__] = counts.get(type(module).__name__, 0) + 1
    return counts


def norm_affine_parameters(network: nn.Module) -> dict[str, nn.Parameter]:
    """Name -> the weight and bias of every normalisation layer that has them (TENT's parameters)."""
    found = {}
    for name, module in network.named_modules():
        if isinstance(module, NORM_TYPES):
            for kind in ("weight", "bias"):
                value = getattr(module, kind, None)
                if isinstance(value, nn.Parameter):
                    found[f"{name}.{kind}"] = value
    return found


def batch_norm_layers(network: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _forward_order(network: nn.Module, layers: list[nn.Module], batch: torch.Tensor) -> list[nn.Module]:
    """``layers`` in the order one forward pass of ``batch`` calls them."""
    called: list[nn.Module] = []
    hooks = [layer.register_forward_pre_hook(lambda module, _: called.append(module)) for layer in layers]
    try:
        network(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return list(dict.fromkeys(called)) + [layer for layer in layers if layer not in called]


@torch.no_grad()
def reestimate_batch_norm(network: nn.Module, batches: Sequence[torch.Tensor]) -> int:
    """Replace every batch-norm layer's running mean and (unbiased) variance by the statistics of its input over
    all of ``batches`` (``(B, C, *patch)`` each) as the network in eval mode sees them: layer by layer in forward
    order, each estimated with the layers before it already on their new statistics, so the statistics are the
    ones prediction will normalise with (one pass over ``batches`` per layer). Train-mode averaging (torch's
    ``update_bn``) normalises with each small batch's own statistics instead, which biases the deeper layers'
    estimates when batches are a few patches. Returns the number of layers; the network is left in eval mode."""
    layers = batch_norm_layers(network)
    network.eval()
    if not layers or not batches:
        return len(layers)
    for layer in _forward_order(network, layers, batches[0]):
        total = {"n": 0, "sum": 0.0, "squares": 0.0}

        def accumulate(module, inputs, total=total):
            x = inputs[0].detach().transpose(0, 1).flatten(1).double()  # (C, B * prod(S))
            total["n"] += x.shape[1]
            total["sum"] = total["sum"] + x.sum(1)
            total["squares"] = total["squares"] + (x * x).sum(1)

        hook = layer.register_forward_pre_hook(accumulate)
        try:
            for batch in batches:
                network(batch)
        finally:
            hook.remove()
        n = total["n"]
        mean = total["sum"] / n
        variance = (total["squares"] - n * mean * mean) / max(n - 1, 1)
        layer.running_mean.copy_(mean.to(layer.running_mean.dtype))
        layer.running_var.copy_(variance.clamp_min(0).to(layer.running_var.dtype))
        if layer.num_batches_tracked is not None:
            layer.num_batches_tracked.add_(len(batches))
    return len(layers)


class EntropyTask:
    """The trainer task of TENT: batches of random target patches, the mean entropy of the fold-averaged softmax
    as the loss (network in eval mode: dropout off, batch norm on its re-estimated statistics), and the
    safeguard's tile figures as validation."""

    name = "test-time adaptation (tent)"

    def __init__(self, patches: TargetPatches, tiles: torch.Tensor, reference: np.ndarray, num_classes: int, *,
                 steps: int, batch_size: int, seed: int):
        self.patches, self.tiles, self.reference = patches, tiles, reference
        self.num_classes, self.batch_size, self.seed = num_classes, batch_size, seed
        self.default_iterations = steps

    def batches(self, epoch: int, count: int) -> Iterator[torch.Tensor]:
        rng = np.random.default_rng([self.seed, epoch])
        for _ in range(count):
            yield self.patches.random_batch(self.batch_size, rng)

    def loss(self, network: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        network.eval()
        return mean_entropy(network(batch.to(self.tiles.device)))  # patches are drawn on the CPU

    def validate(self, network: nn.Module) -> dict[str, Any]:
        figures, _ = tile_figures(network, self.tiles, self.num_classes, self.reference)
        return figures


def _evenly(items: Sequence[Image], count: int) -> list[Image]:
    if len(items) <= count:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def _tent(model: FoldAverage, task: EntropyTask, parameters: dict[str, nn.Parameter], before: dict[str, Any],
          options: TestTimeOptions, device: str) -> tuple[Safeguard, list[dict[str, Any]], int]:
    """TENT on the one trainer (in a temporary folder; no checkpoint or weights written) with the safeguard."""
    from medseg.config.train_config import TrainConfig
    from medseg.training.trainer import Trainer

    config = TrainConfig(task="tent", budget_seconds=options.budget_seconds, max_iterations=options.steps,
                         iterations_per_epoch=options.check_every, optimizer="adamw",
                         learning_rate=options.learning_rate, weight_decay=0.0, num_workers=0, seed=options.seed,
                         threads=torch.get_num_threads(), device=device)  # the prediction's threads
    safeguard = Safeguard(dict(parameters), before, options.limits)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    chosen = {id(p) for p in parameters.values()}
    try:
        for p in model.parameters():
            p.requires_grad_(id(p) in chosen)
        with tempfile.TemporaryDirectory(prefix="medseg-tent-") as folder:
            trainer = Trainer(model, task, config, folder, callbacks=[safeguard])
            state = trainer.run(progress=False)
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
        model.eval()
    return safeguard, state.history, state.iteration


def adapt_predictor(predictor, images: Sequence[Image], method: str,
                    options: TestTimeOptions | None = None) -> AdaptationReport:
    """Adapt ``predictor``'s networks (a ``medseg.inference.Predictor``; changed in place) to ``images``
    (``(C, *spatial)`` each, unlabelled) with ``method`` (``none``, ``bn`` or ``tent``); see the module docstring.

    A MedsegError for an unknown method, no images, an image the model cannot take, or ``tent`` on networks
    without normalisation affine parameters.
    """
    options = options or TestTimeOptions()
    if method not in METHODS:
        raise MedsegError(f"unknown test-time adaptation {method!r}", fix=f"use one of {', '.join(METHODS)}")
    networks = getattr(predictor, "networks", None)
    if not networks or not all(isinstance(n, nn.Module) for n in networks):
        raise MedsegError("test-time adaptation needs torch networks", fix="predict with --engine torch")
    if method == "none":
        return AdaptationReport(method, "unchanged", reason="no adaptation asked for")
    if not images:
        raise MedsegError("no target images to adapt to", fix="pass the images to be predicted")
    started = time.perf_counter()
    model = FoldAverage(networks).to(predictor.device).eval()
    counts = norm_layer_counts(model)
    parameters = norm_affine_parameters(model)
    bn_layers = batch_norm_layers(model)
    if method == "tent" and not parameters:
        raise MedsegError(f"the networks have no normalisation layers with affine parameters (norm layers: "
                          f"{counts or 'none'}); tent adapts only those", fix="use --adapt bn or no --adapt")
    report = AdaptationReport(method, "adapted", norm_layers=counts, options=asdict(options))
    if method == "bn" and not bn_layers:
        report.outcome = "unchanged"
        report.reason = (f"no batch-norm layers (norm layers: {counts or 'none'}): instance/group/layer norm "
                         "normalise each window with its own statistics, so there are none to re-estimate")
        logger.warning("test-time adaptation %s", report.summary())
        return report
    chosen = _evenly(images, options.max_images)
    patches = TargetPatches(predictor, chosen)
    report.images = len(chosen)
    tiles = patches.tiles(options.tiles, seed=options.seed).to(predictor.device)
    before, reference = tile_figures(model, tiles, predictor.num_classes)
    report.before = before
    rng = np.random.default_rng([options.seed, 1])
    batch_size = int(options.batch_size or predictor.config.batch_size)
    if bn_layers:
        buffers = {f"{i}.{k}": v for i, layer in enumerate(bn_layers)
                   for k, v in (("mean", layer.running_mean), ("var", layer.running_var))}
        saved = snapshot(buffers)
        reestimate_batch_norm(model, [patches.random_batch(max(batch_size, 4), rng).to(predictor.device)
                                      for _ in range(options.bn_batches)])
        figures, _ = tile_figures(model, tiles, predictor.num_classes, reference)
        reason = degeneracy(before, figures, options.limits)
        report.history.append({"step": 0, "stage": "bn", **figures, "degenerate": reason})
        if reason is not None:  # the source statistics stay (tent then adapts under them)
            restore(buffers, saved)
            report.outcome, report.rollback = "rolled back", {"step": 0, "reason": reason, "restored_step": 0}
    if method == "tent":
        task = EntropyTask(patches, tiles, reference, predictor.num_classes, steps=options.steps,
                           batch_size=batch_size, seed=options.seed)
        safeguard, history, steps = _tent(model, task, parameters, before, options, predictor.device)
        report.history += [{"stage": "tent", "step": h["iteration"], **{k: h[k] for k in h if k in (
            "train_loss", "lr", "entropy", "foreground_fraction", "mask_dice_vs_unadapted", "degenerate")}}
            for h in history]
        report.steps = steps
        report.adapted_parameters = sum(p.numel() for p in parameters.values())
        report.outcome = "adapted" if safeguard.rollback is None else "rolled back"
        report.rollback = safeguard.rollback or report.rollback
    report.after, _ = tile_figures(model, tiles, predictor.num_classes, reference)
    report.seconds = round(time.perf_counter() - started, 2)
    (logger.warning if report.outcome == "rolled back" else logger.info)("test-time adaptation %s", report.summary())
    return report
