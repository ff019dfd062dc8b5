"""Promptable segmentation: prompts (clicks, boxes, scribbles) and their encoding, the promptable network, the
interaction simulator, training, evaluation against classical baselines, and the session behind the web page."""

from medseg.interactive.prompts import PROMPT_CHANNELS, Box, Click, PromptSet, Scribble, encode_prompts
from medseg.interactive.segmenter import Segmenter

__all__ = ["PROMPT_CHANNELS", "Box", "Click", "PromptSet", "Scribble", "Segmenter", "encode_prompts"]
