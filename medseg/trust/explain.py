"""Attribution maps for segmentation networks, with Captum's methods, and the weight-randomisation sanity check.

A segmentation network gives a logit map, not a score; ``RegionScore`` makes it one: the sum of class ``K``'s
logits over a region (a mask, or where the network predicts ``K``), as in Seg-Grad-CAM (Vinogradova et al. 2020).
Captum computes Grad-CAM (``LayerGradCam``), occlusion (``Occlusion``), SmoothGrad (``NoiseTunnel`` over
``Saliency``) and integrated gradients (``IntegratedGradients``); Grad-CAM++ (Chattopadhay et al. 2018), which
Captum lacks, is written here on Captum's layer hooks (``compute_layer_gradients_and_eval``).

The sanity check of Adebayo et al. 2018: an attribution that explains the model must change when the model's
weights are replaced by random ones; ``randomisation_check`` gives the Spearman rank correlation between the
absolute attributions of the trained and the randomised network (low = the method passes).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from medseg.errors import MedsegError

METHODS = ("gradcam", "gradcam++", "occlusion", "smoothgrad", "integrated-gradients")
SANITY_THRESHOLD = 0.5  # |Spearman| of trained vs randomised attributions below this: the method passes


class RegionScore(nn.Module):
    """``(B, C, *S)`` -> ``(B,)``: the sum of class ``class_index``'s logits over ``region`` ``(*S)`` (bool; None:
    every voxel). A network returning deep-supervision lists contributes its full-resolution output."""

    def __init__(self, network: nn.Module, class_index: int, region: torch.Tensor | None = None):
        super().__init__()
        self.network, self.class_index = network, int(class_index)
        self.region = None if region is None else region.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.network(x)
        if isinstance(logits, (list, tuple)):
            logits = logits[0]
        selected = logits[:, self.class_index]
        if self.region is not None:
            selected = selected * self.region
        return selected.flatten(1).sum(1)


def default_layer(network: nn.Module) -> nn.Module:
    """The layer Grad-CAM looks at: the deepest encoder stage (the features the whole decoder reads)."""
    encoder = getattr(network, "encoder", None)
    if isinstance(encoder, nn.ModuleList) and len(encoder):
        return encoder[-1]
    raise MedsegError(f"no encoder stages in {type(network).__name__} for Grad-CAM",
                      fix="pass layer= (a module of the network), or use occlusion / smoothgrad / "
                          "integrated-gradients")


def _upsampled(maps: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``(B, 1, *s)`` layer maps -> ``(B, 1, *shape)`` (linear interpolation, as Captum's ``interpolate``)."""
    from captum.attr import LayerAttribution

    mode = "bilinear" if len(shape) == 2 else "trilinear"
    return LayerAttribution.interpolate(maps, tuple(int(s) for s in shape), interpolate_mode=mode)


