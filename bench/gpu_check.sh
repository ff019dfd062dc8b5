#!/usr/bin/env bash
# The GPU checks, for whenever a GPU machine is lent (at most 8 minutes): the CUDA path's tests (plan for
# --device cuda, bfloat16 autocast training, prediction, interactive and in-context models, each against the CPU)
# and a short throughput figure. Run from a set-up checkout (the README's first command) with ../shared beside it:
#
#     bash bench/gpu_check.sh                  # cuda, figures in bench/results/gpu_check.json
#     bash bench/gpu_check.sh cpu 0.1 OUT.json # the same script on the CPU at a tenth of the sizes (its test)
#
# Exit code: that of the first failing part.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE="${1:-cuda}"
SCALE="${2:-1.0}"
OUTPUT="${3:-bench/results/gpu_check.json}"
python -c "
import sys
from medseg.devices import require_device
from medseg.errors import MedsegError
try:
    require_device('$DEVICE')
except MedsegError as error:
    sys.exit(f'gpu_check: {error}')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
if [ "${DEVICE%%:*}" = "cuda" ]; then
    timeout 330 python -m pytest -q -p no:cacheprovider tests/gpu
fi
timeout 120 python bench/gpu_throughput.py --device "$DEVICE" --seconds 8 --scale "$SCALE" --output "$OUTPUT"
