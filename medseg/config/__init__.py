"""Typed, versioned records that stages exchange as JSON files (dataset spec, fingerprint, ...)."""

from medseg.config.dataset_spec import DatasetSpec
from medseg.config.fingerprint import CaseFingerprint, Fingerprint, IntensityStats
from medseg.config.json_files import read_json, write_json_atomic
from medseg.config.plan import Configuration, Decision, Normalization, Plan

__all__ = ["DatasetSpec", "Fingerprint", "CaseFingerprint", "IntensityStats", "read_json", "write_json_atomic",
           "Plan", "Configuration", "Normalization", "Decision"]
