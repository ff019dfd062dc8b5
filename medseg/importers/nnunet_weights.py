"""nnU-Net v2 network weights (``dynamic_network_architectures`` PlainConvUNet / ResidualEncoderUNet state-dict
keys) -> the state dict of medseg's ``PlanUNet`` built with the imported arguments.

The two networks are layer-for-layer the same (conv -> dropout -> norm -> nonlin; transposed-conv upsampling;
1x1 segmentation heads; ResEnc's stem, BasicBlockD blocks and average-pool skips with ``residual_skip="pool"``)
with two differences the mapping absorbs:

* a decoder stage concatenates ``[upsampled, skip]`` in nnU-Net and ``[skip, upsampled]`` in medseg, so the input
  channels of each decoder stage's first conv are swapped in halves;
* nnU-Net keeps every deep-supervision head and aliases (``all_modules``, ``decoder.encoder``); only the
  full-resolution head and the unaliased keys are kept.

``transpose_forward`` (nnU-Net's network works on axis-transposed images) is undone by permuting the spatial axes
of every kernel, so medseg's network takes the image in its own axis order.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import torch

from medseg.errors import MedsegError

_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile
_ALIASES = (re.compile(r"\.all_modules\."), re.compile(r"^decoder\.encoder\."))
Rule = tuple[re.Pattern, Callable[[re.Match], str | None]]


def _skip_index(match: re.Match) -> str:
    index = int(match["index"]) + (0 if match["layer"] == "conv" else 1)  # nnU-Net: [pool,] ConvNorm; medseg flat
    return f"encoder.{match['stage']}.{match['block']}.skip.{index}.{match['param']}"


def _rules(encoder: str, last_head: int) -> list[Rule]:
    """(nnU-Net key pattern, medseg key) rules; a rule returning None drops the key (unused heads)."""
    layer = r"(?P<layer>conv|norm)\.(?P<param>\w+)"
    rules: list[Rule] = [
        (re.compile(rf"^decoder\.stages\.(?P<stage>\d+)\.convs\.(?P<conv>\d+)\.{layer}$"),
         lambda m: f"decoder.{m['stage']}.{m['conv']}.{m['layer']}.{m['param']}"),
        (re.compile(r"^decoder\.transpconvs\.(?P<stage>\d+)\.(?P<param>\w+)$"),
         lambda m: f"ups.{m['stage']}.conv.{m['param']}"),
        (re.compile(r"^decoder\.seg_layers\.(?P<stage>\d+)\.(?P<param>\w+)$"),
         lambda m: f"heads.0.conv.{m['param']}" if int(m["stage"]) == last_head else None),
    ]
    if encoder == "plain":
        rules.append((re.compile(rf"^encoder\.stages\.(?P<stage>\d+)\.0\.convs\.(?P<conv>\d+)\.{layer}$"),
                      lambda m: f"encoder.{m['stage']}.{m['conv']}.{m['layer']}.{m['param']}"))
    else:
        rules += [
            (re.compile(rf"^encoder\.stem\.convs\.0\.{layer}$"), lambda m: f"stem.{m['layer']}.{m['param']}"),
            (re.compile(rf"^encoder\.stages\.(?P<stage>\d+)\.blocks\.(?P<block>\d+)\.conv(?P<conv>[12])\.{layer}$"),
             lambda m: f"encoder.{m['stage']}.{m['block']}.body.{int(m['conv']) - 1}.{m['layer']}.{m['param']}"),
            (re.compile(rf"^encoder\.stages\.(?P<stage>\d+)\.blocks\.(?P<block>\d+)\.skip\.(?P<index>\d)\.{layer}$"),
             _skip_index),
        ]
    return rules


def _strip_prefix(key: str) -> str:
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def map_state_dict(weights: dict[str, Any], arguments: dict[str, Any], transpose: list[int],
                   source: Path) -> dict[str, torch.Tensor]:
    """nnU-Net ``network_weights`` -> medseg ``PlanUNet`` state dict (``arguments``: its constructor arguments,
    in image axis order; ``transpose``: nnU-Net's ``transpose_forward`` of the network's spatial axes).

    A key no rule knows (a custom trainer's extra layers) is a MedsegError naming ``source``, the checkpoint."""
    stages = len(arguments["features_per_stage"])
    rules = _rules(arguments["encoder"], last_head=stages - 2)
    backward = sorted(range(len(transpose)), key=lambda i: transpose[i])
    spatial_dims = int(arguments["spatial_dims"])
    mapped: dict[str, torch.Tensor] = {}
    unknown = []
    for raw_key, value in weights.items():
        key = _strip_prefix(raw_key)
        if any(alias.search(key) for alias in _ALIASES):
            continue
        target = None
        for pattern, rename in rules:
            match = pattern.match(key)
            if match:
                target = rename(match)
                break
        else:
            unknown.append(raw_key)
            continue
        if target is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise MedsegError(f"network weight {raw_key!r} is a {type(value).__name__}, not a tensor", path=source,
                              fix="pass an nnU-Net v2 checkpoint")
        mapped[target] = _to_medseg_layout(target, value, spatial_dims, backward)
    if unknown:
        shown = ", ".join(unknown[:4]) + (f" and {len(unknown) - 4} more" if len(unknown) > 4 else "")
        raise MedsegError(f"the checkpoint's network has layers that nnU-Net's "
                          f"{'ResidualEncoderUNet' if arguments['encoder'] == 'residual' else 'PlainConvUNet'} "
                          f"does not ({shown}): a custom trainer's network?", path=source,
                          fix="import a model of nnU-Net's default network classes")
    return mapped


_FIRST_DECODER_CONV = re.compile(r"^decoder\.\d+\.0\.conv\.weight$")


def _to_medseg_layout(key: str, value: torch.Tensor, spatial_dims: int, backward: list[int]) -> torch.Tensor:
    value = value.detach().to("cpu").clone()
    if _FIRST_DECODER_CONV.match(key):  # input channels [upsampled, skip] -> [skip, upsampled]
        half = value.shape[1] // 2
        value = torch.cat([value[:, half:], value[:, :half]], 1)
    if value.ndim == spatial_dims + 2 and backward != sorted(backward):  # a kernel: back to image axis order
        value = value.permute(0, 1, *[2 + b for b in backward]).contiguous()
    return value
