"""In-context segmentation networks (registered as ``incontext_unet`` and ``tyche_unet``): a small 2D U-Net whose
every level is a CrossBlock, so that the target's features and a support set of (image, mask) pairs interact at
every scale (UniverSeg, Butoi et al. 2023). The support size ``S`` is a free dimension: the support branch is
averaged over ``S`` at each block, so one network takes any ``S >= 1`` at inference.

The stochastic variant (Tyche, Rakic et al. 2024) runs ``K`` candidates of the target side by side: each
candidate gets its own Gaussian noise map as an extra input channel, and after every CrossBlock the candidates
interact (each candidate's features are concatenated with the mean over candidates and convolved), so that the
``K`` masks spread over the plausible answers instead of collapsing; it is trained with a best-candidate loss
(``medseg.incontext.training``).

Cost of one CrossConv: ``K * S`` convolutions (every target candidate paired with every support member).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from medseg.errors import MedsegError
from medseg.nets.blocks.conv import ConvNormAct
from medseg.nets.blocks.factory import (
    LayerSpec,
    act_layer,
    conv_layer,
    max_pool,
    norm_layer,
)


@dataclass
class InContextConfig:
    """Constructor arguments of ``InContextUNet`` (saved beside the weights as JSON)."""

    image_channels: int = 1
    features: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    stochastic: bool = False  # Tyche: K candidates from per-candidate noise, candidates interact
    grid: list[int] = field(default_factory=lambda: [128, 128])  # the model grid images are resized to
    # UniverSeg's blocks have no normalisation; with instance norm a small network learns to follow the support
    # several times faster (tests/incontext: ~100 steps against 300+ on the disc/square tasks)
    norm: LayerSpec = "instance"
    act: LayerSpec = "leakyrelu"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> InContextConfig:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class CrossConv(nn.Module):
    """One convolution over each (target, support) pair concatenated along channels, then norm and activation.

    ``x (B, Sx, Cx, H, W)``, ``y (B, Sy, Cy, H, W)`` -> ``(B, Sx, Sy, out, H, W)``. A convolution of a
    concatenation is the sum of a convolution of each part, so the convolutions run once per member
    (O(Sx + Sy)) and only the sum and the activation run per pair (O(Sx * Sy) elementwise): the same function as
    UniverSeg's pairwise convolution at a fraction of the cost.
    """

    def __init__(self, x_channels: int, y_channels: int, out_channels: int, *, act: LayerSpec = "leakyrelu",
                 norm: LayerSpec = "instance"):
        super().__init__()
        self.x_conv = conv_layer(2, x_channels, out_channels, 3, bias=True)
        self.y_conv = conv_layer(2, y_channels, out_channels, 3, bias=False)
        self.norm = norm_layer(norm, 2, out_channels)
        self.act = act_layer(act)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        zx = _per_member(self.x_conv, x)[:, :, None]  # (B, Sx, 1, C, H, W)
        zy = _per_member(self.y_conv, y)[:, None]  # (B, 1, Sy, C, H, W)
        z = zx + zy
        b, sx, sy = z.shape[:3]
        z = self.act(self.norm(z.reshape(b * sx * sy, *z.shape[3:])))
        return z.reshape(b, sx, sy, *z.shape[1:])


def _per_member(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D module to ``x (B, S, C, H, W)`` member by member -> ``(B, S, C', H', W')``."""
    b, s = x.shape[:2]
    out = module(x.reshape(b * s, *x.shape[2:]))
    return out.reshape(b, s, *out.shape[1:])


