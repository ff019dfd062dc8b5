"""The probabilistic U-Net (Kohl et al., NeurIPS 2018) on the plan-driven U-Net: a distribution of plausible
segmentations of one image, learnt from several raters' label maps.

A prior net maps the image to a diagonal Gaussian over a small latent space; a posterior net maps the image and
one rater's segmentation to another. A latent sample, broadcast over the image, joins the U-Net's finest decoder
features, and a few 1x1 convolutions turn both into logits. Training draws the latent from the posterior of a
random rater's map and adds their KL divergence, which trains the prior (``forward(x, segmentation)``);
prediction draws it from the prior (``latent_noise``: one standard-normal draw per sample) or takes the prior's
mean (the default, a deterministic prediction that the sliding window, TTA and export use as for any network).
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn

from medseg.nets.blocks import LayerSpec, StackedConvs, act_layer, as_tuple, conv_layer
from medseg.nets.plan_unet import _DEFAULT_ACT, _DEFAULT_NORM, PlanUNet, _jsonable


class LatentEncoder(nn.Module):
    """``(B, C, *S)`` -> mean and log standard deviation ``(B, latent_dim)`` each: conv stages at the given
    widths and strides, a global average, a 1x1 projection (initialised near the standard normal)."""

    def __init__(self, spatial_dims: int, in_channels: int, widths: Sequence[int], strides: Sequence[Any],
                 kernel_sizes: Sequence[Any], latent_dim: int, *, norm: LayerSpec, act: LayerSpec):
        super().__init__()
        stages, channels = [], in_channels
        for width, stride, kernel in zip(widths, strides, kernel_sizes):
            stages.append(StackedConvs(spatial_dims, channels, int(width), 2,
                                       kernel_size=as_tuple(kernel, spatial_dims),
                                       stride=as_tuple(stride, spatial_dims), norm=norm, act=act))
            channels = int(width)
        self.stages = nn.Sequential(*stages)
        self.project = conv_layer(spatial_dims, channels, 2 * latent_dim, 1)
        nn.init.normal_(self.project.weight, std=0.01)  # near the standard normal, gradients flowing
        nn.init.zeros_(self.project.bias)
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.stages(x).mean(dim=tuple(range(2, x.ndim)), keepdim=True)
        statistics = self.project(pooled).flatten(1)
        return statistics[:, :self.latent_dim], statistics[:, self.latent_dim:].clamp(-10.0, 10.0)


def gaussian_kl(mean_q: torch.Tensor, log_std_q: torch.Tensor, mean_p: torch.Tensor, log_std_p: torch.Tensor
                ) -> torch.Tensor:
    """KL(q || p) of diagonal Gaussians ``(B, L)``, summed over the latent axes: ``(B,)``."""
    variance_q, variance_p = torch.exp(2 * log_std_q), torch.exp(2 * log_std_p)
    return (log_std_p - log_std_q + (variance_q + (mean_q - mean_p) ** 2) / (2 * variance_p) - 0.5).sum(1)


class ProbabilisticUNet(nn.Module):
    """Input ``(B, in_channels, *S)`` (``S`` a multiple of the strides' product), logits ``(B, num_classes, *S)``.

    The U-Net takes ``PlanUNet``'s arguments (no deep supervision: the latent joins the finest level only).
    ``latent_dim``: the latent space's size (6 in the paper). ``latent_width``: the prior and posterior nets'
    widths as a fraction of the U-Net encoder's (the paper uses the same encoder; half keeps a CPU step cheap).
    ``combine_convs``: 1x1 convolutions after the latent joins the features (3 in the paper).

    ``forward(x)``: logits at the prior's mean, or at ``mean + std * latent_noise`` when ``latent_noise``
    ``(latent_dim,)`` is set (one draw shared by every window of an image, so its windows agree).
    ``forward(x, segmentation)`` with one-hot ``(B, num_classes, *S)``: logits at a posterior sample and the KL
    divergence ``(B,)`` of the posterior from the prior twice, with the gradient to one side each (KL balancing,
    Hafner et al. 2021): the first trains the prior to match the posterior, the second regularises the
    posterior, so a loss can weigh the two apart (training).
    """

    def __init__(self, *, spatial_dims: int, in_channels: int, num_classes: int,
                 features_per_stage: Sequence[int] = (32, 64, 128, 256, 320),
                 kernel_sizes: Sequence[int | Sequence[int]] = (3, 3, 3, 3, 3),
                 strides: Sequence[int | Sequence[int]] = (1, 2, 2, 2, 2), latent_dim: int = 6,
                 latent_width: float = 0.5, combine_convs: int = 3, norm: LayerSpec = _DEFAULT_NORM,
                 act: LayerSpec = _DEFAULT_ACT, deep_supervision: bool = False, **unet_options: Any):
        super().__init__()
        del deep_supervision  # a plan's U-Net arguments carry it; the latent joins the finest level only
        self._config = _jsonable(dict(
            spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes,
            features_per_stage=list(features_per_stage), kernel_sizes=list(kernel_sizes), strides=list(strides),
            latent_dim=latent_dim, latent_width=latent_width, combine_convs=combine_convs, norm=norm, act=act,
            **unet_options))
        self.unet = PlanUNet(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes,
                             features_per_stage=features_per_stage, kernel_sizes=kernel_sizes, strides=strides,
                             norm=norm, act=act, deep_supervision=False, **unet_options)
        self.unet.heads = nn.ModuleList()  # the latent combination below is this network's head
        widths = [max(4, int(round(f * latent_width))) for f in features_per_stage]
        common = dict(norm=norm, act=act)
        self.prior = LatentEncoder(spatial_dims, in_channels, widths, strides, kernel_sizes, latent_dim, **common)
        self.posterior = LatentEncoder(spatial_dims, in_channels + num_classes, widths, strides, kernel_sizes,
                                       latent_dim, **common)
        first = int(features_per_stage[0])
        layers: list[nn.Module] = []
        channels = first + latent_dim
        for _ in range(max(combine_convs - 1, 0)):
            layers += [conv_layer(spatial_dims, channels, first, 1), act_layer(act)]
            channels = first
        layers.append(conv_layer(spatial_dims, channels, num_classes, 1))
        self.combine = nn.Sequential(*layers)
        self.latent_dim = latent_dim
        self.latent_noise: torch.Tensor | None = None

    @property
    def config(self) -> dict[str, Any]:
        return copy.deepcopy(self._config)

    def divisor(self) -> tuple[int, ...]:
        return self.unet.divisor()

    def _logits(self, features: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        tiled = latent.reshape(*latent.shape, *([1] * (features.ndim - 2))).expand(-1, -1, *features.shape[2:])
        return self.combine(torch.cat([features, tiled.to(features.dtype)], 1))

    def forward(self, x: torch.Tensor, segmentation: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        features, _ = self.unet.decode(x)
        mean, log_std = self.prior(x)
        if segmentation is None:
            if self.latent_noise is None:
                return self._logits(features, mean)
            noise = self.latent_noise.to(mean.device, mean.dtype).reshape(1, -1)
            return self._logits(features, mean + torch.exp(log_std) * noise)
        post_mean, post_log_std = self.posterior(torch.cat([x, segmentation.to(x.dtype)], 1))
        latent = post_mean + torch.exp(post_log_std) * torch.randn_like(post_mean)
        to_prior = gaussian_kl(post_mean.detach(), post_log_std.detach(), mean, log_std)
        of_posterior = gaussian_kl(post_mean, post_log_std, mean.detach(), log_std.detach())
        return self._logits(features, latent), to_prior, of_posterior
