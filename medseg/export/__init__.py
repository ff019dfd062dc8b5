"""Trained model folders in formats other runtimes read: ``export_model`` writes every fold's network as ONNX plus
``pipeline.json`` (``medseg.config.onnx_folder``), which ``medseg predict --engine onnxruntime`` predicts with."""

from medseg.export.model_export import ExportReport, export_model

__all__ = ["ExportReport", "export_model"]