def gradcam_plus_plus(score: RegionScore, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ map ``(B, 1, *s)`` on ``layer``'s grid: channel weights ``sum relu(g) * a`` with
    ``a = g^2 / (2 g^2 + sum(A) g^3)`` (the closed form for an exponentiated score), map ``relu(sum_c w_c A_c)``."""
    from captum._utils.gradient import compute_layer_gradients_and_eval

    gradients, activations = compute_layer_gradients_and_eval(score, layer, x)
    g, a = gradients[0], activations[0]
    dims = tuple(range(2, g.ndim))
    g2, g3 = g ** 2, g ** 3
    denominator = 2 * g2 + a.sum(dim=dims, keepdim=True) * g3
    alpha = torch.where(g != 0, g2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator)),
                        torch.zeros_like(g))
    weights = (alpha * torch.relu(g)).sum(dim=dims, keepdim=True)
    return torch.relu((weights * a).sum(dim=1, keepdim=True))


def attribute(network: nn.Module, x: torch.Tensor, class_index: int, *, method: str,
              region: torch.Tensor | None = None, layer: nn.Module | None = None, occlusion_window: int | None = None,
              samples: int = 16, seed: int = 0) -> torch.Tensor:
    """Attribution ``(*S)`` float32 of ``x`` ``(1, C, *S)`` for class ``class_index``'s logits summed over
    ``region`` ``(*S)`` (None: every voxel), by ``method`` (one of ``METHODS``).

    Grad-CAM / Grad-CAM++ maps are taken at ``layer`` (default: ``default_layer``) and upsampled to ``S``;
    occlusion slides a zero patch of ``occlusion_window`` voxels per axis (default: 1/8 of the smallest side, at
    least 2) with half-window strides and reports the drop of the score; SmoothGrad averages the absolute input
    gradient over ``samples`` copies with Gaussian noise of 15 % of the input's range (seeded by ``seed``);
    integrated gradients go from a zero input in ``samples`` steps. Channels are summed (absolute values for the
    gradient methods).
    """
    from captum.attr import IntegratedGradients, LayerGradCam, NoiseTunnel, Occlusion, Saliency

    if method not in METHODS:
        raise MedsegError(f"unknown attribution method {method!r}", fix=f"use one of {', '.join(METHODS)}")
    network = network.eval()
    score = RegionScore(network, class_index, region)
    x = x.detach().float().requires_grad_(method not in ("occlusion",))
    spatial = x.shape[2:]
    if method in ("gradcam", "gradcam++"):
        layer = layer or default_layer(network)
        if method == "gradcam":
            maps = LayerGradCam(score, layer).attribute(x, relu_attributions=True)
        else:
            maps = gradcam_plus_plus(score, layer, x)
        result = _upsampled(maps.detach(), spatial)[0, 0]
    elif method == "occlusion":
        window = occlusion_window or max(2, min(int(s) for s in spatial) // 8)
        shape = (x.shape[1], *[min(window, int(s)) for s in spatial])
        strides = (x.shape[1], *[max(1, min(window, int(s)) // 2) for s in spatial])
        with torch.no_grad():
            result = Occlusion(score).attribute(x, sliding_window_shapes=shape, strides=strides, baselines=0.0,
                                                perturbations_per_eval=8)[0].sum(0)
    elif method == "smoothgrad":
        spread = float(x.detach().max() - x.detach().min()) or 1.0
        with torch.random.fork_rng(devices=[]):  # NoiseTunnel draws from torch's global generator: seed a fork
            torch.manual_seed(seed)
            result = NoiseTunnel(Saliency(score)).attribute(x, nt_type="smoothgrad", nt_samples=samples,
                                                            nt_samples_batch_size=4, stdevs=0.15 * spread,
                                                            abs=True)[0].sum(0)
    else:
        result = IntegratedGradients(score).attribute(x, baselines=torch.zeros_like(x), n_steps=samples,
                                                      internal_batch_size=4)[0].abs().sum(0)
    return result.detach().float()


def randomised_copy(network: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``network`` whose weight tensors (every parameter of two or more dimensions: convolutions,
    linear layers) are redrawn from He-normal N(0, 2 / fan_in) with a seeded generator; biases and norm
    parameters are kept (the 'full randomisation' of Adebayo et al. re-initialises all the learned filters)."""
    generator = torch.Generator().manual_seed(int(seed))
    copied = copy.deepcopy(network)
    with torch.no_grad():
        for parameter in copied.parameters():
            if parameter.ndim >= 2:
                fan_in = parameter[0].numel()
                drawn = torch.randn(parameter.shape, generator=generator) * (2.0 / fan_in) ** 0.5
                parameter.copy_(drawn.to(parameter.dtype))
    return copied.eval()


@dataclass
class SanityResult:
    """Adebayo's model-randomisation test of one method on one input."""

    method: str
    spearman: float  # rank correlation of the absolute attributions, trained vs randomised network
    threshold: float
    passed: bool


def randomisation_check(network: nn.Module, x: torch.Tensor, class_index: int, *, method: str,
                        region: torch.Tensor | None = None, threshold: float = SANITY_THRESHOLD, seed: int = 0,
                        **options) -> SanityResult:
    """Attribute ``x`` ``(1, C, *S)`` with the trained and with a randomised copy of ``network`` (same ``layer``
    position for Grad-CAM), and compare the absolute maps by Spearman rank correlation (scipy): the method passes
    when ``|rho| < threshold``."""
    from scipy.stats import spearmanr

    randomised = randomised_copy(network, seed)
    layer = options.pop("layer", None)
    trained_map = attribute(network, x, class_index, method=method, region=region, layer=layer, **options)
    random_layer = None
    if layer is not None:  # the same module in the copy
        name = next(n for n, m in network.named_modules() if m is layer)
        random_layer = dict(randomised.named_modules())[name]
    random_map = attribute(randomised, x, class_index, method=method, region=region, layer=random_layer, **options)
    a, b = trained_map.abs().flatten().numpy(), random_map.abs().flatten().numpy()
    rho = 0.0 if a.std() == 0 or b.std() == 0 else float(spearmanr(a, b).statistic)
    return SanityResult(method, rho, float(threshold), bool(abs(rho) < threshold))


def heat_overlay(image: np.ndarray, heat: np.ndarray, region: np.ndarray | None = None, *, alpha: float = 0.5,
                 top: float | None = None) -> np.ndarray:
    """RGB uint8 ``(Y, X, 3)``: grey ``image`` ``(Y, X)`` blended with ``heat`` ``(Y, X)`` (its absolute value
    scaled to ``top``, default its 99.5th percentile; matplotlib's 'inferno' colours) and ``region``'s outline in
    cyan."""
    from matplotlib import colormaps
    from scipy import ndimage

    low, high = np.percentile(image, [0.5, 99.5])
    grey = np.clip((image - low) / max(high - low, 1e-8), 0, 1)
    magnitude = np.abs(heat)
    top = np.percentile(magnitude, 99.5) if top is None else top
    weight = np.clip(magnitude / top, 0, 1) if top > 0 else np.zeros_like(magnitude)
    colours = colormaps["inferno"](weight)[..., :3]
    rgb = (1 - alpha * weight[..., None]) * grey[..., None] + alpha * weight[..., None] * colours
    if region is not None and region.any():
        outline = region & ~ndimage.binary_erosion(region)
        rgb[outline] = (0.2, 1.0, 1.0)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
