"""Planning: the dataset fingerprint and the plan fitted to a device and a time budget."""

from medseg.planning.fingerprint import compute_fingerprint, fingerprint_case, write_fingerprint
from medseg.planning.planner import Budget, plan_dataset

__all__ = ["compute_fingerprint", "fingerprint_case", "write_fingerprint", "Budget", "plan_dataset"]
