"""Dimension-generic building blocks: layer factory (specs -> layers), conv blocks, transformer and SSM blocks."""

from medseg.nets.blocks.conv import (AttentionGate, ConvNormAct, ResidualBlock, SegHead, StackedConvs, UpConv,
                                     center_crop, conv_block)
from medseg.nets.blocks.factory import (LayerSpec, act_layer, as_tuple, check_divisible, conv_layer, dropout_layer,
                                        max_pool, norm_layer, split_spec)

__all__ = ["AttentionGate", "ConvNormAct", "LayerSpec", "ResidualBlock", "SegHead", "StackedConvs", "UpConv",
           "act_layer", "as_tuple", "center_crop", "check_divisible", "conv_block", "conv_layer", "dropout_layer",
           "max_pool", "norm_layer", "split_spec"]
