"""Prediction: sliding window with Gaussian weighting, mirroring TTA, streamed for large volumes, back to the
input's geometry; ensembles, post-processing and the choice of the best configuration."""

from medseg.inference.ensemble import EnsemblePredictor
from medseg.inference.predictor import Predictor
from medseg.inference.sliding_window import gaussian_importance_map, sliding_window, sliding_window_slabs
from medseg.inference.tta import mirrored

__all__ = ["EnsemblePredictor", "Predictor", "gaussian_importance_map", "mirrored", "sliding_window",
           "sliding_window_slabs"]
