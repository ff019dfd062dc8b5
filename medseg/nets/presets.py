"""Every registered network: small preset functions over the family classes (variants are data, not subclasses).

A preset takes ``spatial_dims, in_channels, num_classes`` and family options as keywords; ``cfg`` overrides the
preset's values. ``tiny`` in the decorator is a small-width configuration for tests (32^2 and 16^3 inputs).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from medseg.nets.registry import build, register_model

_TINY_UNET = {"features": (4, 8, 16)}
_TINY_PLAN = {"features_per_stage": (4, 8, 16), "kernel_sizes": (3, 3, 3), "strides": (1, 2, 2)}


# ---------------------------------------------------- fitting a preset to a plan configuration (fit_plan)
def _plan_topology(patch: list[int], plan: dict[str, Any]) -> dict[str, Any]:
    """The planned stages: widths, kernels and strides as the planner chose them for the patch."""
    return {k: plan[k] for k in ("features_per_stage", "kernel_sizes", "strides") if k in plan}


def _plan_widths(patch: list[int], plan: dict[str, Any]) -> dict[str, Any]:
    """A U-Net-family preset with one level per planned stage, at the planned widths (so it halves the patch as
    often as the plan's network does)."""
    return {"features": list(plan["features_per_stage"])}


def _plan_resenc(patch: list[int], plan: dict[str, Any]) -> dict[str, Any]:
    stages = len(plan["features_per_stage"])
    return {**_plan_topology(patch, plan), "n_conv_per_stage": ([1, 3, 4, 6] + [6] * stages)[:stages]}


def _plan_umamba(patch: list[int], plan: dict[str, Any]) -> dict[str, Any]:
    stages = len(plan["features_per_stage"])
    return {**_plan_topology(patch, plan), "n_conv_per_stage": [1] + [2] * (stages - 1)}


def _image_size(patch: list[int], plan: dict[str, Any]) -> dict[str, Any]:
    """Transformers with learned position embeddings are built for one input size: the patch."""
    return {"img_size": list(patch)}


# ------------------------------------------------------------------------- U-Net family (unet.py)
@register_model(family="unet", tiny=_TINY_UNET, fit_plan=_plan_widths)
def unet(**cfg: Any) -> nn.Module:
    """U-Net (Ronneberger 2015), padded: 64..1024 features, batch norm, ReLU, transposed-conv up."""
    from medseg.nets.unet import UNet

    return build(UNet, {}, cfg)


@register_model(family="unet", tiny=_TINY_UNET)
def unet_valid(**cfg: Any) -> nn.Module:
    """U-Net as published: unpadded convs, no norm, dropout 0.5 at the bottleneck; output < input."""
    from medseg.nets.unet import UNet

    return build(UNet, {"padding": "valid", "norm": None, "bottleneck_dropout": 0.5}, cfg)


@register_model(family="unet", tiny=_TINY_UNET, fit_plan=_plan_widths)
def unet3d_cicek(**cfg: Any) -> nn.Module:
    """3D U-Net (Cicek 2016): 32|64 .. 256|512, up-conv keeps channels, batch norm (2D works too)."""
    from medseg.nets.unet import UNet

    return build(UNet, {"features": (64, 128, 256, 512), "encoder_mid_ratio": 0.5, "up_keeps_channels": True},
                        cfg)


@register_model(family="unet", tiny=_TINY_UNET, fit_plan=_plan_widths)
def resunet(**cfg: Any) -> nn.Module:
    """Residual U-Net: residual units, strided-conv downsampling, instance norm."""
    from medseg.nets.unet import UNet

    return build(UNet, {"features": (32, 64, 128, 256, 512), "block": "residual", "downsample": "strided",
                         "norm": "instance"}, cfg)


@register_model(family="unet", tiny=_TINY_UNET, deep_supervision=True, fit_plan=_plan_widths)
def attention_unet(**cfg: Any) -> nn.Module:
    """Attention U-Net (Oktay 2018): additive attention gates on the skips."""
    from medseg.nets.unet import UNet

    return build(UNet, {"features": (32, 64, 128, 256, 512), "skip_gate": "attention"}, cfg)


# --------------------------------------------------------------- plan-driven U-Net (plan_unet.py)
def _plan_defaults(spatial_dims: int) -> dict[str, Any]:
    top = 512 if spatial_dims == 2 else 320  # nnU-Net's feature cap
    return {"features_per_stage": (32, 64, 128, 256, top), "kernel_sizes": (3,) * 5, "strides": (1, 2, 2, 2, 2)}


@register_model(family="plan_unet", tiny=_TINY_PLAN, deep_supervision=True, fit_plan=_plan_topology)
def plan_unet(*, spatial_dims: int, **cfg: Any) -> nn.Module:
    """Plan-driven U-Net, plain conv encoder (nnU-Net PlainConvUNet); topology from the plan."""
    from medseg.nets.plan_unet import PlanUNet

    return build(PlanUNet, _plan_defaults(spatial_dims), {"spatial_dims": spatial_dims, **cfg})


@register_model(family="plan_unet", tiny={**_TINY_PLAN, "n_conv_per_stage": (1, 2, 2)}, deep_supervision=True,
                fit_plan=_plan_resenc)
def plan_resenc_unet(*, spatial_dims: int, **cfg: Any) -> nn.Module:
    """Plan-driven U-Net, residual encoder (nnU-Net ResEnc: 1, 3, 4, 6, 6 blocks), one conv per decoder stage."""
    from medseg.nets.plan_unet import PlanUNet

    defaults = {**_plan_defaults(spatial_dims), "encoder": "residual", "n_conv_per_stage": (1, 3, 4, 6, 6),
                "n_conv_per_stage_decoder": 1}
    return build(PlanUNet, defaults, {"spatial_dims": spatial_dims, **cfg})


# ----------------------------------------------------------------------------- single families
@register_model(family="prob_unet", tiny={**_TINY_PLAN, "latent_dim": 3}, fit_plan=_plan_topology)
def prob_unet(*, spatial_dims: int, **cfg: Any) -> nn.Module:
    """Probabilistic U-Net (Kohl 2018) on the plan U-Net: prior/posterior latent nets, N plausible masks."""
    from medseg.nets.prob_unet import ProbabilisticUNet

    return build(ProbabilisticUNet, _plan_defaults(spatial_dims), {"spatial_dims": spatial_dims, **cfg})


@register_model(family="vnet", tiny={"features": (4, 8, 16), "encoder_convs": (1, 2, 2), "decoder_convs": (2, 1),
                                     "kernel_size": 3})
def vnet(**cfg: Any) -> nn.Module:
    """V-Net (Milletari 2016): residual 5^d stages, strided-conv down, PReLU."""
    from medseg.nets.vnet import VNet

    return build(VNet, {}, cfg)


@register_model(family="unetpp", tiny={"features": (4, 8, 16)}, deep_supervision=True, fit_plan=_plan_widths)
def unetpp(**cfg: Any) -> nn.Module:
    """UNet++ (Zhou 2018): nested dense skips, deep supervision, prunable (``model.prune_depth``)."""
    from medseg.nets.unetpp import UNetPlusPlus

    return build(UNetPlusPlus, {}, cfg)


@register_model(family="unetr", exportable=False, fit_plan=_image_size, tiny={"img_size": 32, "patch_size": 8, "feature_size": 4,
                                                        "hidden": 32, "layers": 3, "heads": 2})
def unetr(*, spatial_dims: int, **cfg: Any) -> nn.Module:
    """UNETR (Hatamizadeh 2022): ViT-B/16 encoder, conv decoder from hidden states 3, 6, 9, 12."""
    from medseg.nets.unetr import UNETR

    return build(UNETR, {"img_size": 128 if spatial_dims == 2 else 96}, {"spatial_dims": spatial_dims, **cfg})


@register_model(family="swin", exportable=False, tiny={"feature_size": 8, "depths": (2, 2), "heads": (2, 4),
                                                       "window": 4})
def swin_unetr(**cfg: Any) -> nn.Module:
    """Swin-UNETR (Hatamizadeh 2022): Swin encoder (window 7, 2-2-2-2), residual conv decoder."""
    from medseg.nets.swin import SwinUNETR

    return build(SwinUNETR, {}, cfg)


@register_model(family="swin", exportable=False, tiny={"embed_dim": 8, "patch_size": 2, "depths": (2, 2, 2),
                                                       "heads": (2, 2, 4), "window": 4})
def swin_unet(**cfg: Any) -> nn.Module:
    """Swin-Unet (Cao 2021): pure Swin encoder-decoder with patch expanding (patch 4, C = 96)."""
    from medseg.nets.swin import SwinUnet

    return build(SwinUnet, {}, cfg)


@register_model(family="transunet", exportable=False, fit_plan=_image_size, tiny={
    "cnn_features": (4, 8, 16, 32), "cnn_blocks": (1, 1, 1), "hidden": 32, "layers": 2, "heads": 2,
    "decoder_features": (16, 8, 8, 4), "img_size": 32})
def transunet(*, spatial_dims: int, **cfg: Any) -> nn.Module:
    """TransUNet (Chen 2021): ResNet + ViT-B hybrid encoder, cascaded-upsampling decoder."""
    from medseg.nets.transunet import TransUNet

    defaults = {"img_size": 224 if spatial_dims == 2 else 96}
    return build(TransUNet, defaults, {"spatial_dims": spatial_dims, **cfg})


@register_model(family="umamba", exportable=False, deep_supervision=True, fit_plan=_plan_umamba, tiny={
    **_TINY_PLAN, "n_conv_per_stage": 1, "head_dim": 4, "d_state": 4, "chunk": 16})
def umamba(*, spatial_dims: int, **cfg: Any) -> nn.Module:
    """U-Mamba (Ma 2024, Enc variant): residual encoder + state-space layers, pure PyTorch (CPU)."""
    from medseg.nets.umamba import UMamba

    defaults = {**_plan_defaults(spatial_dims), "n_conv_per_stage": (1, 2, 2, 2, 2)}
    return build(UMamba, defaults, {"spatial_dims": spatial_dims, **cfg})


@register_model(family="timm", dims=(2,), requires="timm", tiny={"encoder": "resnet18",
                                                                  "decoder_features": (16, 8, 8, 8, 4)})
def timm_unet(**cfg: Any) -> nn.Module:
    """U-Net decoder on a timm 2D encoder (default resnet34), random init unless ``weights=FILE``."""
    from medseg.nets.timm_unet import TimmUNet

    return build(TimmUNet, {}, cfg)


# --------------------------------------------------------------- promptable U-Net (promptable_unet.py)
@register_model(family="promptable", dims=(2,), prompted=True, exportable=False, tiny={"features": [4, 8], "grid": [32, 32]})
def promptable_unet(*, spatial_dims: int, in_channels: int, num_classes: int, **cfg: Any) -> nn.Module:
    """Promptable 2D U-Net: ``forward(image, prompts)``; the image embedding runs once, prompts a light decoder."""
    from medseg.errors import MedsegError
    from medseg.nets.promptable_unet import PromptableConfig, PromptableUNet

    if num_classes != 1:
        raise MedsegError(f"promptable_unet predicts one object (num_classes=1), not {num_classes}")
    known = set(PromptableConfig.__dataclass_fields__) - {"image_channels"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise MedsegError(f"PromptableUNet has no option {', '.join(unknown)}", fix=f"options are: {', '.join(sorted(known))}")
    return PromptableUNet(PromptableConfig(image_channels=in_channels, **cfg))


# --------------------------------------------------------------- in-context U-Nets (incontext_unet.py)
def _incontext(in_channels: int, num_classes: int, cfg: dict[str, Any], stochastic: bool) -> nn.Module:
    from medseg.errors import MedsegError
    from medseg.nets.incontext_unet import InContextConfig, InContextUNet

    if num_classes != 1:
        raise MedsegError(f"an in-context network predicts one object (num_classes=1), not {num_classes}")
    known = set(InContextConfig.__dataclass_fields__) - {"image_channels", "stochastic"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise MedsegError(f"InContextUNet has no option {', '.join(unknown)}", fix=f"options are: {', '.join(sorted(known))}")
    return InContextUNet(InContextConfig(image_channels=in_channels, stochastic=stochastic, **cfg))


@register_model(family="incontext", dims=(2,), prompted=True, exportable=False, tiny={"features": [4, 8], "grid": [32, 32]})
def incontext_unet(*, spatial_dims: int, in_channels: int, num_classes: int, **cfg: Any) -> nn.Module:
    """UniverSeg-style in-context 2D U-Net: ``forward(target, support_images, support_masks)``, CrossBlocks at every level."""
    return _incontext(in_channels, num_classes, cfg, stochastic=False)


@register_model(family="incontext", dims=(2,), prompted=True, exportable=False, tiny={"features": [4, 8], "grid": [32, 32]})
def tyche_unet(*, spatial_dims: int, in_channels: int, num_classes: int, **cfg: Any) -> nn.Module:
    """Tyche-style stochastic in-context 2D U-Net: K candidates from per-candidate noise, candidates interact."""
    return _incontext(in_channels, num_classes, cfg, stochastic=True)
