"""The fine-tuning methods of ``medseg adapt --method``: which structure each adds to the network and which
parameters it trains; everything else is frozen (``requires_grad`` False).

Every method but ``full`` also trains the head (the last convolution(s), new for a new label set) and, when the
target's channel count differs from the base's, the first convolution; ``decoder`` trains everything outside the
encoder (the network's ``stem``/``encoder``/``vit``/... children, ``ENCODER_PARTS``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medseg.errors import MedsegError

# method -> the structure of medseg.nets.peft it adds (None: none)
METHODS: dict[str, str | None] = {
    "full": None, "decoder": None, "linear-probe": None, "bitfit": None, "affine-norm": None,
    "lora": "lora", "adapter": "adapter", "spatial-adapter": "spatial-adapter",
}
# top-level children that make up a medseg network's encoder (PlanUNet, UNet family, V-Net, TransUNet, UNETR, Swin)
ENCODER_PARTS = ("stem", "encoder", "pools", "stages", "vit", "in_conv", "in_proj", "in_act", "in_stage", "downs",
                 "enc", "bottleneck")
NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass
class ParameterCounts:
    trainable: int
    frozen: int

    @property
    def fraction(self) -> float:
        return self.trainable / max(self.trainable + self.frozen, 1)

    def to_dict(self) -> dict[str, float | int]:
        return {"trainable_params": self.trainable, "frozen_params": self.frozen,
                "trainable_fraction": round(self.fraction, 6)}


def check_method(method: str) -> str:
    if method not in METHODS:
        raise MedsegError(f"unknown adaptation method {method!r}", fix=f"use one of {', '.join(METHODS)}")
    return method


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, NORMS) or type(module).__name__.lower().endswith("norm")


def trainable_names(network: nn.Module, method: str, always: set[str]) -> set[str]:
    """The parameter names ``method`` trains in ``network`` (its structure already added); ``always``: the
    head's and a new stem's parameter names."""
    names = {name for name, _ in network.named_parameters()}
    if check_method(method) == "full":
        return names
    if method == "decoder":
        top = {name for name, _ in network.named_children()}
        if not top & set(ENCODER_PARTS):
            raise MedsegError(f"the network has no part named as an encoder ({', '.join(sorted(top))})",
                              fix=f"use another --method; decoder needs one of {', '.join(ENCODER_PARTS)}")
        chosen = {n for n in names if n.split(".", 1)[0] not in ENCODER_PARTS}
    elif method == "linear-probe":
        chosen = set()
    elif method == "bitfit":
        chosen = {n for n in names if n.endswith(".bias") and ".adapter." not in n}
    elif method == "affine-norm":
        chosen = {f"{prefix}.{p}" if prefix else p for prefix, module in network.named_modules() if _is_norm(module)
                  for p, _ in module.named_parameters(recurse=False)}
    elif method == "lora":
        chosen = {n for n in names if ".lora_" in n}
    else:  # adapter, spatial-adapter
        chosen = {n for n in names if ".adapter." in n}
    return chosen | {n for n in names if _original_name(n) in always}


def _original_name(name: str) -> str:
    """``a.parametrizations.weight.original`` -> ``a.weight`` (the base name of a LoRA-parametrised weight)."""
    return name.replace(".parametrizations.", ".").replace(".original", "")


def freeze(network: nn.Module, trainable: set[str]) -> ParameterCounts:
    """``requires_grad`` True for ``trainable`` names, False for the rest; the counts."""
    counts = ParameterCounts(0, 0)
    for name, parameter in network.named_parameters():
        parameter.requires_grad_(name in trainable)
        if name in trainable:
            counts.trainable += parameter.numel()
        else:
            counts.frozen += parameter.numel()
    return counts


def delta_state(network: nn.Module) -> dict:
    """What an adapted folder stores: every trainable parameter and the running statistics of normalisation
    layers (batch norm's change in train mode even where its affine parameters are frozen)."""
    state = {name: p.detach() for name, p in network.named_parameters() if p.requires_grad}
    for prefix, module in network.named_modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
            for name, buffer in module.named_buffers(recurse=False):
                if buffer is not None:
                    state[f"{prefix}.{name}" if prefix else name] = buffer.detach()
    return state
