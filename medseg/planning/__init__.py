"""Planning: the dataset fingerprint (and, built on it, the plan)."""

from medseg.planning.fingerprint import compute_fingerprint, fingerprint_case, write_fingerprint

__all__ = ["compute_fingerprint", "fingerprint_case", "write_fingerprint"]
