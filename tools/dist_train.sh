#!/usr/bin/env bash
# Data-parallel fine-tuning: CONFIG on GPUS processes per node (one per GPU; without CUDA, CPU processes on
# the gloo backend), started by torchrun; the rest of the arguments go to tools/train.py.
#   tools/dist_train.sh CONFIG GPUS [--work-dir DIR] [--cfg-options ...]
# Several nodes: run it on each with NNODES, NODE_RANK (0 on the master), MASTER_ADDR (the master's
# address) and PORT set alike; defaults: 1 node, rank 0, 127.0.0.1, 29500.
set -euo pipefail
if [ "$#" -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [tools/train.py arguments...]" >&2
    exit 2
fi
HERE=$(cd "$(dirname "$0")" && pwd)
exec "$HERE/dist_launch.sh" "$2" "$HERE/train.py" "$1" "${@:3}"
