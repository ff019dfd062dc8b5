"""Active learning: which cases to label next, measured by the held-out Dice they buy (``medseg active``)."""

from medseg.active.loop import ActiveSettings, run_active_learning
from medseg.active.strategies import STRATEGIES

__all__ = ["ActiveSettings", "STRATEGIES", "run_active_learning"]