class CrossBlock(nn.Module):
    """UniverSeg's CrossBlock: CrossConv of target and support, then the target averages over the support and the
    support over the target candidates, each followed by its own conv; with ``mix_candidates`` (Tyche) the target
    candidates then interact through a conv over ``[candidate, mean over candidates]``.

    ``target (B, K, Ct, H, W)``, ``support (B, S, Cs, H, W)`` -> ``(B, K, out, H, W)``, ``(B, S, out, H, W)``.
    """

    def __init__(self, target_channels: int, support_channels: int, out_channels: int, *,
                 mix_candidates: bool = False, update_support: bool = True, act: LayerSpec = "leakyrelu",
                 norm: LayerSpec = "instance"):
        super().__init__()
        self.cross = CrossConv(target_channels, support_channels, out_channels, act=act, norm=norm)
        self.target_conv = ConvNormAct(2, out_channels, out_channels, 3, norm=norm, act=act)
        self.support_conv = (ConvNormAct(2, out_channels, out_channels, 3, norm=norm, act=act) if update_support
                             else None)
        self.mix = ConvNormAct(2, 2 * out_channels, out_channels, 3, norm=norm, act=act) if mix_candidates else None

    def forward(self, target: torch.Tensor, support: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.cross(target, support)  # (B, K, S, C, H, W)
        target = _per_member(self.target_conv, z.mean(2))
        # the last block's support features are never read: it skips their update (update_support=False)
        support = _per_member(self.support_conv, z.mean(1)) if self.support_conv is not None else support
        if self.mix is not None:
            mean = target.mean(1, keepdim=True).expand_as(target)
            target = _per_member(self.mix, torch.cat([target, mean], 2))
        return target, support


class InContextUNet(nn.Module):
    """``forward(target (B, Ci, H, W), support_images (B, S, Ci, H, W), support_masks (B, S, 1, H, W),
    candidates=1) -> logits (B, K, H, W)`` (``K = candidates``; 1 for the deterministic network).

    ``H`` and ``W`` must be divisible by ``2 ** (len(features) - 1)``; support masks are soft or binary in [0, 1].
    The stochastic network draws its noise from ``generator`` (or the global torch generator when None).
    """

    def __init__(self, config: InContextConfig | None = None):
        super().__init__()
        self.config = config = config or InContextConfig()
        features, act, norm = list(config.features), config.act, config.norm
        if len(features) < 2:
            raise MedsegError(f"an in-context U-Net needs at least 2 levels, got features={features}")
        noise = 1 if config.stochastic else 0
        target_in, support_in = config.image_channels + noise, config.image_channels + 1
        self.encoder = nn.ModuleList()
        for level, width in enumerate(features):
            t_in = target_in if level == 0 else features[level - 1]
            s_in = support_in if level == 0 else features[level - 1]
            self.encoder.append(CrossBlock(t_in, s_in, width, mix_candidates=config.stochastic, act=act, norm=norm))
        self.decoder = nn.ModuleList()
        for level in range(len(features) - 2, -1, -1):
            width_in = features[level + 1] + features[level]
            self.decoder.append(CrossBlock(width_in, width_in, features[level], mix_candidates=config.stochastic,
                                           update_support=level > 0, act=act, norm=norm))
        self.pool = max_pool(2, 2)
        self.head = conv_layer(2, features[0], 1, 1)

    @property
    def divisor(self) -> int:
        return 2 ** (len(self.config.features) - 1)

    def _check(self, target: torch.Tensor, images: torch.Tensor, masks: torch.Tensor, candidates: int) -> None:
        c = self.config.image_channels
        if target.ndim != 4 or target.shape[1] != c:
            raise MedsegError(f"target must be (B, {c}, H, W), got {tuple(target.shape)}")
        b, (h, w) = target.shape[0], target.shape[2:]
        if images.ndim != 5 or images.shape[0] != b or images.shape[2] != c or tuple(images.shape[3:]) != (h, w):
            raise MedsegError(f"support images must be (B={b}, S, {c}, {h}, {w}), got {tuple(images.shape)}")
        if tuple(masks.shape) != (*images.shape[:2], 1, h, w):
            raise MedsegError(f"support masks must be {(*images.shape[:2], 1, h, w)}, got {tuple(masks.shape)}")
        if images.shape[1] < 1:
            raise MedsegError("the support set is empty", fix="give at least one (image, mask) pair")
        if h % self.divisor or w % self.divisor:
            raise MedsegError(f"spatial size {(h, w)} is not divisible by {self.divisor}")
        if candidates < 1 or (candidates > 1 and not self.config.stochastic):
            raise MedsegError(f"{candidates} candidates from a deterministic in-context network",
                              fix="ask for 1 candidate, or use a stochastic model (tyche_unet)")

    def forward(self, target: torch.Tensor, support_images: torch.Tensor, support_masks: torch.Tensor,
                candidates: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        self._check(target, support_images, support_masks, candidates)
        b, (h, w) = target.shape[0], target.shape[2:]
        x = target[:, None].expand(b, candidates, *target.shape[1:])
        if self.config.stochastic:
            device = generator.device if generator is not None else target.device
            noise = torch.randn((b, candidates, 1, h, w), generator=generator, device=device).to(target)
            x = torch.cat([x, noise], 2)
        y = torch.cat([support_images, support_masks.to(support_images.dtype)], 2)
        skips = []
        for level, block in enumerate(self.encoder):
            if level > 0:
                x, y = _per_member(self.pool, x), _per_member(self.pool, y)
            x, y = block(x, y)
            skips.append((x, y))
        for index, block in enumerate(self.decoder):
            skip_x, skip_y = skips[len(skips) - 2 - index]
            x = torch.cat([_upsample(x, skip_x.shape[-2:]), skip_x], 2)
            y = torch.cat([_upsample(y, skip_y.shape[-2:]), skip_y], 2)
            x, y = block(x, y)
        return _per_member(self.head, x)[:, :, 0]


def _upsample(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear upsampling of ``(B, S, C, h, w)`` to ``(B, S, C, *size)``."""
    return _per_member(lambda t: F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False), x)
