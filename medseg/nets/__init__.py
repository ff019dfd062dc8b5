"""The network zoo: ``create(name, spatial_dims, in_channels, num_classes, **cfg)``, ``list_models()``.

Networks take ``(B, in_channels, *spatial)`` and return logits ``(B, num_classes, *spatial)``; networks built with
``deep_supervision=True`` return a list of logits, fine -> coarse (the first is full resolution).
"""

from medseg.nets import presets as _presets  # noqa: F401  (registers every network)
from medseg.nets.registry import ModelInfo, create, list_models, model_info, register_model

__all__ = ["ModelInfo", "create", "list_models", "model_info", "register_model"]
