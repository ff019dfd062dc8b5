"""Evaluation over folders of label files: per-case metrics, summaries with bootstrap CIs, box plots."""

from medseg.evaluation.evaluate import EvaluationResult, evaluate

__all__ = ["EvaluationResult", "evaluate"]
