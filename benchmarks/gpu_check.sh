#!/usr/bin/env bash
# Every densenas path on one GPU next to the CPU (issue "scale out", item 4): a short segmentation search,
# a detection search, IR-NAS supernet epochs and a 200-iteration fine-tune, per-candidate (per-epoch,
# per-iteration) time on the GPU next to the CPU and the largest reward difference.
# Under 8 minutes on one GPU after tools/install.sh (mmcv built with its CUDA ops).
#
#   bash benchmarks/gpu_check.sh [--out work_dirs/gpu_check] [--parts seg,det,irnas,finetune]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "error: torch sees no CUDA device; this check needs a GPU (benchmarks/gpu_check.py --devices cpu,cpu is a dry run)" >&2
  exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
exec $PY -u benchmarks/gpu_check.py "$@"
