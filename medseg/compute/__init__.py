"""How a training step uses the machine: its precision (float32 or bfloat16 autocast), the step itself (shared by
the trainer and the planner's timing, so a plan is timed on the step training runs), and the torch thread count
chosen by timing steps at each candidate."""

from medseg.compute.precision import PRECISIONS, autocast, native_bfloat16, resolve_precision
from medseg.compute.step import NonFiniteLoss, build_optimizer, training_step
from medseg.compute.threads import ThreadChooser, thread_candidates

__all__ = ["PRECISIONS", "autocast", "native_bfloat16", "resolve_precision", "NonFiniteLoss", "build_optimizer",
           "training_step", "ThreadChooser", "thread_candidates"]
